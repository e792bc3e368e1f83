"""Admission by event-loop turn: a real loop, counted in turns, never in time."""

from __future__ import annotations

import asyncio

import pytest

from squall.turns import Turns


async def _turn_counter(turns: list[int], stop: asyncio.Event) -> None:
    """Counts loop turns: one call_soon callback per turn, each scheduling the next."""
    loop = asyncio.get_running_loop()

    def tick() -> None:
        turns[0] += 1
        if not stop.is_set():
            loop.call_soon(tick)

    loop.call_soon(tick)


def test_at_most_per_turn_jobs_proceed_in_one_turn_in_the_order_they_came() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        admission = Turns(per_turn=10)
        turn = [0]
        stop = asyncio.Event()
        await _turn_counter(turn, stop)
        order: list[int] = []
        turn_of: list[int] = []

        async def job(i: int) -> None:
            await admission.wait_turn()
            order.append(i)
            turn_of.append(turn[0])

        await asyncio.gather(*(job(i) for i in range(95)))
        stop.set()
        return order, turn_of

    order, turn_of = asyncio.run(scenario())
    assert order == list(range(95))
    per_turn: dict[int, int] = {}
    for t in turn_of:
        per_turn[t] = per_turn.get(t, 0) + 1
    assert max(per_turn.values()) <= 10
    assert len(per_turn) >= 10  # 95 jobs took ten turns at least


def test_a_job_alone_proceeds_at_once_and_a_cancelled_one_gives_its_place() -> None:
    async def scenario() -> list[str]:
        admission = Turns(per_turn=1)
        seen: list[str] = []

        async def job(name: str) -> None:
            await admission.wait_turn()
            seen.append(name)

        first = asyncio.ensure_future(job("first"))
        cancelled = asyncio.ensure_future(job("cancelled"))
        kept = asyncio.ensure_future(job("kept"))
        await asyncio.sleep(0)  # all three have asked: the first went through, two wait
        assert seen == ["first"] and admission.waiting == 2
        cancelled.cancel()
        await asyncio.gather(first, kept)
        return seen

    assert asyncio.run(scenario()) == ["first", "kept"]


def test_per_turn_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_turn"):
        Turns(per_turn=0)
