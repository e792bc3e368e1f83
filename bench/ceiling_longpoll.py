"""The long-poll ceiling: a raw asyncio HTTP/1.1 responder for Squall's long-poll API.

Theory of operation: a ``GET /api/rooms/R/messages?since=S&wait=W`` either is
answered at once (the room has messages after ``S``) or parks its connection
under cursor ``S``. A ``POST`` to the same path appends a message, then answers
every parked connection. Waiters are grouped by cursor, so each group's body is
encoded once and written to all of its connections. That is the trick a fast
long-poll server has: pollers that keep up all share one cursor. Each message
is JSON-encoded once when posted and kept as bytes, so a body is a join.

Expiry of ``wait`` is swept once a second instead of arming a timer per
request, so it is at most a second late; long-poll clients do not notice.

A ``POST`` is stored before it is posted: it goes to the processor ceiling,
started as a child process (:mod:`bench.ceiling_processor`), and the poster
is answered, and the pollers woken, once the processed message comes back.
While its ``POST`` is at the processor a connection reads no further request.
As in :mod:`bench.ceiling_ws`, ``--coalesce`` wakes a room's pollers once per
processor read instead of once per message.

Same subset and shortcuts as :mod:`bench.ceiling_ws`: the bearer token is the
nick, and the backlog is the last :data:`MAX_BACKLOG` messages in memory.

Run it alone with ``python -m bench.ceiling_longpoll --port 8003 [--coalesce]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from .link import ChildProcessor, ProcessorClient, process_request
from .serving import BACKLOG, announce, serve_main, set_nodelay

__all__ = ["start"]

MAX_HEAD = 8192  # bytes of one request head
MAX_BODY = 65536  # bytes of one request body
MAX_BACKLOG = 10_000  # messages a room remembers
MAX_WAIT = 60  # seconds a poll may ask to wait


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class _Room:
    __slots__ = ("name", "seq", "log", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.log: list[bytes] = []  # encoded messages, the last one has `seq`
        # cursor -> {connection: deadline}
        self.waiters: dict[int, dict[_Connection, float]] = {}

    def since(self, cursor: int) -> bytes:
        first = self.seq - len(self.log) + 1
        start = max(cursor + 1 - first, 0)
        return b'{"messages":[' + b",".join(self.log[start:]) + b'],"seq":' + str(self.seq).encode() + b"}"

    def poll(self, conn: _Connection, cursor: int, wait: float) -> None:
        if cursor < self.seq or wait <= 0:
            conn.respond(_response(b"200 OK", self.since(cursor)))
            return
        self.waiters.setdefault(cursor, {})[conn] = time.monotonic() + min(wait, MAX_WAIT)
        conn.parked = (self, cursor)

    def append(self, message: dict[str, Any]) -> None:
        """Keep a processed message; call :meth:`wake` to answer the parked polls."""
        self.seq = message["seq"]
        self.log.append(orjson.dumps(message))
        if len(self.log) > MAX_BACKLOG:
            del self.log[: len(self.log) - MAX_BACKLOG]

    def wake(self) -> None:
        groups, self.waiters = self.waiters, {}
        for cursor, conns in groups.items():
            response = _response(b"200 OK", self.since(cursor))
            for conn in conns:
                conn.unpark(response)

    def expire(self, now: float) -> None:
        for cursor, conns in list(self.waiters.items()):
            late = [conn for conn, deadline in conns.items() if deadline <= now]
            if not late:
                continue
            response = _response(b"200 OK", self.since(cursor))
            for conn in late:
                del conns[conn]
                conn.unpark(response)
            if not conns:
                del self.waiters[cursor]


class _Server:
    def __init__(self, *, coalesce: bool) -> None:
        self.coalesce = coalesce
        self.rooms: dict[str, _Room] = {}
        self._link: ProcessorClient | None = None
        self._next_ref = 0
        self._posters: dict[int, _Connection] = {}  # ref -> whose POST, until answered

    def attach(self, link: ProcessorClient) -> None:
        self._link = link

    def store(self, conn: _Connection, room: str, nick: str, cid: str, body: str) -> None:
        """Hand a POST to the processor; the poster is answered when it comes back."""
        assert self._link is not None, "_Server.attach() was not called"
        self._next_ref += 1
        self._posters[self._next_ref] = conn
        conn.storing = True
        self._link.write(process_request(self._next_ref, room, nick, cid, body, int(time.time() * 1000)))

    def on_answers(self, answers: list[dict[str, Any]], now: float) -> None:
        woken: dict[str, _Room] = {}
        for answer in answers:
            poster = self._posters.pop(answer.get("ref", 0), None)
            if answer.get("op") != "processed":
                if poster is not None:
                    poster.resume(_response(b"422 Unprocessable Entity", orjson.dumps(answer)))
                continue
            message = answer["message"]
            room = self.room(message["room"])
            room.append(message)
            if self.coalesce:
                woken[room.name] = room
            else:
                room.wake()
            if poster is not None:
                poster.resume(_response(b"200 OK", orjson.dumps({"id": message["id"], "seq": message["seq"]})))
        for room in woken.values():
            room.wake()

    def room(self, name: str) -> _Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = _Room(name)
        return room

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for room in self.rooms.values():
                room.expire(now)


class _Connection(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self._server = server
        self._buffer = b""
        self.parked: tuple[_Room, int] | None = None
        self.storing = False  # its POST is at the processor
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # A poller that hangs up stops waiting (chatdemo's on_connection_close).
        if self.parked is not None:
            room, cursor = self.parked
            room.waiters.get(cursor, {}).pop(self, None)
            self.parked = None

    def respond(self, response: bytes) -> None:
        self.transport.write(response)

    def unpark(self, response: bytes) -> None:
        """Answer the parked poll, then serve any request that came in behind it."""
        self.parked = None
        self.resume(response)

    def resume(self, response: bytes) -> None:
        """Answer the request that was waiting, then serve any that came in behind it."""
        self.storing = False
        if self.transport.is_closing():
            return
        self.transport.write(response)
        if self._buffer:
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while self.parked is None and not self.storing:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.transport.abort()
                    return
                break
            head = buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY:
                self.transport.abort()
                return
            if len(buffer) < end + 4 + length:
                break
            body = buffer[end + 4 : end + 4 + length]
            buffer = buffer[end + 4 + length :]
            method, target, _ = head[0].split(" ", 2)
            token = headers.get("authorization", "").removeprefix("Bearer ")
            try:
                self._handle(method, target, token, body)
            except (ValueError, KeyError, TypeError, AttributeError):
                self.respond(_response(b"400 Bad Request", b'{"error":"bad_request"}'))
        self._buffer = buffer

    def _handle(self, method: str, target: str, token: str, body: bytes) -> None:
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        if method == "POST" and parts == ["api", "session"]:
            nick = orjson.loads(body)["nick"]
            self.respond(_response(b"200 OK", orjson.dumps({"nick": nick, "token": nick})))
        elif len(parts) == 4 and parts[:2] == ["api", "rooms"] and parts[3] == "messages":
            room = self._server.room(parts[2])
            if method == "GET":
                query = parse_qs(url.query)
                since = int(query.get("since", ["0"])[0])
                wait = float(query.get("wait", ["0"])[0])
                room.poll(self, since, wait)
            elif method == "POST":
                msg = orjson.loads(body)
                self._server.store(self, room.name, token, msg["id"], msg["body"])
            else:
                self.respond(_response(b"405 Method Not Allowed", b'{"error":"method"}'))
        else:
            self.respond(_response(b"404 Not Found", b'{"error":"not_found"}'))


class _Listener:
    def __init__(self, server: asyncio.Server, sweeper: asyncio.Task[None], processor: ChildProcessor) -> None:
        self._server = server
        self._sweeper = sweeper
        self._processor = processor

    def close(self) -> None:
        self._sweeper.cancel()
        self._server.close()
        self._processor.close()


async def start(args: argparse.Namespace) -> _Listener:
    """Start the processor child, connect to it, listen on ``args.host``:``args.port`` and announce the port."""
    state = _Server(coalesce=args.coalesce)
    processor = await ChildProcessor.start("ceiling_longpoll", args.loop, args.data_dir, state.on_answers)
    state.attach(processor.link)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), args.host, args.port, backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    return _Listener(server, asyncio.create_task(state.sweep()), processor)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coalesce", action="store_true",
                        help="wake a room's pollers once per processor read, not once per message")
    parser.add_argument("--data-dir", default=None,
                        help="directory for the processor's SQLite file (default: a new temp dir)")


if __name__ == "__main__":
    serve_main("Raw asyncio HTTP long-poll ceiling, with its processor.", start, add_arguments=_add_arguments)
