"""The load generator: lean asyncio clients, thousands to a process.

Theory of operation: the load generator must never be the bottleneck, so a
subscriber does as little per frame as Python allows. Each client is a bare
``asyncio.Protocol``; the event loop hands it everything that has arrived in one
read (uvloop reads up to 256 KiB at a time), and :meth:`WSClient.data_received`
walks the frames in that chunk by their headers alone. Of a chat message it
reads only the bytes that say it *is* a message and its ``"seq":`` number, with
one regex search bounded to the frame; it never decodes the JSON. Everything
else a server sends (``joined``, ``ack``, presence, typing) is rare and is
decoded in full.

What a subscriber checks: each room's ``seq`` is dense and increasing, so a
subscriber expects ``last + 1`` after the ``seq`` in its ``joined`` reply and
counts anything else as a gap (a lost message) or a duplicate. A :class:`Tally`
per room counts deliveries per ``seq``; a message is *complete* once every
member has it, and the sender's window is counted in complete messages, so the
bench measures delivery, not how much a server can buffer.

Latency: arrival is stamped once per read, not per frame (all frames of a read
arrived together), and only when a scenario asks for it. The sender stamps
each send by client id and learns the ``seq`` from its ``ack``; both ends share
this process's clock.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

from .serving import set_nodelay
from .frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, accept_key, client_frame, client_handshake, new_key

__all__ = [
    "HTTPClient",
    "HTTPError",
    "Poller",
    "Tally",
    "WSClient",
    "connect_many",
    "run_delay_seconds",
    "self_cpu_seconds",
]

MAX_HEAD = 16384  # bytes of an HTTP response head
MAX_BODY = 64 * 2**20  # bytes of one HTTP response body

_MESSAGE_PREFIX = b'{"type":"message"'
_MESSAGE_TYPE = b'"type":"message"'
# JSON escapes every quote inside a string, so `"seq":` can only be a key.
_SEQ = re.compile(rb'"seq":(\d+)')


def self_cpu_seconds() -> float:
    """Return the user + system CPU time this process has used, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_delay_seconds(pid: int | str = "self") -> float | None:
    """Return the seconds ``pid``'s threads have spent runnable but waiting for a CPU.

    This is the third-party share of a busy core: a server pinned to a core
    that another program also wants shows CPU below 1.0 and this wait above 0,
    while a server with nothing to do shows neither. Read from
    ``/proc/<pid>/task/*/schedstat`` (Linux with schedstats); None elsewhere.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between listdir and open
    return total / 1e9


class Tally:
    """Deliveries per ``seq`` in one room, and how many messages every member has.

    ``members`` is how many clients must receive each message before it counts
    as complete. Clients add to :attr:`counts` themselves (inlined, it is the
    hottest line of the load generator) and call :meth:`complete` when a count
    reaches ``members``. Call :meth:`wait_completed` to wait for a number of
    complete messages.
    """

    __slots__ = ("members", "counts", "completed", "completed_at", "_waiter", "_want")

    def __init__(self, members: int) -> None:
        self.members = members
        self.counts: dict[int, int] = {}
        self.completed = 0
        self.completed_at = 0.0  # perf_counter() when the last message completed
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0

    def arrived(self, seq: int) -> None:
        """Count one delivery of ``seq`` (the slow path, for clients off the hot loop)."""
        count = self.counts.get(seq, 0) + 1
        if count < self.members:
            self.counts[seq] = count
        else:
            self.complete(seq)

    def complete(self, seq: int) -> None:
        """Record that every member has ``seq``."""
        self.counts.pop(seq, None)
        self.completed += 1
        self.completed_at = time.perf_counter()
        waiter = self._waiter
        if waiter is not None and self.completed >= self._want and not waiter.done():
            waiter.set_result(None)

    async def wait_completed(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` messages are complete; return False after ``timeout`` seconds."""
        if self.completed >= n:
            return True
        self._want = n
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        return True


class WSClient(asyncio.Protocol):
    """One WebSocket client that joins rooms, sends, and counts what arrives.

    Create it through :func:`connect_many` or ``loop.create_connection``, then
    await :attr:`opened`, call :meth:`join` and await :attr:`joined`. Messages of
    the joined room are checked for order and reported to ``tally``; with
    ``latencies`` given, each is also appended to it as ``(seq, arrival time)``.
    ``on_ack(client, cid, seq)`` is called for each ``ack``.
    """

    def __init__(
        self,
        host: str,
        path: str,
        *,
        tally: Tally | None = None,
        latencies: list[tuple[int, float]] | None = None,
        on_ack: Callable[[WSClient, str, int], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.tally = tally
        self.latencies = latencies
        self.on_ack = on_ack
        self.room = ""
        self.next_seq = 0  # 0 until joined: messages before `joined` are not ours to count
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.backlog = 0
        self.errors: list[Any] = []
        self.transport: asyncio.Transport | None = None
        self._base_seq = 1
        self._host = host
        self._path = path
        self._key = new_key()
        self._buffer = b""
        self._open = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.write(client_handshake(self._host, self._path, self._key))

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.opened, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost before {self._path} was ready"))
                fut.exception()  # retrieved: the caller may already have given up on it
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buf
                if len(buf) > MAX_HEAD:
                    self._fail(f"handshake response longer than {MAX_HEAD} bytes")
                return
            if not self._check_handshake(buf[:end]):
                return
            buf = buf[end + 4 :]
        now = time.perf_counter() if self.latencies is not None else 0.0
        tally = self.tally
        counts = tally.counts if tally is not None else None
        members = tally.members if tally is not None else 0
        n = len(buf)
        pos = 0
        # The hot loop: header-only parsing, inlined because a function call per
        # frame costs as much as the rest of the loop body.
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[start] << 8) | buf[start + 1]
                start += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            pos = end
            if opcode == OP_TEXT:
                if buf.startswith(_MESSAGE_PREFIX, start, end) or buf.find(_MESSAGE_TYPE, start, end) >= 0:
                    match = _SEQ.search(buf, start, end)
                    if match is None or not self.next_seq:
                        continue
                    seq = int(match[1])
                    if seq == self.next_seq:
                        self.next_seq = seq + 1
                    elif seq < self.next_seq:
                        if seq < self._base_seq:
                            self.backlog += 1
                        else:
                            self.duplicates += 1
                        continue
                    else:
                        self.gaps += seq - self.next_seq
                        self.next_seq = seq + 1
                    self.received += 1
                    if counts is not None:
                        count = counts.get(seq, 0) + 1
                        if count < members:
                            counts[seq] = count
                        else:
                            tally.complete(seq)  # type: ignore[union-attr]
                    if self.latencies is not None:
                        self.latencies.append((seq, now))
                else:
                    self._on_event(buf[start:end])
            elif opcode == OP_PING:
                self._write(buf[start:end], OP_PONG)
            elif opcode == OP_CLOSE:
                self._write(buf[start : start + 2], OP_CLOSE)
                if self.transport is not None:
                    self.transport.close()
                return
        self._buffer = buf[pos:] if pos < n else b""

    # What a scenario calls

    def join(self, room: str) -> None:
        """Ask to join ``room``; :attr:`joined` resolves once the server confirms."""
        self.room = room
        self.send_json({"type": "join", "room": room})

    def send_message(self, room: str, cid: str, body: str) -> None:
        self.send_json({"type": "send", "room": room, "body": body, "id": cid})

    def send_json(self, obj: object) -> None:
        self._write(orjson.dumps(obj), OP_TEXT)

    def batch_reads(self, nbytes: int) -> None:
        """Wake for this socket only once ``nbytes`` have arrived (``SO_RCVLOWAT``); 1 undoes it.

        A subscriber that keeps up reads one frame per wake-up, and the wake-up
        (epoll, ``recv``, a callback) costs the load generator several times
        what parsing the frame does, so it saturates before a fast server does.
        Waiting for a few frames per read changes nothing the server does: it
        still writes every frame to every socket. Whoever sets this must make
        sure ``nbytes`` will arrive, and set it back to 1 before waiting for
        the last frames; Linux wakes a reader when the mark drops below what
        is queued.
        """
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None and hasattr(socket, "SO_RCVLOWAT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)

    def close(self) -> None:
        """Send a close frame (1000, normal closure) and hang up without waiting for the echo."""
        if self.transport is not None and not self.transport.is_closing():
            if self._open:
                self._write(b"\x03\xe8", OP_CLOSE)
            self.transport.close()

    # Internals

    def _write(self, payload: bytes, opcode: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload, opcode))

    def _fail(self, reason: str) -> None:
        self.errors.append(reason)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()

    def _check_handshake(self, head: bytes) -> bool:
        status, _, rest = head.partition(b"\r\n")
        if b" 101 " not in status + b" ":
            self._fail(f"handshake refused: {status.decode('latin-1')}")
            return False
        if accept_key(self._key) not in rest:
            self._fail("handshake answer has the wrong Sec-WebSocket-Accept")
            return False
        self._open = True
        self.opened.set_result(None)
        return True

    def _on_event(self, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.errors.append(payload[:200])
            return
        kind = event.get("type")
        if kind == "ack":
            if self.on_ack is not None:
                self.on_ack(self, event.get("id", ""), event.get("seq", 0))
        elif kind == "joined":
            if event.get("room") == self.room and not self.joined.done():
                self._base_seq = event["seq"] + 1
                self.next_seq = self._base_seq
                self.joined.set_result(None)
        elif kind == "error":
            self.errors.append(event)


async def connect_many(
    factory: Callable[[int], asyncio.Protocol],
    host: str,
    port: int,
    count: int,
    *,
    concurrency: int = 100,
) -> list[Any]:
    """Open ``count`` connections made by ``factory(i)``, at most ``concurrency`` at once.

    Returns the protocols in order. Bounding the connects in flight keeps the
    server's accept queue from overflowing; a dropped SYN costs a one-second
    retransmit.
    """
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> asyncio.Protocol:
        async with semaphore:
            _, protocol = await loop.create_connection(lambda: factory(i), host, port)
            if isinstance(protocol, WSClient):
                await protocol.opened
            return protocol

    return list(await asyncio.gather(*(one(i) for i in range(count))))


class HTTPError(Exception):
    """An HTTP exchange that the bench cannot use: a bad status or a malformed answer."""


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


class HTTPClient:
    """A keep-alive HTTP/1.1 client for the few requests that are not the hot path.

    Create it with :meth:`connect`; call :meth:`request` one at a time; call
    :meth:`close` when done.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def connect(cls, host: str, port: int) -> HTTPClient:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: object = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """Send one request and return ``(status, decoded JSON body or None)``."""
        payload = b"" if body is None else orjson.dumps(body)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(payload)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        raw_head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(raw_head.split(b" ", 2)[1])
        length = _content_length(raw_head)
        if length is not None:
            if length > MAX_BODY:
                raise HTTPError(f"response body with {length} bytes exceeds limit of {MAX_BODY} bytes")
            data = await self._reader.readexactly(length)
        elif b"chunked" in raw_head.lower():
            data = await self._read_chunked()
        else:
            data = b""
        return status, orjson.loads(data) if data else None

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > MAX_BODY:
                raise HTTPError(f"chunked body exceeds limit of {MAX_BODY} bytes")
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass


class Poller(asyncio.Protocol):
    """A long-poll client: one request outstanding, re-polled as soon as it is answered.

    It starts at cursor ``since`` and counts each message it is handed, in order,
    into ``tally``, as :class:`WSClient` does. Call :meth:`close` to stop.
    """

    def __init__(self, host: str, room: str, token: str, since: int, tally: Tally, *, wait: int = 30) -> None:
        self.tally = tally
        self.next_seq = since + 1
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.responses = 0
        self.errors: list[Any] = []
        self.transport: asyncio.Transport | None = None
        self._request_prefix = f"GET /api/rooms/{room}/messages?since=".encode()
        self._request_suffix = (
            f"&wait={wait} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        self._buffer = b""
        self._stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self._poll()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stopping:
            self.errors.append(f"connection lost: {exc}")

    def close(self) -> None:
        self._stopping = True
        if self.transport is not None:
            self.transport.abort()

    def _poll(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request_prefix + str(self.next_seq - 1).encode() + self._request_suffix)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._buffer = buf
            return
        length = _content_length(buf[:end])
        if length is None or not buf.startswith(b"HTTP/1.1 200"):
            self.errors.append(buf[: min(end, 200)])
            self.close()
            return
        if len(buf) < end + 4 + length:
            self._buffer = buf
            return
        self._buffer = buf[end + 4 + length :]
        answer = orjson.loads(buf[end + 4 : end + 4 + length])
        self.responses += 1
        tally = self.tally
        for message in answer["messages"]:
            seq = message["seq"]
            if seq < self.next_seq:
                self.duplicates += 1
                continue
            if seq > self.next_seq:
                self.gaps += seq - self.next_seq
            self.next_seq = seq + 1
            self.received += 1
            tally.arrived(seq)
        if answer["seq"] >= self.next_seq:
            self.next_seq = answer["seq"] + 1
        if not self._stopping:
            self._poll()
