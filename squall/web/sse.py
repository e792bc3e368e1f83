"""``/api/rooms/R/events``: Server-Sent Events for one room.

Each message is an event with ``id: <seq>``, so a browser's EventSource resumes
by itself with ``Last-Event-ID``; ``?since=`` does the same for other clients.
Presence and link-preview updates come as ``event: presence`` and
``event: update`` without an id. One node-wide timer writes the heartbeat
comment to every stream, rather than a timer per connection.

Everything written to a stream counts against ``outbound_bytes``, the
``joined`` event and heartbeats as much as messages. A stream that would go
past it is closed at once, not ended politely: ending would leave its backlog
queued for as long as the client keeps not reading. EventSource reconnects
with ``Last-Event-ID`` either way.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from tornado.iostream import StreamClosedError

from ..frames import Batch, Broadcast
from ..limits import Outbound, low_water, outbound_verdict
from ..presence import members_fields
from ..protocol import check_room, int_param, nick_key
from .base import BaseHandler, query_argument
from .longpoll import MAX_SEQ
from .streams import buffered_bytes

__all__ = ["EventsHandler"]

log = logging.getLogger("squall.web")


class EventsHandler(BaseHandler):
    closed = False
    _room: str = ""
    _key: str = ""  # the nick, casefolded
    session_id: str = ""  # ends with that session: WebNode.end_sessions
    _done: asyncio.Future[None] | None = None

    async def get(self, room_name: str) -> None:
        nick = self.current_nick()
        assert self.session is not None
        self.session_id = self.session.id
        room_name = check_room(room_name)
        since_raw = query_argument(self.request, "since")
        if since_raw is None:  # present but empty is a bad since, not a missing one
            since_raw = self.request.headers.get("Last-Event-ID")
        since = int_param(since_raw, "since", default=None, low=0, high=MAX_SEQ)
        await self.node.access.may_read(room_name, nick_key(nick))  # 403 before the stream starts

        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        self._room = room_name
        self._key = nick_key(nick)
        self._done = asyncio.get_running_loop().create_future()
        node = self.node
        address = self.address_key
        # An SSE stream is a join (presence to the whole room) for its life: a
        # reconnect loop is a join/leave flood.
        node.limits.check_join(self._key, None, now=time.monotonic())
        node.limits.open_connection(address)  # refused (429/503) before the stream starts
        try:
            room, cursor = await node.hub.join(room_name, since)
            node.event_streams.add(self)
            node.access.note_join(room_name, self._key)
            node.announce(node.presence.connect(room_name, nick, self._key))
            page = await node.room_presence.page(room_name, after=None, limit=node.settings.members_page)
            joined = {"type": "joined", "room": room_name, "seq": room.last_seq, **members_fields(page)}
            self._write(b"retry: 2000\nevent: joined\ndata: " + orjson.dumps(joined) + b"\n\n")
            await node.hub.catch_up(self, room, cursor)
            await self._done
        finally:
            self._leave()
            node.limits.close_connection(address)

    @property
    def key(self) -> str:
        """The casefolded nick of the stream's user."""
        return self._key

    def tell(self, room: str, name: str, value: dict[str, object]) -> None:
        """An event for this stream's user alone (``seen``), if it reads ``room``."""
        if room == self._room and not self.closed:
            self._write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(value) + b"\n\n")

    def evict(self, room: str, code: str, reason: str) -> None:
        """Membership of the room ended (kick, ban, removal): say why, and end the stream."""
        if room != self._room or self.closed:
            return
        self._write(b"event: refused\ndata: " + orjson.dumps({"type": "error", "room": room, "code": code,
                                                           "reason": reason}) + b"\n\n")
        self.end()

    # -- hub.Member -----------------------------------------------------

    def subscribed(self, room: str) -> bool:
        return room == self._room and not self.closed

    def deliver(self, broadcast: Broadcast) -> None:
        if self.closed:
            return
        stream = self.request.connection.stream  # type: ignore[union-attr]
        verdict = outbound_verdict(
            buffered=buffered_bytes(stream), size=len(broadcast.sse_event),
            limit=self.node.settings.outbound_bytes, ephemeral=broadcast.ephemeral,
        )
        if verdict is Outbound.DROP:
            return
        if verdict is Outbound.CUT:
            self._too_slow()
            return
        self._write(broadcast.sse_event)
        if broadcast.mentions:
            self.node.note_seen(self._key, (broadcast,))

    def deliver_batch(self, batch: Batch) -> None:
        """Consecutive messages (a catch-up chunk, or several that came together)
        as one write and one flush, under the same limit as one by one."""
        if self.closed:
            return
        data = b"".join(broadcast.sse_event for broadcast in batch.broadcasts)
        stream = self.request.connection.stream  # type: ignore[union-attr]
        if outbound_verdict(
            buffered=buffered_bytes(stream), size=len(data),
            limit=self.node.settings.outbound_bytes, ephemeral=False,
        ) is Outbound.CUT:
            self._too_slow()
            return
        self._write(data)
        if batch.mentions:
            self.node.note_seen(self._key, batch.broadcasts)

    async def drain(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        if self.closed or buffered_bytes(stream) <= low_water(self.node.settings.outbound_bytes):
            return
        try:
            await self.flush()
        except StreamClosedError:
            self.closed = True

    # -- node-wide timers -------------------------------------------------

    def heartbeat(self) -> None:
        self._write(b": heartbeat\n\n")

    def end(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        stream = self.request.connection.stream  # type: ignore[union-attr]
        buffered = buffered_bytes(stream)
        if buffered and outbound_verdict(
            buffered=buffered, size=len(data), limit=self.node.settings.outbound_bytes, ephemeral=False,
        ) is Outbound.CUT:
            self._too_slow()
            return
        try:
            self.write(data)
            self.flush()
        except StreamClosedError:
            self.closed = True
            self.end()

    def _too_slow(self) -> None:
        log.info("closing the event stream of %s: over %d bytes behind", self._key, self.node.settings.outbound_bytes)
        self.closed = True
        self.request.connection.stream.close()  # type: ignore[union-attr]
        self.end()

    def on_connection_close(self) -> None:
        self.closed = True
        self.end()

    def _leave(self) -> None:
        self.closed = True
        node = self.node
        if self in node.event_streams:
            node.event_streams.discard(self)
            node.hub.leave(self, self._room, now=time.monotonic())
            node.announce(node.presence.disconnect(self._room, self._key))
