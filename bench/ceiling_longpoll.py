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

Same subset and shortcuts as :mod:`bench.ceiling_ws`: the bearer token is the
nick, there is no storage, and the backlog is the last
:data:`MAX_BACKLOG` messages in memory.

Run it alone with ``python -m bench.ceiling_longpoll --port 8003``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import time
from urllib.parse import parse_qs, urlsplit

from typing import cast

import orjson

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

    def post(self, nick: str, cid: str, body: str) -> int:
        self.seq += 1
        message = {
            "type": "message", "room": self.name, "seq": self.seq, "id": cid, "nick": nick,
            "body": body, "html": html.escape(body), "mentions": [], "links": [],
            "ts": int(time.time() * 1000),
        }
        self.log.append(orjson.dumps(message))
        if len(self.log) > MAX_BACKLOG:
            del self.log[: len(self.log) - MAX_BACKLOG]
        groups, self.waiters = self.waiters, {}
        for cursor, conns in groups.items():
            response = _response(b"200 OK", self.since(cursor))
            for conn in conns:
                conn.unpark(response)
        return self.seq

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
    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}

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
        self.transport.write(response)
        if self._buffer:
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while self.parked is None:
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
                seq = room.post(token, msg["id"], msg["body"])
                self.respond(_response(b"200 OK", orjson.dumps({"id": msg["id"], "seq": seq})))
            else:
                self.respond(_response(b"405 Method Not Allowed", b'{"error":"method"}'))
        else:
            self.respond(_response(b"404 Not Found", b'{"error":"not_found"}'))


class _Listener:
    def __init__(self, server: asyncio.Server, sweeper: asyncio.Task[None]) -> None:
        self._server = server
        self._sweeper = sweeper

    def close(self) -> None:
        self._sweeper.cancel()
        self._server.close()


async def start(args: argparse.Namespace) -> _Listener:
    """Listen on ``args.host``:``args.port`` and announce the port."""
    state = _Server()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), args.host, args.port, backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    return _Listener(server, asyncio.create_task(state.sweep()))


if __name__ == "__main__":
    serve_main("Raw asyncio HTTP long-poll ceiling.", start)
