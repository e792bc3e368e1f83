"""The processor's TCP server: newline-delimited JSON in, processed messages out.

A connection is served only once its peer has authenticated
(:mod:`squall.handshake`): the first line must be a web node's ``hello`` with a
valid proof, within ``hello_timeout`` seconds. Anything else is answered with
one error line and closed, and logged at most once a minute
(:class:`~squall.throttled_log.ThrottledLog`), so that neither an HTTP request
sent to this port nor a flood of them gets anything done.

Every ``process`` request is checked field by field at this boundary with the
web node's own checks (:mod:`squall.protocol`), so that a request the web node
would never send is refused alone, before it can fail a group commit.

Each connection reads in large chunks, splits them into lines
(:class:`~squall.lines.LineReader`) and starts one task per ``process``
request, so requests are pipelined and answered in whatever order they finish,
matched by ``ref``. A connection stops reading while ``max_in_flight`` of its
requests are unfinished, which pushes back on the web node through TCP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from ..errors import BadRequest, HandshakeFailed, Rejected
from ..handshake import HELLO_TIMEOUT_SECONDS, check_web_hello, new_nonce, processor_hello, welcome
from ..lines import Line, LineReader, encode_line
from ..message import Draft
from ..protocol import check_client_id, check_link_room, check_nick, check_room
from ..throttled_log import ThrottledLog
from .pipeline import Pipeline

__all__ = ["ProcessorServer", "MIN_TS", "MAX_TS", "parse_process", "parse_seen"]

log = logging.getLogger("squall.processor")

_READ_CHUNK = 256 * 1024
_PROCESS_FIELDS = {"room": str, "nick": str, "id": str, "body": str, "ts": int}
# A `ts` is milliseconds since the epoch, stamped by a web node: anything before
# 1970 or after the year 9999 is no clock's reading, and would not even fit the
# store's integer column near 2**63.
MIN_TS = 0
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# Refused connections are logged at most once per this many seconds.
REFUSAL_LOG_SECONDS = 60.0


class ProcessorServer(TCPServer):
    """Serves web nodes that prove ``key`` (:func:`squall.handshake.link_key`).

    :param max_line: longest line accepted, in bytes; default 64 KiB.
    :param max_body_chars: longest body after trimming; default 4000.
    :param hello_timeout: seconds a new connection has to authenticate; default 5.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        key: bytes,
        on_seen: Callable[[str, str, int], None] | None = None,
        max_line: int = 64 * 1024,
        max_body_chars: int = 4000,
        max_in_flight: int = 4096,
        max_write_buffer: int = 64 * 1024 * 1024,
        hello_timeout: float = HELLO_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(max_buffer_size=max(4 * max_line, 2 * _READ_CHUNK))
        self.pipeline = pipeline
        self.key = key
        self.on_seen = on_seen
        self.max_line = max_line
        self.max_body_chars = max_body_chars
        self.max_in_flight = max_in_flight
        self.max_write_buffer = max_write_buffer
        self.hello_timeout = hello_timeout
        self.refusals = ThrottledLog(log, interval=REFUSAL_LOG_SECONDS)
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` s passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.max_write_buffer_size = self.max_write_buffer
        try:
            stream.set_nodelay(True)
        except OSError:
            pass
        connection = _Connection(self, stream)
        try:
            leftover = await connection.authenticate()
        except HandshakeFailed as exc:
            connection.send({"op": "error", "code": exc.code, "reason": exc.reason})
            stream.close()
            self.refusals.note(
                f"refused a processor-link connection from {_peer(address)}: {exc.code}: {exc.reason}",
                now=time.monotonic(),
            )
            return
        except StreamClosedError:
            return
        self.connections.add(connection)
        try:
            await connection.run(leftover)
        finally:
            self.connections.discard(connection)

    def send_to_all(self, value: dict[str, Any]) -> None:
        """Send an unasked line (``updated``) to every authenticated web node."""
        line = encode_line(value)
        for connection in self.connections:
            connection.write(line)


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "a local socket")


def parse_process(request: dict[str, Any], *, max_body_chars: int) -> Draft | dict[str, Any]:
    """The draft a ``process`` request asks for, or the line that refuses it.

    The same checks as the web node's (:mod:`squall.protocol`), at this
    boundary, so that a request the web node would never send is refused
    alone (``rejected`` or ``error``), before it can fail a group commit.
    """
    problems = []
    if "ref" not in request:
        problems.append("'ref' is missing")
    for name, kind in _PROCESS_FIELDS.items():
        value = request.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{name!r} must be {'a string' if kind is str else 'an integer'}")
    if problems:
        answer: dict[str, Any] = {"op": "error", "code": "bad_field", "reason": "; ".join(problems)}
        if "ref" in request:
            answer["ref"] = request["ref"]
        return answer
    ref, body, ts = request["ref"], request["body"], request["ts"]
    try:
        room = check_link_room(request["room"])  # a client's room, or a web node's canary
        nick = check_nick(request["nick"])
        cid = check_client_id(request["id"])
    except BadRequest as exc:
        return {"op": "rejected", "ref": ref, "code": exc.code, "reason": exc.reason}
    if not MIN_TS <= ts <= MAX_TS:
        return {"op": "rejected", "ref": ref, "code": "bad_ts",
                "reason": f"ts {ts} is not milliseconds between {MIN_TS} and {MAX_TS}"}
    length = len(body.strip())
    if length > max_body_chars:
        return {"op": "rejected", "ref": ref, "code": "body_too_long",
                "reason": f"message body has {length} characters, more than the limit"
                          f" of {max_body_chars}"}
    return Draft(room=room, nick=nick, id=cid, body=body, ts=ts)


def parse_seen(request: dict[str, Any]) -> tuple[str, str, int] | dict[str, Any]:
    """``(nick key, room, seq)`` of a ``seen`` report, or the error line that refuses it."""
    nick, room, seq = request.get("nick"), request.get("room"), request.get("seq")
    if not (isinstance(nick, str) and isinstance(room, str)
            and isinstance(seq, int) and not isinstance(seq, bool)):
        return {"op": "error", "code": "bad_field",
                "reason": "seen needs 'nick' and 'room' strings and an integer 'seq'"}
    try:
        check_nick(nick)
        check_room(room)
    except BadRequest as exc:
        return {"op": "error", "code": exc.code, "reason": exc.reason}
    if not 1 <= seq < 2**63:
        return {"op": "error", "code": "bad_field",
                "reason": f"seen's seq must be between 1 and 2**63-1, got {seq}"}
    return nick, room, seq


class _Connection:
    __slots__ = ("server", "stream", "reader", "in_flight", "_resume")

    def __init__(self, server: ProcessorServer, stream: IOStream) -> None:
        self.server = server
        self.stream = stream
        self.reader = LineReader(max_line=server.max_line)
        self.in_flight = 0
        self._resume: asyncio.Event | None = None

    def write(self, line: bytes) -> None:
        if not self.stream.closed():
            try:
                self.stream.write(line)
            except StreamClosedError:
                pass

    def send(self, value: dict[str, Any]) -> None:
        self.write(encode_line(value))

    async def authenticate(self) -> list[Line]:
        """Greet, check the peer's hello, welcome it; returns the lines that followed the hello.

        Raises :class:`HandshakeFailed` (answer it and close) or ``StreamClosedError``.
        """
        nonce = new_nonce()
        self.send(processor_hello(nonce))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.hello_timeout
        lines: list[Line] = []
        while not lines:
            if self.reader.overflow is not None:
                raise HandshakeFailed("line_too_long", f"hello expected: {self.reader.overflow}")
            remaining = deadline - loop.time()
            try:
                data = await asyncio.wait_for(
                    self.stream.read_bytes(_READ_CHUNK, partial=True), max(remaining, 0.0)
                )
            except asyncio.TimeoutError:
                raise HandshakeFailed(
                    "hello_timeout", f"no hello within {self.server.hello_timeout:g} s"
                ) from None
            lines = self.reader.receive_data(data)
        their_nonce = check_web_hello(lines[0].value, key=self.server.key, our_nonce=nonce)
        self.send(welcome(key=self.server.key, their_nonce=their_nonce, our_nonce=nonce))
        return lines[1:]

    async def run(self, leftover: list[Line]) -> None:
        """Serve an authenticated peer, starting with what came after its hello."""
        try:
            self._handle_lines(leftover)
            while True:
                if self.in_flight >= self.server.max_in_flight:
                    self._resume = asyncio.Event()
                    await self._resume.wait()
                data = await self.stream.read_bytes(_READ_CHUNK, partial=True)
                self._handle_lines(self.reader.receive_data(data))
                if self.reader.overflow is not None:
                    reason = str(self.reader.overflow)
                    self.send({"op": "error", "code": "line_too_long", "reason": reason})
                    self.stream.close()
                    return
        except StreamClosedError:
            pass

    def _handle_lines(self, lines: list[Line]) -> None:
        for line in lines:
            if line.value is None:
                self.send({"op": "error", "code": "bad_json", "reason": line.error})
            else:
                self.handle(line.value)

    def handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "ping":
            self.send({"op": "pong"})
        elif op == "hello":
            self.send({"op": "error", "code": "bad_hello", "reason": "hello was already exchanged"})
        elif op == "seen":
            self._seen(request)
        elif op == "process":
            draft = self._parse_process(request)
            if draft is not None:
                self.in_flight += 1
                self.server.in_flight += 1
                self.server._idle.clear()
                asyncio.ensure_future(self._process(request["ref"], draft))
        else:
            self.send({
                "op": "error", "code": "unknown_op",
                "reason": f"unknown op {op!r}; known ops are hello, ping, process, seen",
                **({"ref": request["ref"]} if "ref" in request else {}),
            })

    def _seen(self, request: dict[str, Any]) -> None:
        marker = parse_seen(request)
        if isinstance(marker, dict):
            self.send(marker)
        elif self.server.on_seen is not None:
            self.server.on_seen(*marker)

    def _parse_process(self, request: dict[str, Any]) -> Draft | None:
        draft = parse_process(request, max_body_chars=self.server.max_body_chars)
        if isinstance(draft, dict):
            self.send(draft)
            return None
        return draft

    async def _process(self, ref: Any, draft: Draft) -> None:
        pipeline = self.server.pipeline
        assert pipeline is not None, "ProcessorServer.pipeline must be set before listening"
        try:
            message = await pipeline.run(draft)
        except Rejected as exc:
            self.send({"op": "rejected", "ref": ref, "code": exc.code, "reason": exc.reason})
        else:
            answer = {"op": "processed", "ref": ref, "message": message.to_wire()}
            if message.duplicate:
                answer["duplicate"] = True
            self.send(answer)
        finally:
            self.in_flight -= 1
            self.server.in_flight -= 1
            if not self.server.in_flight:
                self.server._idle.set()
            if self._resume is not None and self.in_flight < self.server.max_in_flight:
                self._resume.set()
                self._resume = None
