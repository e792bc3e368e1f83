"""The web node's side of the processor link.

Theory of operation. :meth:`ProcessorLink.process` puts a request in a bounded
table of unanswered requests (``max_pending``) and waits for its answer for at
most ``send_timeout`` seconds. One connection task keeps a TCP stream to the
processor open (TCP_NODELAY, reconnecting with capped exponential back-off),
writes every request not yet written on the current stream, and matches
answers to requests by ``ref``. A new stream is used only once both ends have
proved the link key (:mod:`squall.handshake`): a peer that is not our own
processor never sees a request.

When the stream breaks, every unanswered request is written again on the next
one. That is safe because the processor's store is idempotent on
``(room, nick, id)``: a request it had already stored is answered with the
original seq. A request that times out before it was ever written is dropped
(its sender got ``unavailable`` and may retry with the same id); one that was
written stays until it is answered, so that a message stored just before a
crash is still published.

Every ``processed`` answer goes to ``on_processed`` — whether or not its sender
still waits — so a stored message is always published. The messages of one
read go together, in order, so that the hub can hand them to each member in
one write. Identical requests
(same room, nick and id) in flight at once share one entry.

The stream is a bare ``asyncio.Protocol`` (:class:`_LinkConnection`): once
authenticated, each read's lines are answered from ``data_received`` itself,
and each request is one ``transport.write`` — no future per read and no
write-buffer machinery per request, which through Tornado's ``IOStream`` were
a good part of what a lone message cost the web node. A sender waits on a
future of its own with a timer beside it, not ``wait_for(shield(...))``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, cast

from ..backoff import backoff_delay
from ..config import Address
from ..errors import HandshakeFailed, Internal, Rejected, Unavailable
from ..handshake import HELLO_TIMEOUT_SECONDS, check_welcome, new_nonce, web_hello
from ..lines import Line, LineReader, encode_line
from ..protocol import nick_key

__all__ = ["ProcessorLink"]

log = logging.getLogger("squall.link")

# How long the processor may be unreachable before the web node logs a warning.
UNREACHABLE_WARNING_SECONDS = 3.0


class _Request:
    __slots__ = ("ref", "key", "line", "waiters", "written_on")

    def __init__(self, ref: int, key: tuple[str, str, str], line: bytes) -> None:
        self.ref = ref
        self.key = key
        self.line = line
        # One future per sender waiting (identical sends share the request).
        self.waiters: list[asyncio.Future[dict[str, Any]]] = []
        self.written_on: int | None = None  # the stream generation it was written on

    def answer(self, value: dict[str, Any]) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(value)
        self.waiters = []


class _LinkConnection(asyncio.Protocol):
    """One TCP connection to the processor: lines in, bytes out.

    Until :attr:`on_lines` is set (after the hello exchange), received lines
    wait in :attr:`lines` for :meth:`next_lines`; from then on they go to
    ``on_lines`` as each read brings them.
    """

    def __init__(self, max_line: int) -> None:
        loop = asyncio.get_running_loop()
        self.reader = LineReader(max_line=max_line)
        self.transport: asyncio.Transport | None = None
        self.lines: list[Line] = []
        self.on_lines: Callable[[list[Line]], None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self._arrived: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.reader.overflow is not None:
            return  # closing
        lines = self.reader.receive_data(data)
        if self.on_lines is not None:
            self.on_lines(lines)
        else:
            self.lines += lines
            self._wake()
        if self.reader.overflow is not None:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def write(self, data: bytes) -> bool:
        """Write ``data`` if the connection is still up; False if it is not."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def next_lines(self) -> list[Line]:
        """The lines received and not yet taken, once there is one.

        Raises ``ConnectionError`` if the connection ends first.
        """
        while not self.lines:
            if self.reader.overflow is not None:
                raise HandshakeFailed("line_too_long", str(self.reader.overflow))
            if self.closed.done():
                raise ConnectionError("the processor closed the link")
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        lines, self.lines = self.lines, []
        return lines

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)


def _expire(waiter: asyncio.Future[dict[str, Any]]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class ProcessorLink:
    def __init__(
        self,
        address: Address,
        *,
        key: bytes,
        on_processed: Callable[[list[dict[str, Any]]], None],
        on_updated: Callable[[dict[str, Any]], None] | None = None,
        max_pending: int = 10_000,
        send_timeout: float = 10.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        max_line: int = 1024 * 1024,
    ) -> None:
        self.address = address
        self.key = key
        self.on_processed = on_processed
        self.on_updated = on_updated
        self.max_pending = max_pending
        self.send_timeout = send_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.max_line = max_line
        self._refs = itertools.count(1)
        self._pending: dict[int, _Request] = {}  # ref → request, in ref order
        self._by_key: dict[tuple[str, str, str], _Request] = {}
        self._unsent_seen: dict[tuple[str, str], int] = {}
        self._connection: _LinkConnection | None = None
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._refused: str | None = None  # why the last handshake failed, logged once
        self.connected = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def process(self, *, room: str, nick: str, id: str, body: str, ts: int) -> dict[str, Any]:
        """The processed message as the processor returned it.

        Raises :class:`Rejected` when the pipeline refuses it and
        :class:`Unavailable` when the queue is full or no answer came in time.
        """
        key = (room, nick_key(nick), id)
        request = self._by_key.get(key)
        if request is None:
            if self._closing:
                raise Unavailable("the server is shutting down; retry with the same id")
            if len(self._pending) >= self.max_pending:
                raise Unavailable(
                    f"{len(self._pending)} messages are already waiting for the processor"
                    f" (limit {self.max_pending}); retry with the same id"
                )
            ref = next(self._refs)
            line = encode_line({
                "op": "process", "ref": ref, "room": room, "nick": nick, "id": id,
                "body": body, "ts": ts,
            })
            request = _Request(ref, key, line)
            self._pending[ref] = request
            self._by_key[key] = request
            self._write(request)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        request.waiters.append(waiter)
        timer = loop.call_later(self.send_timeout, _expire, waiter)
        try:
            answer = await waiter
        except asyncio.TimeoutError:
            if request.waiters:
                request.waiters.remove(waiter)
            if request.written_on is None and not request.waiters:
                self._forget(request)
            raise Unavailable(
                f"the processor did not answer within {self.send_timeout:g} s;"
                " retry with the same id"
            ) from None
        finally:
            timer.cancel()
        if answer["op"] == "rejected":
            code = str(answer.get("code", "rejected"))
            error = Internal if code == "internal" else Rejected
            raise error(str(answer.get("reason", "")), code=code)
        message: dict[str, Any] = answer["message"]
        return message

    def report_seen(self, key: str, room: str, seq: int) -> None:
        """Tell the processor that user ``key`` was handed message ``seq`` of ``room``.

        Best effort: while the link is down the newest marker per user and room
        is kept (up to ``max_pending`` of them) and sent on reconnect.
        """
        marker = (key, room)
        if seq <= self._unsent_seen.get(marker, 0):
            return
        connection = self._connection
        if connection is not None and connection.write(
            encode_line({"op": "seen", "nick": key, "room": room, "seq": seq})
        ):
            return
        if marker not in self._unsent_seen and len(self._unsent_seen) >= self.max_pending:
            self._unsent_seen.pop(next(iter(self._unsent_seen)))
        self._unsent_seen[marker] = seq

    def _forget(self, request: _Request) -> None:
        self._pending.pop(request.ref, None)
        if self._by_key.get(request.key) is request:
            del self._by_key[request.key]

    def _write(self, request: _Request) -> None:
        connection = self._connection
        if connection is not None and connection.write(request.line):
            request.written_on = self._generation

    async def _run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        unreachable_since = loop.time()
        warned = False
        while not self._closing:
            try:
                _, connection = await loop.create_connection(
                    lambda: _LinkConnection(self.max_line), *self.address
                )
            except OSError as exc:
                delay = backoff_delay(
                    attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random()
                )
                # A processor that is starting (or restarting) takes a moment;
                # only one that stays away is worth a warning.
                if not warned and loop.time() - unreachable_since > UNREACHABLE_WARNING_SECONDS:
                    log.warning("processor at %s:%d unreachable (%s); still trying", *self.address, exc)
                    warned = True
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if warned:
                log.warning("processor at %s:%d reachable again", *self.address)
            warned = False
            try:
                await self._serve(connection)
            except Exception:
                log.exception("processor link failed")
            finally:
                connection.close()
                self._connection = None
            unreachable_since = loop.time()
            if self.connected.is_set():
                self.connected.clear()
                attempt = 0
                if not self._closing:
                    log.warning("lost the processor link; %d requests will be resent", len(self._pending))
            elif not self._closing:  # refused or silent: not our processor, or not yet
                await asyncio.sleep(backoff_delay(
                    attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random()
                ))
                attempt += 1

    async def _handshake(self, connection: _LinkConnection) -> list[Line]:
        """Prove our key and check the processor's proof; the lines that came after.

        Raises :class:`HandshakeFailed` (also after ``HELLO_TIMEOUT_SECONDS``
        without an answer) or ``ConnectionError``.
        """
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_SECONDS):
                lines = await connection.next_lines()
                our_nonce = new_nonce()
                hello, their_nonce = web_hello(lines[0].value, key=self.key, our_nonce=our_nonce)
                connection.write(encode_line(hello))
                lines = lines[1:] or await connection.next_lines()
        except TimeoutError:
            raise HandshakeFailed(
                "hello_timeout", f"no answer within {HELLO_TIMEOUT_SECONDS:g} s"
            ) from None
        check_welcome(lines[0].value, key=self.key, their_nonce=their_nonce, our_nonce=our_nonce)
        return lines[1:]

    async def _serve(self, connection: _LinkConnection) -> None:
        # Nothing of our queue is written before the processor has proved
        # that it holds our key: a peer that is not our own processor must
        # not receive it.
        try:
            leftover = await self._handshake(connection)
        except ConnectionError:
            return  # the processor went away again; _run reconnects
        except HandshakeFailed as exc:
            reason = f"{exc.code}: {exc.reason}"
            if reason != self._refused:  # once per kind of failure, not per retry
                if exc.code == "hello_timeout":  # e.g. a processor child still starting
                    log.warning("processor at %s:%d did not greet (%s); retrying", *self.address, reason)
                else:
                    log.error("processor link to %s:%d not authenticated (%s); is it another"
                              " instance's processor, or does its secret differ?", *self.address, reason)
                self._refused = reason
            return
        self._refused = None
        self._generation += 1
        self._connection = connection
        for request in list(self._pending.values()):
            self._write(request)
        unsent_seen, self._unsent_seen = self._unsent_seen, {}
        for (key, room), seq in unsent_seen.items():
            self.report_seen(key, room, seq)
        self.connected.set()
        log.info("connected to the processor at %s:%d", *self.address)
        # From here on each read is answered as it arrives, in data_received.
        leftover += connection.lines
        connection.lines = []
        connection.on_lines = self._answer_all
        self._answer_all(leftover)
        await connection.closed
        if connection.reader.overflow is not None:
            log.error("processor sent an overlong line: %s", connection.reader.overflow)

    def _answer_all(self, lines: list[Line]) -> None:
        """Answer what one read brought; its processed messages are published together."""
        processed: list[dict[str, Any]] = []
        for line in lines:
            if line.value is not None:
                self._answer(line.value, processed)
        if processed:
            self.on_processed(processed)

    def _answer(self, value: dict[str, Any], processed: list[dict[str, Any]]) -> None:
        op = value.get("op")
        if op in ("processed", "rejected"):
            request = self._pending.get(value.get("ref"))  # type: ignore[arg-type]
            if op == "processed":
                processed.append(value["message"])
            if request is not None:
                self._forget(request)
                request.answer(value)
        elif op == "updated":
            if processed:  # keep the order: messages first, then what updates them
                self.on_processed(processed[:])
                processed.clear()
            if self.on_updated is not None:
                self.on_updated(value)
        elif op == "error":
            log.error("processor refused a request: %s", value)
            request = self._pending.get(value.get("ref"))  # type: ignore[arg-type]
            if request is not None:
                self._forget(request)
                request.answer({
                    "op": "rejected", "code": "internal",
                    "reason": "the server could not process this message",
                })
        elif op != "pong":
            log.warning("unexpected line from the processor: %r", value)

    async def close(self, *, timeout: float) -> None:
        """Stop taking sends, wait up to ``timeout`` s for answers, then disconnect."""
        self._closing = True
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[dict[str, Any]]] = []
        for request in self._pending.values():
            if request.written_on is not None:
                waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
                request.waiters.append(waiter)
                waiting.append(waiter)
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        if self._connection is not None:
            self._connection.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
