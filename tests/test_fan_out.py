"""web/websocket.py's fan_out on real sockets: a lone message to many
WebSocket members, as each member's ``deliver`` would hand it, whatever each
socket does with it.

The node is a real WebNode, constructed but not started (nothing here needs
its listener, store or processor link); the members are ChatConnections on
one end of real socket pairs.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from support import run_async

from squall.config import load_settings
from squall.frames import Broadcast
from squall.protocol import nick_key
from squall.web.node import WebNode
from squall.web.websocket import ChatConnection, fan_out

ROOM = "r"


class Recorder:
    """Another transport's member: takes whatever it is handed."""

    closed = False

    def __init__(self) -> None:
        self.got: list[Broadcast] = []

    def deliver(self, broadcast: Broadcast) -> None:
        self.got.append(broadcast)


def _member(node: WebNode, nick: str, *, receive_buffer: int | None = None) -> tuple[ChatConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    if receive_buffer is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, receive_buffer)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    member = ChatConnection(node, ours, nick, "127.0.0.1")
    member.rooms[ROOM] = 0
    node.limits.open_connection("127.0.0.1")
    return member, theirs


def _read_all(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_every_member_gets_the_frame_once_whatever_its_socket_does(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = WebNode(load_settings({"data_dir": str(tmp_path)}, environ={}))
        healthy = [_member(node, f"h{i}") for i in range(50)]
        # A member whose kernel buffers are nearly full takes part of the frame.
        stuffed, stuffed_peer = _member(node, "stuffed", receive_buffer=4096)
        filler = b"x" * 100_000
        filled = 0
        while True:
            try:
                filled += stuffed.sock.send(filler)
            except BlockingIOError:
                break
        # A member whose peer is gone.
        gone, gone_peer = _member(node, "gone")
        gone_peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        gone_peer.close()
        other = Recorder()
        payload = b'{"type":"message","room":"r","seq":1,"body":"' + b"y" * 3000 + b'"}'
        message = Broadcast(ROOM, 1, payload, mentions=frozenset({nick_key("h3")}))
        members = [member for member, _ in healthy] + [stuffed, gone, other]

        fan_out(members, message)  # type: ignore[arg-type]
        # The member whose peer is gone lets go of its socket at once, without
        # queueing anything for it.
        assert gone.sock.fileno() < 0 and gone._out is None

        frame = message.ws_frame
        for _, peer in healthy:
            assert _read_all(peer, len(frame)) == frame
            peer.setblocking(False)
            try:
                extra = peer.recv(1)
            except BlockingIOError:
                extra = b""
            assert extra == b"", "a member got the frame twice"
        assert other.got == [message]
        # What the stuffed socket did not take is queued, in order, and sent as it drains.
        assert stuffed._out_size > 0
        received = _read_all(stuffed_peer, filled)
        assert received == filler * (filled // len(filler)) + filler[: filled % len(filler)]
        deadline = asyncio.get_running_loop().time() + 5
        while stuffed._out_size and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert _read_all(stuffed_peer, len(frame)) == frame
        # ... and leaves its rooms on the next loop turn; nobody else noticed.
        await asyncio.sleep(0)
        assert gone.closed
        for member, peer in healthy:
            assert not member.closed
            member.close(1001, "test over")
            member._finish()
            peer.close()
        stuffed._finish()
        stuffed_peer.close()

    run_async(scenario())


def test_an_event_without_seq_goes_through_each_members_limits(tmp_path: Path) -> None:
    """Presence and typing may be dropped for a member far behind: not for fan_out to decide."""

    async def scenario() -> None:
        node = WebNode(load_settings({"data_dir": str(tmp_path)}, environ={}))
        member, peer = _member(node, "ann")
        other = Recorder()
        event = Broadcast(ROOM, None, b'{"type":"presence"}', kind="presence")
        fan_out([member, other], event)  # type: ignore[list-item]
        assert _read_all(peer, len(event.ws_frame)) == event.ws_frame
        assert other.got == [event]
        member._finish()
        peer.close()

    run_async(scenario())
