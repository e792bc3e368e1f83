"""The queue against the real Redis: its bounds and its hostile input.

A :class:`QueueWorker` and a :class:`QueueClient` run in this process, with a
real pipeline (validate, store) on a real SQLite file; Redis is the machine's,
under a key prefix of each test's own (``redis_prefix``). The tests add hostile
entries straight to the streams, as anyone with access to Redis could.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from squall.errors import Rejected, Unavailable
from squall.handshake import link_key
from squall.processor.pipeline import Pipeline
from squall.processor.stages import BatchWriter, Validate
from squall.queue import GROUP, REPLY_ROLE, SEND_ROLE, QueueKeys, encode_entry
from squall.queue.client import QueueClient
from squall.queue.worker import QueueWorker
from squall.store.sqlite import SQLiteStore
from support import REDIS_URL, TIMEOUT, run_async

pytestmark = pytest.mark.redis

KEY = link_key("test secret")
ALIEN = link_key("another instance's secret")


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll Redis (which has nothing to wait on) until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


@asynccontextmanager
async def worker(tmp_path: Path, prefix: str, **options: Any) -> AsyncIterator[QueueWorker]:
    store = SQLiteStore(str(tmp_path / "squall.db"))
    await store.open()
    writer = BatchWriter(store)
    queue = QueueWorker(REDIS_URL, key=KEY, prefix=prefix, **options)
    queue.pipeline = Pipeline([("validate", Validate()), ("store", writer.save)])
    await queue.open()
    stop = asyncio.Event()
    running = asyncio.ensure_future(queue.run(stop, shutdown_timeout=TIMEOUT))
    try:
        yield queue
    finally:
        stop.set()
        await running
        await store.close()


@asynccontextmanager
async def web_node(prefix: str, **options: Any) -> AsyncIterator[tuple[QueueClient, list[dict[str, Any]]]]:
    published: list[dict[str, Any]] = []
    client = QueueClient(REDIS_URL, key=KEY, prefix=prefix, on_processed=published.extend, **options)
    client.start()
    await asyncio.wait_for(client.connected.wait(), TIMEOUT)
    try:
        yield client, published
    finally:
        await client.close(timeout=TIMEOUT)


def send(client: QueueClient, n: int, body: str = "hello") -> Awaitable[dict[str, Any]]:
    return client.process(room="lobby", nick="alice", id=str(n), body=body, ts=1)


def test_a_send_is_stored_and_answered_and_its_entry_deleted(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        async with worker(tmp_path, redis_prefix) as queue, web_node(redis_prefix) as (client, published):
            answers = await asyncio.gather(*(send(client, n) for n in range(1, 51)))
            again = await send(client, 7)  # a resend: the original's seq
            with pytest.raises(Rejected) as refused:
                await send(client, 99, body="   ")
        assert sorted(a["seq"] for a in answers) == list(range(1, 51))
        assert again["seq"] == answers[6]["seq"]
        assert refused.value.code == "empty_body"
        assert len(published) == 51 and queue.processed == 52
        assert await redis.xlen(keys.sends) == 0, "processed entries are deleted"
        assert (await redis.xpending(keys.sends, GROUP))["pending"] == 0
        assert not await redis.exists(keys.replies(client.node)), "a node's reply stream goes with it"
        await redis.aclose()

    run_async(scenario())


def test_forged_and_malformed_entries_are_dropped_unanswered(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        node = "0123456789abcdef"
        process = {"op": "process", "ref": 1, "node": node, "room": "lobby", "nick": "mallory",
                   "id": "x", "body": "forged", "ts": 1}
        hostile = [
            encode_entry(ALIEN, SEND_ROLE, process),  # another secret
            encode_entry(KEY, REPLY_ROLE, process),  # a reply passed off as a send
            {b"m": orjson.dumps(process)},  # unsigned
            encode_entry(KEY, SEND_ROLE, {**process, "node": "../../x"}),  # a key name injection
            encode_entry(KEY, SEND_ROLE, {**process, "op": "drop_tables"}),
            encode_entry(KEY, SEND_ROLE, {**process, "body": "x" * 70_000}),  # over max_line_bytes
            encode_entry(KEY, SEND_ROLE, {"op": "seen", "nick": "a", "room": "lobby", "seq": -1}),
        ]
        for fields in hostile:
            await redis.xadd(keys.sends, fields)  # type: ignore[arg-type]
        async with worker(tmp_path, redis_prefix) as queue:
            await until(lambda: _is(redis.xlen(keys.sends), 0), "every hostile entry acknowledged and deleted")
            assert queue.processed == 0
            assert queue.bad_entries.left_out == len(hostile) - 1  # logged once, the others counted
        assert (await redis.xpending(keys.sends, GROUP))["pending"] == 0
        assert not await redis.exists(keys.replies(node)), "nothing was answered"
        await redis.aclose()

    run_async(scenario())


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


def test_a_full_stream_refuses_sends_and_never_drops_an_entry(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        async with web_node(redis_prefix, max_len=3, send_timeout=TIMEOUT) as (client, published):
            waiting = [asyncio.ensure_future(send(client, n)) for n in range(1, 4)]
            await until(lambda: _is(redis.xlen(keys.sends), 3), "three entries added")
            with pytest.raises(Unavailable, match=r"the queue holds 3 entries not yet processed \(limit 3\)"):
                await send(client, 4)
            assert await redis.xlen(keys.sends) == 3
            async with worker(tmp_path, redis_prefix):  # a processor comes: the three are done
                answers = await asyncio.gather(*waiting)
                assert sorted(a["seq"] for a in answers) == [1, 2, 3]
                assert (await send(client, 4))["seq"] == 4  # and there is room again
        await redis.aclose()

    run_async(scenario())


def test_a_dead_consumers_entries_are_taken_over(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        async with web_node(redis_prefix) as (client, published):
            assert await client.backlog() == (0, 0)  # no stream yet
            await redis.xgroup_create(keys.sends, GROUP, id="0", mkstream=True)
            waiting = [asyncio.ensure_future(send(client, n)) for n in range(1, 6)]
            await until(lambda: _is(redis.xlen(keys.sends), 5), "five entries added")
            assert await client.backlog() == (5, 0)  # /metrics: squall_queue_depth, squall_queue_pending
            # A processor takes three, then two more, and dies before acknowledging any.
            taken = await redis.xreadgroup(GROUP, "dead-processor", {keys.sends: ">"}, count=3)
            assert len(taken[0][1]) == 3
            assert await client.backlog() == (2, 3)
            taken = await redis.xreadgroup(GROUP, "dead-processor", {keys.sends: ">"}, count=10)
            assert len(taken[0][1]) == 2
            async with worker(tmp_path, redis_prefix, claim_idle=0.2) as queue:
                answers = await asyncio.gather(*waiting)
                assert queue.claimed == 5
                assert await client.backlog() == (0, 0)
        assert sorted(a["seq"] for a in answers) == [1, 2, 3, 4, 5]
        consumers = {c["name"]: c["pending"] for c in await redis.xinfo_consumers(keys.sends, GROUP)}
        assert consumers[b"dead-processor"] == 0
        await redis.aclose()

    run_async(scenario())


def test_a_forged_reply_settles_nothing(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        async with web_node(redis_prefix) as (client, published):
            waiting = asyncio.ensure_future(send(client, 1))
            await until(lambda: _is(redis.xlen(keys.sends), 1), "the entry added")
            forged = {"op": "processed", "ref": 1, "message": {"room": "lobby", "seq": 666, "id": "1"}}
            await redis.xadd(keys.replies(client.node), encode_entry(ALIEN, REPLY_ROLE, forged))  # type: ignore[arg-type]
            await redis.xadd(keys.replies(client.node), encode_entry(KEY, SEND_ROLE, forged))  # type: ignore[arg-type]
            await until(lambda: _is(redis.xlen(keys.replies(client.node)), 0), "the forged replies read")
            assert not waiting.done() and not published
            async with worker(tmp_path, redis_prefix):
                assert (await waiting)["seq"] == 1
        assert [m["seq"] for m in published] == [1]
        await redis.aclose()

    run_async(scenario())


def test_an_entry_delivered_too_often_is_answered_internal_not_tried_again(
    tmp_path: Path, redis_prefix: str
) -> None:
    """One that kills every processor that takes it must not go round for ever."""
    from squall.errors import Internal
    from squall.queue.worker import MAX_DELIVERIES

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(REDIS_URL)
        keys = QueueKeys(redis_prefix)
        await redis.xgroup_create(keys.sends, GROUP, id="0", mkstream=True)
        async with web_node(redis_prefix) as (client, published):
            poison = asyncio.ensure_future(send(client, 1, body="poison"))
            await until(lambda: _is(redis.xlen(keys.sends), 1), "the entry added")
            taken = await redis.xreadgroup(GROUP, "crashed", {keys.sends: ">"}, count=1)
            entry_id = taken[0][1][0][0]
            # As if MAX_DELIVERIES processors had taken it and died, one after the other.
            await redis.xclaim(keys.sends, GROUP, "crashed", 0, [entry_id], retrycount=MAX_DELIVERIES)
            async with worker(tmp_path, redis_prefix, claim_idle=0.2) as queue:
                with pytest.raises(Internal):
                    await poison
                assert (await send(client, 2))["seq"] == 1  # the next one is stored as usual
                assert queue.claimed == 1
            assert await redis.xlen(keys.sends) == 0
        assert [m["id"] for m in published] == ["2"]
        await redis.aclose()

    run_async(scenario())
