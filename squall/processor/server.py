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

Each connection is a bare ``asyncio.Protocol``: the event loop hands it what
one read brought, :class:`~squall.lines.LineReader` splits it into lines, and
each ``process`` request starts one task, so requests are pipelined and
answered in whatever order they finish, matched by ``ref``. (Through Tornado's
``IOStream`` every read was a future and every answer a trip through its write
buffer: a third of a lone message's cost here.) A connection stops reading
while ``max_in_flight`` of its requests are unfinished, or while its answers
are not being read (above the transport's high-water mark), which pushes back
on the web node through TCP; a peer that lets ``max_write_buffer`` bytes of
answers pile up all the same is cut off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from ..errors import BadRequest, HandshakeFailed, Rejected
from ..handshake import HELLO_TIMEOUT_SECONDS, check_web_hello, new_nonce, processor_hello, welcome
from ..lines import Line, LineReader, encode_line
from ..files import MAX_NAME, is_file_id
from ..message import CHANGE_KINDS, MESSAGE, Draft
from ..protocol import (
    MAX_ATTACHMENTS, check_client_id, check_emoji, check_link_room, check_nick, check_room, check_seq,
)
from ..throttled_log import ThrottledLog
from .pipeline import Pipeline

__all__ = ["ProcessorServer", "MIN_TS", "MAX_TS", "parse_process", "parse_seen", "parse_event_fields"]

log = logging.getLogger("squall.processor")

_PROCESS_FIELDS = {"room": str, "nick": str, "id": str, "body": str, "ts": int}
# A `ts` is milliseconds since the epoch, stamped by a web node: anything before
# 1970 or after the year 9999 is no clock's reading, and would not even fit the
# store's integer column near 2**63.
MIN_TS = 0
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# Refused connections are logged at most once per this many seconds.
REFUSAL_LOG_SECONDS = 60.0
# Bytes of answers a web node has not read yet above which its connection is
# no longer read: far more than a live web node ever leaves (it reads 256 KiB
# at a time), and a bound on what one that stopped reading costs.
ANSWERS_HIGH_WATER = 1024 * 1024


class ProcessorServer:
    """Serves web nodes that prove ``key`` (:func:`squall.handshake.link_key`).

    Set :attr:`pipeline`, then call :meth:`listen`; :meth:`stop` stops
    accepting, :meth:`wait_idle` waits for the requests in flight.

    :param max_line: longest line accepted, in bytes; default 64 KiB.
    :param max_body_chars: longest body after trimming; default 4000.
    :param max_in_flight: unfinished requests per connection before it is no
        longer read; default 4096.
    :param max_write_buffer: bytes of unread answers before a connection is
        cut off; default 64 MiB.
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
        self.pipeline = pipeline
        self.key = key
        self.on_seen = on_seen
        self.max_line = max_line
        self.max_body_chars = max_body_chars
        self.max_in_flight = max_in_flight
        self.max_write_buffer = max_write_buffer
        self.hello_timeout = hello_timeout
        self.refusals = ThrottledLog(log, interval=REFUSAL_LOG_SECONDS)
        self.connections: set[_Connection] = set()  # authenticated ones
        self.in_flight = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()
        self._idle.set()

    async def listen(self, sockets: list[socket.socket]) -> None:
        """Start accepting on ``sockets`` (bound and listening, or about to be)."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self._servers.append(await loop.create_server(lambda: _Connection(self), sock=sock))

    def stop(self) -> None:
        """Stop accepting connections; those open are served on."""
        for server in self._servers:
            server.close()
        self._servers = []

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` s passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def send_to_all(self, value: dict[str, Any]) -> None:
        """Send an unasked line (``updated``) to every authenticated web node."""
        line = encode_line(value)
        for connection in self.connections:
            connection.write(line)

    def refused(self, peer: str, exc: HandshakeFailed) -> None:
        self.refusals.note(
            f"refused a processor-link connection from {peer}: {exc.code}: {exc.reason}",
            now=time.monotonic(),
        )


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
    attachments = _attachments(request.get("attachments", []))
    if attachments is None:
        return {"op": "rejected", "ref": ref, "code": "bad_attachment",
                "reason": f"attachments must be at most {MAX_ATTACHMENTS} attachment objects"}
    length = len(body.strip())
    if length > max_body_chars:
        return {"op": "rejected", "ref": ref, "code": "body_too_long",
                "reason": f"message body has {length} characters, more than the limit"
                          f" of {max_body_chars}"}
    draft = Draft(room=room, nick=nick, id=cid, body=body, ts=ts, attachments=attachments)
    event = parse_event_fields(request)
    if isinstance(event, BadRequest):
        return {"op": "rejected", "ref": ref, "code": event.code, "reason": event.reason}
    return dataclasses.replace(draft, **event) if event else draft


def parse_event_fields(request: dict[str, Any]) -> dict[str, Any] | BadRequest:
    """The optional fields of a ``process`` that is a change or a reply
    (``kind``, ``target``, ``emoji``, ``reply_to``, ``moderator``), checked as
    the web node checks them, as :class:`Draft` fields; or the refusal."""
    fields: dict[str, Any] = {}
    kind = request.get("kind", MESSAGE)
    if kind != MESSAGE:
        if kind not in CHANGE_KINDS:
            return BadRequest(f"kind must be one of {', '.join(CHANGE_KINDS)}", code="bad_field")
        fields["kind"] = kind
        try:
            fields["target"] = check_seq(request.get("target"), "target")
            if kind in ("react", "unreact"):
                fields["emoji"] = check_emoji(request.get("emoji"))
        except BadRequest as exc:
            return exc
        if request.get("moderator") is True:
            fields["moderator"] = True
    if request.get("reply_to") is not None:
        if kind != MESSAGE:
            return BadRequest("only a new message may be a reply", code="bad_field")
        try:
            fields["reply_to"] = check_seq(request["reply_to"], "reply_to")
        except BadRequest as exc:
            return exc
    return fields



# An attachment object's fields (squall.files.FileRecord.to_wire), as a web node sends them.
_ATTACHMENT_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "name": (str,), "type": (str,), "size": (int,), "url": (str,),
    "thumb": (str, type(None)), "width": (int, type(None)), "height": (int, type(None)),
}


def _attachments(value: object) -> tuple[dict[str, Any], ...] | None:
    """A process request's ``attachments``, or None if they are not what a web node sends."""
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        return None
    for item in value:
        if not isinstance(item, dict) or item.keys() != _ATTACHMENT_FIELDS.keys():
            return None
        for name, kinds in _ATTACHMENT_FIELDS.items():
            if not isinstance(item[name], kinds) or isinstance(item[name], bool):
                return None
        if not is_file_id(item["id"]) or not item["url"].startswith("/files/") or len(item["name"]) > MAX_NAME:
            return None
    return tuple(value)


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


class _Connection(asyncio.Protocol):
    """One web node's connection: the hello exchange, then its requests."""

    def __init__(self, server: ProcessorServer) -> None:
        self.server = server
        self.reader = LineReader(max_line=server.max_line)
        self.transport: asyncio.Transport | None = None
        self.peer = "a local socket"
        self.authenticated = False
        self.in_flight = 0
        self._nonce = new_nonce()
        self._hello_timer: asyncio.TimerHandle | None = None
        self._too_many = False  # max_in_flight unfinished: not reading
        self._unread = False  # answers not being read: not reading

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=ANSWERS_HIGH_WATER)
        self.send(processor_hello(self._nonce))
        self._hello_timer = asyncio.get_running_loop().call_later(
            self.server.hello_timeout, self._hello_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # refused, or cut off after an overlong line: nothing more is read
        lines = self.reader.receive_data(data)
        if not self.authenticated:
            if not lines:
                if self.reader.overflow is not None:
                    self._refuse(HandshakeFailed("line_too_long", f"hello expected: {self.reader.overflow}"))
                return
            if not self._authenticate(lines[0]):
                return
            lines = lines[1:]
        self._handle_lines(lines)
        if self.reader.overflow is not None:
            self.send({"op": "error", "code": "line_too_long", "reason": str(self.reader.overflow)})
            self._close()

    def pause_writing(self) -> None:
        self._unread = True
        self._read_or_not()

    def resume_writing(self) -> None:
        self._unread = False
        self._read_or_not()

    # -- the hello exchange ---------------------------------------------

    def _authenticate(self, hello: Line) -> bool:
        """Check the peer's hello and welcome it, or refuse it."""
        try:
            their_nonce = check_web_hello(hello.value, key=self.server.key, our_nonce=self._nonce)
        except HandshakeFailed as exc:
            self._refuse(exc)
            return False
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self.send(welcome(key=self.server.key, their_nonce=their_nonce, our_nonce=self._nonce))
        self.authenticated = True
        self.server.connections.add(self)
        return True

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if not self.authenticated:
            self._refuse(HandshakeFailed("hello_timeout", f"no hello within {self.server.hello_timeout:g} s"))

    def _refuse(self, exc: HandshakeFailed) -> None:
        self.send({"op": "error", "code": exc.code, "reason": exc.reason})
        self._close()
        self.server.refused(self.peer, exc)

    # -- output ---------------------------------------------------------

    def write(self, line: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(line)
        if transport.get_write_buffer_size() > self.server.max_write_buffer:
            log.warning("closing the link from %s: %d bytes of answers unread",
                        self.peer, transport.get_write_buffer_size())
            transport.abort()

    def send(self, value: dict[str, Any]) -> None:
        self.write(encode_line(value))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # after what is buffered has been written

    def _read_or_not(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._too_many or self._unread:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # -- requests -------------------------------------------------------

    def _handle_lines(self, lines: list[Line]) -> None:
        for line in lines:
            if line.value is None:
                self.send({"op": "error", "code": "bad_json", "reason": line.error})
            else:
                self.handle(line.value)

    def handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "process":
            draft = self._parse_process(request)
            if draft is not None:
                self.in_flight += 1
                self.server.in_flight += 1
                self.server._idle.clear()
                if self.in_flight >= self.server.max_in_flight and not self._too_many:
                    self._too_many = True
                    self._read_or_not()
                asyncio.ensure_future(self._process(request["ref"], draft))
        elif op == "ping":
            self.send({"op": "pong"})
        elif op == "hello":
            self.send({"op": "error", "code": "bad_hello", "reason": "hello was already exchanged"})
        elif op == "seen":
            self._seen(request)
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
            if self._too_many and self.in_flight < self.server.max_in_flight:
                self._too_many = False
                self._read_or_not()
