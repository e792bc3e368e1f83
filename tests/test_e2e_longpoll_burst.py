"""A long-poller that follows ``seq`` exactly as docs/protocol.md says misses nothing.

The server keeps only 8 messages per room in memory (``--recent-per-room 8``).
One client parks a poll; another pipelines a burst of 200 sends over one
WebSocket, so that far more than 8 messages become deliverable at once. The
poller continues from each answer's ``seq`` and must see every seq 1..N once,
in order. (Before the fix it got ``{"messages":[],"seq":LAST}`` and lost them.)

The same burst also goes to an SSE stream and a WebSocket member that joined
with ``since``, which must see it whole too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.frames import Frame, Opcode

from support import TIMEOUT, ChatClient, EventStream, SquallProcess, close_writer, http, read_head, run_async

BURST = 200
SQUALL_ENV = {
    "SQUALL_RECENT_PER_ROOM": "8", "SQUALL_SEND_RATE": "10000", "SQUALL_SEND_BURST": "10000",
}


async def _health(server: SquallProcess) -> dict[str, Any]:
    value: dict[str, Any] = (await http(server.address, "GET", "/api/health")).json()
    return value


async def _until_parked(server: SquallProcess, polls: int) -> None:
    async def loop() -> None:
        while (await _health(server))["waiting_polls"] < polls:
            pass

    await asyncio.wait_for(loop(), TIMEOUT)


class Poller:
    """A kept-alive long-poll connection that continues from each answer's ``seq``."""

    def __init__(self, server: SquallProcess, token: str, room: str) -> None:
        self.server = server
        self.token = token
        self.room = room
        self.cursor = 0
        self.seqs: list[int] = []

    async def run(self, until: int) -> None:
        reader, writer = await asyncio.open_connection(*self.server.address)
        try:
            while self.cursor < until:
                writer.write(
                    f"GET /api/rooms/{self.room}/messages?since={self.cursor}&wait=10 HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode()
                )
                status, headers = await read_head(reader)
                answer = json.loads(await reader.readexactly(int(headers["content-length"])))
                assert status == 200, answer
                self.seqs += [m["seq"] for m in answer["messages"]]
                self.cursor = answer["seq"]  # exactly as the docs say
        finally:
            await close_writer(writer)


def test_a_burst_bigger_than_the_recent_window_reaches_a_parked_poller(server: SquallProcess, room: str) -> None:
    poller_token = server.session("poller")
    sender_token = server.session("burster")
    watcher_token = server.session("watcher")

    async def scenario() -> None:
        poller = Poller(server, poller_token, room)
        polling = asyncio.ensure_future(asyncio.wait_for(poller.run(BURST), TIMEOUT))
        stream = await EventStream.open(server.address, room, watcher_token, since=0)
        watcher = await ChatClient.connect(server.address, watcher_token)
        sender = await ChatClient.connect(server.address, sender_token)
        try:
            assert (await watcher.join(room, since=0))["type"] == "joined"
            await stream.next_of("joined")
            await _until_parked(server, 1)
            # One write: every send in the same few TCP segments, so the
            # processor commits them together and they arrive together.
            sender.connection.transport.write(b"".join(
                Frame(Opcode.TEXT, b'{"type":"send","room":"%s","id":"b%d","body":"burst %d"}'
                      % (room.encode(), n, n)).serialize(mask=True)
                for n in range(BURST)
            ))
            await polling
            assert poller.seqs == list(range(1, BURST + 1)), poller.seqs
            assert poller.cursor == BURST
            seen = [(await watcher.recv_type("message"))["seq"] for _ in range(BURST)]
            assert seen == list(range(1, BURST + 1))
            events = [int((await stream.next_of("message")).id or 0) for _ in range(BURST)]
            assert events == list(range(1, BURST + 1))
            acks = [await sender.recv_type("ack") for _ in range(BURST)]
            assert sorted(ack["seq"] for ack in acks) == list(range(1, BURST + 1))
        finally:
            polling.cancel()
            await sender.close()
            await watcher.close()
            await stream.close()

    run_async(scenario())
