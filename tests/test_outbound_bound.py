"""A client that floods and never reads cannot grow the web node.

Everything written to a WebSocket client counts against its ``outbound_bytes``
— replies to its own frames (errors, pongs, acks) as much as broadcasts — and
the node stops reading a client whose writes are backed up. So a client that
sends 13 MiB of tiny frames, each of which earns a reply, and never reads,
with a 4 KiB receive window, either finds the server no longer reading (its
send stalls) or is closed with 4008; the node's memory stays flat meanwhile,
and a healthy client in another connection keeps chatting.

"Stalls" is the one negative here: the flooder's socket did not become
writable for :data:`STALL` seconds while it had bytes to send. A node that
reads keeps it writable all the time (it reads in 64 KiB gulps), so the wait
only runs out when reading has really stopped.
"""

from __future__ import annotations

import json
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from support import TIMEOUT, ChatClient, RawFrames, SquallProcess, client_frame, run_async, upgrade_request

OUTBOUND = 256 * 1024
SQUALL_ENV = {
    "SQUALL_SEND_RATE": "100000",
    "SQUALL_SEND_BURST": "100000",
    "SQUALL_OUTBOUND_BYTES": str(OUTBOUND),
    "SQUALL_SOCKET_SEND_BUFFER": str(64 * 1024),
    # The flooder reads its close frame only after the flood: no abort before.
    "SQUALL_CLOSE_TIMEOUT": "60",
}
FLOOD = 13 * 1024 * 1024
STALL = 2.0
# What the node may grow by over the whole flood.
BOUND = 8 * 1024 * 1024

FLOODS = {
    # One byte of JSON that is not JSON: a ~110-byte `error` each, 16x what it costs.
    "bad_frames": client_frame(b"x"),
    "ping_commands": client_frame(b'{"type":"ping"}'),
    # RFC 6455 control pings, answered by the framing layer itself.
    "control_pings": client_frame(b"", opcode=0x9),
}


def _flooder(address: tuple[str, int], token: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Our own send buffer small too, so that what the kernels can hold on
    # the way (a few MiB at most) stays far below FLOOD.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    sock.sendall(upgrade_request(address, token))
    return sock


def _chunks(frame: bytes) -> Iterator[bytes]:
    chunk = frame * (64 * 1024 // len(frame))
    sent = 0
    while sent < FLOOD:
        yield chunk
        sent += len(chunk)


def _flood(sock: socket.socket, frame: bytes, web: psutil.Process, rss_before: int) -> tuple[str, int]:
    """Send up to FLOOD bytes of ``frame`` without reading; ``("stalled"|"sent"|"reset", bytes)``."""
    sock.setblocking(False)
    total = 0
    checked = 0
    for chunk in _chunks(frame):
        view = memoryview(chunk)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], STALL)
                if not writable:
                    return "stalled", total
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "reset", total
            view = view[sent:]
            total += sent
        if total - checked >= 1024 * 1024:  # fail early rather than swap
            checked = total
            growth = web.memory_info().rss - rss_before
            assert growth < BOUND, f"web node grew by {growth >> 20} MiB after {total >> 20} MiB of flood"
    return "sent", total


async def _chat(server: SquallProcess, room: str, tag: str) -> None:
    """Two healthy clients: one says something, the other hears it."""
    speaker = await ChatClient.connect(server.address, server.session("speaker"))
    listener = await ChatClient.connect(server.address, server.session("listener"))
    try:
        await listener.join(room)
        await speaker.send_json({"type": "send", "room": room, "id": tag, "body": tag})
        ack = await speaker.recv_until(lambda f: f["type"] in ("ack", "error"))
        assert ack["type"] == "ack", ack
        await listener.recv_until(lambda f: f["type"] == "message" and f["id"] == tag)
    finally:
        await speaker.close()
        await listener.close()


@pytest.mark.parametrize("kind", list(FLOODS))
def test_a_flooder_that_never_reads_is_paused_or_cut_and_the_node_stays_small(
    server: SquallProcess, room: str, kind: str
) -> None:
    web = psutil.Process(server.process.pid)  # type: ignore[union-attr]
    run_async(_chat(server, room, "warm-up"))
    rss_before = web.memory_info().rss
    frame = FLOODS[kind]
    sock = _flooder(server.address, server.session("flooder"))
    try:
        reader = RawFrames(sock)
        assert reader.read_head().startswith(b"HTTP/1.1 101")
        outcome, sent = _flood(sock, frame, web, rss_before)
        growth = web.memory_info().rss - rss_before
        print(f"\n{kind}: {outcome} after {sent} bytes; the web node grew by {growth / 2**20:.1f} MiB")
        assert growth < BOUND, f"web node grew by {growth >> 20} MiB"
        assert outcome == "stalled", f"the node read all {sent} bytes of a client that reads nothing"

        # The node is idle enough to serve others, and still does not read the flooder.
        run_async(_chat(server, room, f"during-{kind}"))
        assert not select.select([], [sock], [], STALL)[1], "the node read from the flooder again"

        # Reading again, the flooder finds either every answer it was owed (the
        # node paused it, then read it again as it caught up) or too_slow and 4008.
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        answers, code = _answers(reader, sent // len(frame))
        print(f"{kind}: {answers} answers to {sent // len(frame)} frames, close code {code}")
        if code is None:
            assert answers == sent // len(frame)
        else:
            assert code == 4008
    finally:
        sock.close()
    run_async(_chat(server, room, f"after-{kind}"))
    print(f"{kind}: after the close the web node is {(web.memory_info().rss - rss_before) / 2**20:.1f} MiB over")


def _answers(reader: RawFrames, owed: int) -> tuple[int, int | None]:
    """Count answers (text frames or pongs) until ``owed`` of them or a close frame."""
    answers = 0
    last: dict[str, Any] | None = None
    while answers < owed:
        frame = reader.next_frame()
        assert frame is not None, f"EOF after {answers} answers"
        opcode, payload = frame
        if opcode == 0x8:
            assert last is not None and last["code"] == "too_slow", last
            return answers, struct.unpack_from("!H", payload)[0]
        if opcode == 0x1:
            last = json.loads(payload)
        answers += 1
    return answers, None


# -- Server-Sent Events ---------------------------------------------------------------


def _silent_event_stream(server: SquallProcess, room: str) -> socket.socket:
    """An SSE request for ``room`` that reads its answer up to the ``joined``
    event, then nothing more, through a 4 KiB window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(server.address)
    token = server.session("silent")
    sock.sendall(
        f"GET /api/rooms/{room}/events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    seen = b""
    while b"event: joined" not in seen:
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return sock


def _serves(web: psutil.Process, server_port: int, client_port: int) -> bool:
    """Whether the web node still holds the socket of that client's connection."""
    return any(
        c.laddr and c.laddr.port == server_port and c.raddr and c.raddr.port == client_port
        for c in web.net_connections(kind="tcp")
    )


def test_an_event_stream_that_falls_behind_is_closed_at_once(server: SquallProcess, room: str) -> None:
    """Cut off, a stream is closed, not ended politely: ending would leave its
    whole backlog queued, for as long as the client keeps not reading."""
    web = psutil.Process(server.process.pid)  # type: ignore[union-attr]
    stream = _silent_event_stream(server, room)
    client_port = stream.getsockname()[1]
    body = "x" * 4000

    async def flood() -> int:
        sender = await ChatClient.connect(server.address, server.session("sse-flooder"))
        try:
            sent = 0
            while _serves(web, server.port, client_port):
                assert sent < 4000, f"the stream is still served after {sent} messages of {len(body)} bytes"
                for _ in range(50):
                    await sender.send_json({"type": "send", "room": room, "id": f"m{sent}", "body": body})
                    sent += 1
                for _ in range(50):
                    await sender.recv_type("ack")
            return sent
        finally:
            await sender.close()

    try:
        sent = run_async(flood())
        print(f"\nSSE: closed after {sent} messages")
    finally:
        stream.close()
