"""The WebSocket ceilings: the least a Python server can do to store and fan out a chat message.

Theory of operation: each connection is a bare ``asyncio.Protocol``. It answers
the handshake by hand, unmasks client frames, and hands each text message to the
:class:`Rooms` that the whole server shares. A ``send`` goes to a processor over
Squall's processor link, as in Squall: :mod:`bench.ceiling_processor`, started
as a child process (so its CPU counts with this one's), gives it the room's
next ``seq`` and stores it in SQLite, fsync'd, before answering. Each processed
message is encoded *once* and framed *once*, and the same bytes go to every
member with ``transport.write`` (Nagle off). The sender then gets an ``ack``.

Two ceilings, one flag:

- plain (the default): every message is its own write to every member, however
  many came back from the processor together. With one message in flight this
  is all a server can do, so it is the reference for one-in-flight scenarios.
- ``--coalesce``: the messages of one processor read (one group commit) go to
  each member in *one* write, their frames joined once, and the ``process``
  requests of one client read go to the processor in one write. That is what
  Squall does under load (``squall.frames.Batch``), so this is the reference
  for scenarios that keep several messages in flight: comparing Squall's
  batches with the plain ceiling would compare batching with no batching.

It speaks the subset of Squall's protocol the bench uses (``join``, ``send``;
``joined``, ``message``, ``ack``), so a load generator that talks to Squall talks
to this too and the two are measured doing the same job. What it leaves out is
what makes a ceiling: no pipeline stages (the processor escapes HTML and
stores), no presence, no authentication (the ``token`` query parameter *is* the
nick), and no write buffer limit, so a stalled subscriber grows memory without
bound. Squall must not copy that last one.

Run it alone with ``python -m bench.ceiling_ws --port 8001 [--coalesce]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

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
from .link import ChildProcessor, ProcessorClient, process_request
from .serving import BACKLOG, announce, serve_main, set_nodelay

__all__ = ["Rooms", "start"]

MAX_HEAD = 8192  # bytes of handshake request; more is a misbehaving peer
MAX_SIZE = 65536  # bytes of one client message


class _Room:
    __slots__ = ("members", "seq")

    def __init__(self) -> None:
        # A dict keeps join order and makes leaving O(1).
        self.members: dict[_Connection, None] = {}
        self.seq = 0  # of the last message broadcast


class Rooms:
    """Every room of one server: joins, sends handed to the processor, and its answers fanned out.

    Call :meth:`attach` with the processor link before the first ``send``.
    """

    def __init__(self, *, coalesce: bool) -> None:
        self.coalesce = coalesce
        self._rooms: dict[str, _Room] = {}
        self._link: ProcessorClient | None = None
        self._next_ref = 0
        self._senders: dict[int, tuple[_Connection, str]] = {}  # ref -> who sent which id, until answered

    def attach(self, link: ProcessorClient) -> None:
        self._link = link

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

    def request(self, conn: _Connection, name: str, cid: str, body: str, ts: int) -> bytes | None:
        """Return the ``process`` line for a send, or None (and answer the sender) if refused."""
        room = self._rooms.get(name)
        if room is None or conn not in room.members:
            conn.send_json({"type": "error", "id": cid, "code": "not_joined"})
            return None
        self._next_ref += 1
        self._senders[self._next_ref] = (conn, cid)
        return process_request(self._next_ref, name, conn.nick, cid, body, ts)

    def submit(self, lines: bytes) -> None:
        assert self._link is not None, "Rooms.attach() was not called"
        self._link.write(lines)

    def on_answers(self, answers: list[dict[str, Any]], now: float) -> None:
        """Fan out what one processor read brought: message by message, or coalesced."""
        if self.coalesce:
            self._fan_out_coalesced(answers)
            return
        for answer in answers:
            sender, cid = self._senders.pop(answer.get("ref", 0), (None, ""))
            if answer.get("op") != "processed":
                _refuse(sender, cid, answer)
                continue
            message = answer["message"]
            room = self._rooms.get(message["room"])
            frame = server_frame(orjson.dumps(message))
            if room is not None:
                room.seq = message["seq"]
                for member in room.members:
                    member.transport.write(frame)
            if sender is not None:
                sender.send_json(_ack(message))

    def _fan_out_coalesced(self, answers: list[dict[str, Any]]) -> None:
        frames: dict[str, list[bytes]] = {}
        acks: dict[_Connection, list[bytes]] = {}
        for answer in answers:
            sender, cid = self._senders.pop(answer.get("ref", 0), (None, ""))
            if answer.get("op") != "processed":
                _refuse(sender, cid, answer)
                continue
            message = answer["message"]
            frames.setdefault(message["room"], []).append(server_frame(orjson.dumps(message)))
            room = self._rooms.get(message["room"])
            if room is not None:
                room.seq = message["seq"]
            if sender is not None:
                acks.setdefault(sender, []).append(server_frame(orjson.dumps(_ack(message))))
        for name, room_frames in frames.items():
            room = self._rooms.get(name)
            if room is None:
                continue
            data = b"".join(room_frames)
            for member in room.members:
                member.transport.write(data)
        for sender, ack_frames in acks.items():
            sender.write(b"".join(ack_frames))


def _ack(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ack", "id": message["id"], "room": message["room"], "seq": message["seq"]}


def _refuse(sender: _Connection | None, cid: str, answer: dict[str, Any]) -> None:
    if sender is not None:
        sender.send_json({"type": "error", "id": cid, "code": answer.get("code"), "reason": answer.get("reason")})


class _Connection(asyncio.Protocol):
    def __init__(self, rooms: Rooms) -> None:
        self._rooms = rooms
        self._buffer = b""
        self._open = False
        self.rooms: set[str] = set()
        self.nick = ""
        self._requests: list[bytes] = []  # process lines of this read, with --coalesce
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._rooms.leave_all(self)

    def send_json(self, obj: object) -> None:
        self.write(server_frame(orjson.dumps(obj)))

    def write(self, data: bytes) -> None:
        # A sender may hang up before its message comes back from the processor.
        if not self.transport.is_closing():
            self.transport.write(data)

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
                    break
        except (FrameTooBig, ValueError, KeyError, TypeError, AttributeError):
            # A peer that sends nonsense loses its connection; the bench never does.
            self.transport.abort()
            return
        finally:
            if self._requests:
                self._rooms.submit(b"".join(self._requests))
                self._requests.clear()
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
            line = self._rooms.request(self, msg["room"], msg["id"], msg["body"], int(time.time() * 1000))
            if line is None:
                return
            if self._rooms.coalesce:
                self._requests.append(line)  # sent with the rest of this read
            else:
                self._rooms.submit(line)
        elif kind == "join":
            self._rooms.join(self, msg["room"])


class _Ceiling:
    """The listening server and its processor child, closed together."""

    def __init__(self, server: asyncio.Server, processor: ChildProcessor) -> None:
        self._server = server
        self._processor = processor

    def close(self) -> None:
        self._server.close()
        self._processor.close()


async def start(args: argparse.Namespace) -> _Ceiling:
    """Start the processor child, connect to it, listen on ``args.host``:``args.port`` and announce the port."""
    rooms = Rooms(coalesce=args.coalesce)
    processor = await ChildProcessor.start("ceiling_ws", args.loop, args.data_dir, rooms.on_answers)
    rooms.attach(processor.link)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(rooms), args.host, args.port, backlog=BACKLOG
    )
    announce(server.sockets[0].getsockname()[1])
    return _Ceiling(server, processor)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coalesce", action="store_true",
                        help="write the messages of one processor read to each member at once")
    parser.add_argument("--data-dir", default=None,
                        help="directory for the processor's SQLite file (default: a new temp dir)")


if __name__ == "__main__":
    serve_main("Raw asyncio WebSocket fan-out ceiling, with its processor.", start, add_arguments=_add_arguments)
