"""A client that stops reading cannot hurt the others, and loses nothing.

One raw client joins and then never reads, with a tiny receive buffer, while
200 healthy clients receive a fast stream. The healthy ones get every message;
the server's memory stays bounded because the slow client's outbound buffer is
(``outbound_bytes``); and the slow client, once it reads again, finds the
``too_slow`` error with its last delivered seq and close 4008, resumes with
``since`` and ends up with every message exactly once. (How the healthy
clients' throughput and latency compare with and without the slow one is
measured by ``make bench``, not asserted here.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import psutil

from support import TIMEOUT, ChatClient, SquallProcess, run_async

MESSAGES = 1000
HEALTHY = 200
BODY = "x" * 1000
WINDOW = 50
# The backlog the slow client leaves (about 2 MiB) is well over its outbound
# buffer plus the kernel's send buffer, which is fixed so that autotuning
# cannot swallow it.
SQUALL_ENV = {
    "SQUALL_SEND_RATE": "100000",
    "SQUALL_SEND_BURST": "100000",
    "SQUALL_STAGES": "validate,render,store",
    "SQUALL_OUTBOUND_BYTES": str(256 * 1024),
    "SQUALL_SOCKET_SEND_BUFFER": str(64 * 1024),
    # The slow client reads again only once the healthy ones are done.
    "SQUALL_CLOSE_TIMEOUT": "60",
}


def _slow_client(address: tuple[str, int], token: str, room: str) -> socket.socket:
    """A WebSocket that joins ``room`` and then reads nothing, through a 4 KiB window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "join", "room": room}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


def _read_frames(sock: socket.socket) -> tuple[list[dict[str, Any]], int | None]:
    """What the server sent up to its close frame: JSON frames and the close code.

    The server waits for our close reply before it closes TCP, so this stops at
    the close frame (or at EOF, if the server gave up waiting).
    """
    data = b""
    frames: list[dict[str, Any]] = []
    position = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return frames, None
        data += chunk
        while position + 2 <= len(data):
            opcode, length = data[position] & 0x0F, data[position + 1] & 0x7F
            header = 2
            if length == 126:
                header = 4
                (length,) = struct.unpack_from("!H", data, position + 2) if len(data) >= position + 4 else (None,)
            elif length == 127:
                header = 10
                (length,) = struct.unpack_from("!Q", data, position + 2) if len(data) >= position + 10 else (None,)
            if length is None or position + header + length > len(data):
                break  # the rest of this frame has not arrived yet
            payload = data[position + header : position + header + length]
            position += header + length
            if opcode == 0x1:
                frames.append(json.loads(payload))
            elif opcode == 0x8:
                (code,) = struct.unpack_from("!H", payload)
                return frames, code


class _Progress:
    """How far the slowest healthy client has got; the sender keeps within WINDOW of it."""

    def __init__(self, clients: int) -> None:
        self.latest = [0] * clients
        self.moved = asyncio.Event()

    def advance(self, index: int, seq: int) -> None:
        self.latest[index] = seq
        self.moved.set()

    async def wait_for(self, seq: int) -> None:
        while min(self.latest) < seq:
            self.moved.clear()
            await asyncio.wait_for(self.moved.wait(), TIMEOUT)


async def _collect(
    client: ChatClient, room: str, count: int, progress: _Progress | None = None, index: int = 0
) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        frame = await client.recv_json()
        if frame.get("type") == "message" and frame["room"] == room:
            seqs.append(frame["seq"])
            if progress is not None:
                progress.advance(index, frame["seq"])
    return seqs


def test_slow_client_is_cut_off_and_resumes_without_loss(tmp_path: Any) -> None:
    server = SquallProcess(tmp_path, env=SQUALL_ENV)
    server.start()
    try:
        room = "slow"
        token = server.session("sender")
        web = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        slow = _slow_client(server.address, server.session("sloth"), room)

        async def scenario() -> tuple[list[list[int]], int]:
            # max_queue=None: presence events for clients that are not read
            # any more must not stall the websockets client's closing handshake.
            healthy = [
                await ChatClient.connect(server.address, server.session(f"h{i}"), max_queue=None)
                for i in range(HEALTHY)
            ]
            sender = await ChatClient.connect(server.address, token)
            try:
                for client in healthy:
                    await client.join(room)
                rss_before = web.memory_info().rss
                progress = _Progress(len(healthy))
                collectors = [
                    asyncio.ensure_future(_collect(c, room, MESSAGES, progress, i))
                    for i, c in enumerate(healthy)
                ]
                # As fast as the healthy clients read: a client that keeps up
                # is what "healthy" means; the slow one reads nothing at all.
                for number in range(MESSAGES):
                    await progress.wait_for(number - WINDOW)
                    await sender.send_json({"type": "send", "room": room, "body": f"{number} {BODY}", "id": f"m{number}"})
                acks = 0
                while acks < MESSAGES:
                    if (await sender.recv_json()).get("type") == "ack":
                        acks += 1
                results = await asyncio.gather(*collectors)
                growth = web.memory_info().rss - rss_before
                return results, growth
            finally:
                await asyncio.gather(*(client.close() for client in [*healthy, sender]))

        results, growth = run_async(scenario())
        for seqs in results:
            assert seqs == list(range(1, MESSAGES + 1))
        # The slow client's buffer is capped; 200 fast readers need little more.
        assert growth < 64 * 1024 * 1024, f"web node grew by {growth} bytes"

        # The slow client reads again: what it got before the cut, the
        # too_slow error with its position, and close 4008.
        frames, close_code = _read_frames(slow)
        slow.close()
        assert close_code == 4008
        errors = [f for f in frames if f.get("type") == "error"]
        assert errors and errors[-1]["code"] == "too_slow"
        got = [f["seq"] for f in frames if f.get("type") == "message"]
        assert got == list(range(1, len(got) + 1))
        assert errors[-1]["rooms"][room] == (got[-1] if got else 0)
        assert len(got) < MESSAGES, "the slow client was never behind"

        async def resume() -> list[int]:
            client = await ChatClient.connect(server.address, server.session("sloth"))
            try:
                joined = await client.join(room, since=errors[-1]["rooms"][room])
                assert joined["type"] == "joined"
                return await _collect(client, room, MESSAGES - len(got))
            finally:
                await client.close()

        rest = run_async(resume())
        assert got + rest == list(range(1, MESSAGES + 1))
    finally:
        server.stop()
