"""A processor killed with SIGKILL in the middle of a stream of sends.

Whatever was in flight, afterwards: every send was answered with an ack or
``unavailable``; every acknowledged message is stored exactly once, with the
seq its ack named; a retry of the failed ones with the same ids stores each
once; the room's seqs are contiguous; a member who watched got every message
once, in order.

``test_kill_processor_under_squall_run`` lets the supervisor restart the
processor at once. ``test_processor_down_longer_than_the_send_timeout`` keeps
it down until sends time out, so the ``unavailable``-and-retry path is taken
for certain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from support import PROCESSOR_LINE, ChatClient, SquallProcess, run_async, squall_server

SEND_TIMEOUT = 3  # seconds; small so that `unavailable` comes within the test's time
SQUALL_ENV = {
    "SQUALL_SEND_RATE": "10000", "SQUALL_SEND_BURST": "10000",
    "SQUALL_SEND_TIMEOUT": str(SEND_TIMEOUT), "SQUALL_RECONNECT_MAX": "0.2",
}
ROOM = "crash"
TOTAL = 300
WINDOW = 30  # sends in flight at once
KILL_AFTER = 100  # answers received before the kill


class Stream:
    """Sends ``TOTAL`` messages with at most ``WINDOW`` unanswered, collecting every answer."""

    def __init__(self, sender: ChatClient) -> None:
        self.sender = sender
        self.answers: dict[str, dict[str, Any]] = {}
        self._window = asyncio.Semaphore(WINDOW)
        self._milestones: list[tuple[int, asyncio.Future[None]]] = []
        self.failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def after(self, count: int) -> asyncio.Future[None]:
        """Resolved once ``count`` sends have been answered."""
        future = asyncio.get_running_loop().create_future()
        self._milestones.append((count, future))
        return future

    async def run(self, ids: list[str]) -> None:
        reader = asyncio.ensure_future(self._read(len(ids)))
        try:
            for cid in ids:
                await self._window.acquire()
                await self.sender.send_json({"type": "send", "room": ROOM, "id": cid, "body": f"body of {cid}"})
            await reader
        finally:
            reader.cancel()

    async def _read(self, expected: int) -> None:
        while len(self.answers) < expected:
            # Up to SEND_TIMEOUT for an answer, plus a processor restart.
            frame = await self.sender.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=60)
            assert frame.get("id") is not None, frame
            assert frame["id"] not in self.answers, f"second answer for {frame}"
            self.answers[frame["id"]] = frame
            self._window.release()
            if frame["type"] == "error" and not self.failing.done():
                self.failing.set_result(None)
            for count, future in self._milestones:
                if len(self.answers) >= count and not future.done():
                    future.set_result(None)


async def watch(listener: ChatClient, until: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < until:
        seqs.append((await listener.recv_type("message", timeout=60))["seq"])
    return seqs


async def crash_scenario(
    web: SquallProcess, sender_token: str, listener_token: str,
    crash: Callable[[Stream], Awaitable[None]],
) -> dict[str, Any]:
    address = web.address
    sender = await ChatClient.connect(address, sender_token)
    listener = await ChatClient.connect(address, listener_token)
    try:
        await listener.join(ROOM)
        ids = [f"m{n}" for n in range(TOTAL)]
        stream = Stream(sender)
        killed = stream.after(KILL_AFTER)
        running = asyncio.ensure_future(stream.run(ids))
        await killed
        await crash(stream)
        await running

        answers = stream.answers
        acked = {cid: a["seq"] for cid, a in answers.items() if a["type"] == "ack"}
        failed = sorted(cid for cid, a in answers.items() if a["type"] == "error")
        codes = {answers[cid]["code"] for cid in failed}
        assert codes <= {"unavailable"}, [answers[cid] for cid in failed]

        await asyncio.to_thread(web.wait_connected)
        history = await asyncio.to_thread(web.history, ROOM, sender_token)
        by_id = {}
        for message in history:
            assert message["id"] not in by_id, f"{message['id']} stored twice"
            by_id[message["id"]] = message["seq"]
        assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
        for cid, seq in acked.items():
            assert by_id.get(cid) == seq, f"acknowledged {cid} (seq {seq}) stored as {by_id.get(cid)}"

        retry = Stream(sender)
        await retry.run(failed)
        assert {a["type"] for a in retry.answers.values()} <= {"ack"}, retry.answers

        history = await asyncio.to_thread(web.history, ROOM, sender_token)
        watched = await watch(listener, TOTAL)
        await listener.send_json({"type": "ping"})
        late = await listener.recv_until(lambda f: f["type"] in ("pong", "message"))
        assert late["type"] == "pong", f"extra after seq {TOTAL}: {late}"
        return {"acked": acked, "failed": failed, "retried": retry.answers, "history": history, "watched": watched}
    finally:
        await sender.close()
        await listener.close()


def check_final_state(result: dict[str, Any]) -> None:
    history = result["history"]
    assert [m["seq"] for m in history] == list(range(1, TOTAL + 1))
    assert sorted(m["id"] for m in history) == sorted(f"m{n}" for n in range(TOTAL))
    seq_of = {m["id"]: m["seq"] for m in history}
    for cid, seq in result["acked"].items():
        assert seq_of[cid] == seq
    for cid, answer in result["retried"].items():
        assert seq_of[cid] == answer["seq"]
    assert result["watched"] == list(range(1, TOTAL + 1))


def test_kill_processor_under_squall_run(server: SquallProcess) -> None:
    sender_token, listener_token = server.session("sender"), server.session("listener")

    async def crash(stream: Stream) -> None:
        started = await asyncio.to_thread(server.kill_processor)
        # The supervisor starts a new one on the same port.
        await asyncio.to_thread(server.wait_for_line, PROCESSOR_LINE, count=started + 1)

    check_final_state(run_async(crash_scenario(server, sender_token, listener_token, crash), timeout=120))


def test_processor_down_longer_than_the_send_timeout(tmp_path: Path) -> None:
    """``squall processor`` and ``squall web`` apart: the test restarts the processor."""
    processors: list[SquallProcess] = []
    try:
        processors.append(SquallProcess(tmp_path, "processor", env=SQUALL_ENV))
        processors[0].start()
        port = processors[0].processor_port
        with squall_server(tmp_path, "web", processor_port=port, env=SQUALL_ENV) as web:
            sender_token, listener_token = web.session("sender"), web.session("listener")

            async def crash(stream: Stream) -> None:
                process = processors[-1].process
                assert process is not None
                process.kill()
                await asyncio.to_thread(process.wait)
                # Stay down until sends fail for want of a processor (SEND_TIMEOUT).
                await asyncio.wait_for(stream.failing, 30)
                replacement = SquallProcess(tmp_path, "processor", processor_port=port, env=SQUALL_ENV)
                processors.append(replacement)
                await asyncio.to_thread(replacement.start)

            result = run_async(crash_scenario(web, sender_token, listener_token, crash), timeout=120)
        assert result["failed"], "no send failed although the processor was down past the timeout"
        check_final_state(result)
    finally:
        for processor in processors:
            processor.stop()
