"""The web node's side of the link to one processor.

Theory of operation. One connection task keeps a TCP stream to the processor
open (TCP_NODELAY, reconnecting with capped exponential back-off), writes every
send assigned to it that is not yet written on the current stream, and matches
answers to sends by ``ref``. A new stream is used only once both ends have
proved the link key (:mod:`squall.handshake`): a peer that is not our own
processor never sees a request.

The sends themselves live in a :class:`~squall.processor.sends.PendingSends`
table that the :class:`~squall.processor.pool.ProcessorPool` owns; a link
carries the ones assigned to it. When its stream breaks it tells the pool
(``on_state``), which moves them to a link that is up; with none up they stay
and are written again on the next stream. That is safe because the processor's
store is idempotent on ``(room, nick, id)``: a request it had already stored is
answered with the original seq.

Every ``processed`` answer goes to ``on_processed`` — whether or not its sender
still waits — so a stored message is always published. The messages of one
read go together, in order, so that the hub can hand them to each member in
one write.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from ..backoff import backoff_delay
from ..config import Address
from ..errors import HandshakeFailed
from ..handshake import HELLO_TIMEOUT_SECONDS, check_welcome, new_nonce, web_hello
from ..lines import Line, LineReader, encode_line
from .sends import PendingSends, Send, route_answer

__all__ = ["ProcessorLink"]

log = logging.getLogger("squall.link")

_READ_CHUNK = 256 * 1024
# How long the processor may be unreachable before the web node logs a warning.
UNREACHABLE_WARNING_SECONDS = 3.0


class ProcessorLink:
    """The link to the processor at ``address``, carrying the sends assigned to it.

    :param sends: the table its sends belong to; an answer settles them there.
    :param on_state: called with this link whenever it comes up or goes down.
    :param max_unsent_seen: read markers kept while the link is down; default 10,000.
    """

    def __init__(
        self,
        address: Address,
        *,
        key: bytes,
        sends: PendingSends,
        on_processed: Callable[[list[dict[str, Any]]], None],
        on_updated: Callable[[dict[str, Any]], None] | None = None,
        on_state: Callable[[ProcessorLink], None] | None = None,
        max_unsent_seen: int = 10_000,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        max_line: int = 1024 * 1024,
    ) -> None:
        self.address = address
        self.key = key
        self.sends = sends
        self.on_processed = on_processed
        self.on_updated = on_updated
        self.on_state = on_state
        self.max_unsent_seen = max_unsent_seen
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.max_line = max_line
        self._carried: dict[int, Send] = {}  # ref → send assigned to this link, in ref order
        self._unsent_seen: dict[tuple[str, str], int] = {}
        self._stream: IOStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._refused: str | None = None  # why the last handshake failed, logged once
        self.connected = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Sends assigned to this link and not yet answered."""
        return len(self._carried)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def carry(self, send: Send) -> None:
        """Take ``send`` on: write it now if the link is up, else on the next stream."""
        send.owner = self
        self._carried[send.ref] = send
        self._write(send)

    def release(self) -> list[Send]:
        """Give up every send this link carries, oldest first (to move them elsewhere)."""
        released = list(self._carried.values())
        self._carried.clear()
        for send in released:
            send.owner = None
        return released

    def drop(self, send: Send) -> None:
        """Stop carrying ``send`` (its sender gave up before it was ever written)."""
        if self._carried.pop(send.ref, None) is not None:
            send.owner = None

    def report_seen(self, key: str, room: str, seq: int) -> None:
        """Tell the processor that user ``key`` was handed message ``seq`` of ``room``.

        Best effort: while the link is down the newest marker per user and room
        is kept (up to ``max_unsent_seen`` of them) and sent on reconnect.
        """
        marker = (key, room)
        if seq <= self._unsent_seen.get(marker, 0):
            return
        stream = self._stream
        if stream is not None and not stream.closed():
            try:
                stream.write(encode_line({"op": "seen", "nick": key, "room": room, "seq": seq}))
                return
            except StreamClosedError:
                pass
        if marker not in self._unsent_seen and len(self._unsent_seen) >= self.max_unsent_seen:
            self._unsent_seen.pop(next(iter(self._unsent_seen)))
        self._unsent_seen[marker] = seq

    def _write(self, send: Send) -> None:
        stream = self._stream
        if stream is None or stream.closed():
            return
        try:
            stream.write(send.line)
        except StreamClosedError:
            return
        send.written = True

    async def _run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        unreachable_since = loop.time()
        warned = False
        while not self._closing:
            try:
                stream = await TCPClient().connect(*self.address, max_buffer_size=4 * self.max_line)
            except (OSError, StreamClosedError) as exc:
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
                await self._serve(stream)
            except Exception:
                log.exception("processor link failed")
            finally:
                stream.close()
                self._stream = None
            unreachable_since = loop.time()
            if self.connected.is_set():
                self.connected.clear()
                attempt = 0
                if not self._closing:
                    log.warning("lost the processor link to %s:%d with %d requests in flight",
                                *self.address, len(self._carried))
                    if self.on_state is not None:
                        self.on_state(self)
            elif not self._closing:  # refused or silent: not our processor, or not yet
                await asyncio.sleep(backoff_delay(
                    attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random()
                ))
                attempt += 1

    async def _read_lines(self, stream: IOStream, reader: LineReader, timeout: float) -> list[Line]:
        """The next complete lines; raises HandshakeFailed after ``timeout`` s or an overlong line."""
        lines: list[Line] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not lines:
            if reader.overflow is not None:
                raise HandshakeFailed("line_too_long", str(reader.overflow))
            try:
                data = await asyncio.wait_for(
                    stream.read_bytes(_READ_CHUNK, partial=True), max(deadline - loop.time(), 0.0)
                )
            except asyncio.TimeoutError:
                raise HandshakeFailed("hello_timeout", f"no answer within {timeout:g} s") from None
            lines = reader.receive_data(data)
        return lines

    async def _handshake(self, stream: IOStream, reader: LineReader) -> list[Line]:
        """Prove our key and check the processor's proof; the lines that came after."""
        lines = await self._read_lines(stream, reader, HELLO_TIMEOUT_SECONDS)
        our_nonce = new_nonce()
        hello, their_nonce = web_hello(lines[0].value, key=self.key, our_nonce=our_nonce)
        stream.write(encode_line(hello))
        lines = lines[1:] or await self._read_lines(stream, reader, HELLO_TIMEOUT_SECONDS)
        check_welcome(lines[0].value, key=self.key, their_nonce=their_nonce, our_nonce=our_nonce)
        return lines[1:]

    async def _serve(self, stream: IOStream) -> None:
        stream.set_nodelay(True)
        reader = LineReader(max_line=self.max_line)
        # Nothing of our queue is written before the processor has proved
        # that it holds our key: a peer that is not our own processor must
        # not receive it.
        try:
            leftover = await self._handshake(stream, reader)
        except StreamClosedError:
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
        self._stream = stream
        for send in list(self._carried.values()):
            self._write(send)
        unsent_seen, self._unsent_seen = self._unsent_seen, {}
        for (key, room), seq in unsent_seen.items():
            self.report_seen(key, room, seq)
        self.connected.set()
        log.info("connected to the processor at %s:%d", *self.address)
        if self.on_state is not None:
            self.on_state(self)
        self._answer_all(leftover)
        while reader.overflow is None:
            try:
                lines = reader.receive_data(await stream.read_bytes(_READ_CHUNK, partial=True))
            except StreamClosedError:
                return
            self._answer_all(lines)
        log.error("processor sent an overlong line: %s", reader.overflow)

    def _answer_all(self, lines: list[Line]) -> None:
        """Answer what one read brought; its processed messages are published together."""
        processed: list[dict[str, Any]] = []
        for line in lines:
            if line.value is not None:
                self._answer(line.value, processed)
        if processed:
            self.on_processed(processed)

    def _answer(self, value: dict[str, Any], processed: list[dict[str, Any]]) -> None:
        if not route_answer(value, processed, settle=self._settle, on_processed=self.on_processed,
                            on_updated=self.on_updated) and value.get("op") != "pong":
            log.warning("unexpected line from the processor: %r", value)

    def _settle(self, ref: Any, answer: dict[str, Any]) -> None:
        # Only a send this link carries: after a move, the answer is the new link's to give.
        if isinstance(ref, int) and self._carried.pop(ref, None) is not None:
            self.sends.settle(ref, answer)

    async def close(self) -> None:
        """Disconnect and stop reconnecting (the pool waits for answers first)."""
        self._closing = True
        if self._stream is not None:
            self._stream.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
