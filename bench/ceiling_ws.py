"""The WebSocket ceiling: the least a Python server can do to fan a chat message out.

Theory of operation: each connection is a bare ``asyncio.Protocol``. It answers
the handshake by hand, unmasks client frames, and hands each text message to the
:class:`Rooms` that the whole server shares. A ``send`` gets the next sequence
number of its room, is encoded *once* into a Squall-shaped envelope and framed
*once*, and the same bytes go to every member with ``transport.write`` (Nagle
off). The sender then gets an ``ack``, as in Squall.

It speaks the subset of Squall's protocol the bench uses (``join``, ``send``;
``joined``, ``message``, ``ack``), so a load generator that talks to Squall talks
to this too and the two are measured doing the same job. What it leaves out is
what makes a ceiling: no storage, no processing pipeline, no presence, no
authentication (the ``token`` query parameter *is* the nick), and no write
buffer limit, so a stalled subscriber grows memory without bound. Squall must
not copy that last one.

Run it alone with ``python -m bench.ceiling_ws --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import time
from urllib.parse import parse_qs, urlsplit

from typing import cast

import orjson

from .frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameTooBig,
    accept_key,
    parse_frame_header,
    server_frame,
    unmask,
)
from .serving import BACKLOG, announce, serve_main, set_nodelay

__all__ = ["Rooms", "start"]

MAX_HEAD = 8192  # bytes of handshake request; more is a misbehaving peer
MAX_SIZE = 65536  # bytes of one client message


class _Room:
    __slots__ = ("members", "seq")

    def __init__(self) -> None:
        # A dict keeps join order and makes leaving O(1).
        self.members: dict[_Connection, None] = {}
        self.seq = 0


class Rooms:
    """Every room of one server, and the two things a client can do to them."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}

    def join(self, conn: _Connection, name: str) -> None:
        room = self._rooms.setdefault(name, _Room())
        room.members[conn] = None
        conn.rooms.add(name)
        members = [member.nick for member in room.members]
        conn.send_json({"type": "joined", "room": name, "seq": room.seq, "members": members})

    def leave_all(self, conn: _Connection) -> None:
        for name in conn.rooms:
            self._rooms[name].members.pop(conn, None)
        conn.rooms.clear()

    def send(self, conn: _Connection, name: str, cid: str, body: str) -> None:
        room = self._rooms.get(name)
        if room is None or conn not in room.members:
            conn.send_json({"type": "error", "id": cid, "code": "not_joined"})
            return
        room.seq += 1
        envelope = {
            "type": "message",
            "room": name,
            "seq": room.seq,
            "id": cid,
            "nick": conn.nick,
            "body": body,
            "html": html.escape(body),
            "mentions": [],
            "links": [],
            "ts": int(time.time() * 1000),
        }
        frame = server_frame(orjson.dumps(envelope))
        for member in room.members:
            member.transport.write(frame)
        conn.send_json({"type": "ack", "id": cid, "room": name, "seq": room.seq})


class _Connection(asyncio.Protocol):
    def __init__(self, rooms: Rooms) -> None:
        self._rooms = rooms
        self._buffer = b""
        self._open = False
        self.rooms: set[str] = set()
        self.nick = ""
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._rooms.leave_all(self)

    def send_json(self, obj: object) -> None:
        self.transport.write(server_frame(orjson.dumps(obj)))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.transport.abort()
                else:
                    self._buffer = buffer
                return
            if not self._handshake(buffer[:end]):
                return
            buffer = buffer[end + 4 :]
        pos = 0
        try:
            while header := parse_frame_header(buffer, pos, max_size=MAX_SIZE):
                opcode, start, end, mask = header
                payload = buffer[start:end]
                if mask is not None:
                    payload = unmask(payload, mask)
                pos = end
                if opcode == OP_TEXT:
                    self._on_text(payload)
                elif opcode == OP_PING:
                    self.transport.write(server_frame(payload, OP_PONG))
                elif opcode == OP_CLOSE:
                    self.transport.write(server_frame(payload[:2], OP_CLOSE))
                    self.transport.close()
                    return
        except (FrameTooBig, ValueError, KeyError, TypeError, AttributeError):
            # A peer that sends nonsense loses its connection; the bench never does.
            self.transport.abort()
            return
        self._buffer = buffer[pos:]

    def _handshake(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1] if lines[0].count(" ") == 2 else "/"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return False
        query = parse_qs(urlsplit(target).query)
        self.nick = query.get("token", ["anonymous"])[0]
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.encode()) + b"\r\n\r\n"
        )
        self._open = True
        return True

    def _on_text(self, payload: bytes) -> None:
        msg = orjson.loads(payload)
        kind = msg.get("type")
        if kind == "send":
            self._rooms.send(self, msg["room"], msg["id"], msg["body"])
        elif kind == "join":
            self._rooms.join(self, msg["room"])


async def start(args: argparse.Namespace) -> asyncio.Server:
    """Listen on ``args.host``:``args.port`` and announce the port."""
    rooms = Rooms()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(rooms), args.host, args.port, backlog=BACKLOG
    )
    announce(server.sockets[0].getsockname()[1])
    return server


if __name__ == "__main__":
    serve_main("Raw asyncio WebSocket fan-out ceiling.", start)
