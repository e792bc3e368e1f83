"""The web node: wires the hub, the bus, the store (read side), presence and the
processor link together, and owns the Tornado application.

Every chat send, whatever its transport, goes through :meth:`WebNode.send`;
every processed message comes back through :meth:`WebNode._on_processed` and
leaves for the bus, encoded once. The node is the bus's
:class:`~squall.bus.Receiver`: what the bus brings goes to the hub (its fan-out
timed for /metrics), and sessions another node ended are ended here too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import tornado.web
from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream
from tornado.log import access_log
from redis.exceptions import RedisError
from tornado.netutil import bind_sockets

from ..address import HostPolicy, client_address, default_allowed_hosts, forwarded_https, parse_networks
from ..bus import Bus, open_bus
from ..coalesce import BIG_ROOM_SPACING, Change, Coalescer, encode_presence, encode_typing
from ..config import Settings
from ..errors import ClientError, Forbidden, Misdirected, Unavailable
from ..frames import Broadcast
from ..handshake import link_key
from ..hub import Hub
from ..limits import Counters, Limits, Rate
from ..listener import Listener
from ..metrics import NodeMetrics
from ..order import InOrder
from ..presence import LocalPresence, Presence, PresenceTable, Reach, Transition
from ..processor.pool import ProcessorPool
from ..turns import Turns
from ..message import wire_mentions
from ..protocol import Change as MessageChange, nick_key
from ..queue.client import QueueClient
from ..store import Store, open_store
from .access import Access
from .auth import MAX_CLOCK_SKEW, TokenCache, load_or_create_secret
from .base import JSONErrors, redact_uri
from .connections import CountingHTTPServer
from .files import Files
from .passwords import Passwords
from .longpoll import PollConnection, PollFirst
from .readiness import Canary, Readiness
from .websocket import CLOSE_UNAUTHORIZED, fan_out

__all__ = ["WebNode"]

log = logging.getLogger("squall.web")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
# Connections the kernel queues for accept(): Tornado's default, 128, drops the
# SYNs of a reconnect storm (each dropped one costs its client a second or more
# of retransmission). Linux caps it at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 4096
# WebSocket joins started per event-loop turn (squall/turns.py): a batch of
# them, member pages and catch-ups included, takes a few milliseconds, and a
# live message waits for one batch at most, however many clients come back at once.
JOINS_PER_TURN = 64
# How often the node sweeps expired long-poll presence, idle rooms, idle
# connections and old rate buckets.
HOUSEKEEPING_SECONDS = 1.0
# A scrape waits at most this long for the queue's figures from Redis.
QUEUE_SCRAPE_TIMEOUT = 1.0
# How often guests whose every token has expired are deleted from the users table.
FORGET_GUESTS_SECONDS = 3600.0
# How often session rows too old for any token to be valid are deleted.
SESSION_PRUNE_SECONDS = 3600.0


class StaticFiles(JSONErrors, tornado.web.StaticFileHandler):
    """The page's scripts, styles and catalogues; never sniffed as another type.
    Errors are JSON, as everywhere else."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

    def parse_url_path(self, url_path: str) -> str:
        # Tornado routes /favicon.ico here by itself; the page's icon is an SVG.
        return "favicon.svg" if url_path == "favicon.ico" else super().parse_url_path(url_path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        # A NUL reaches os.path.realpath as ValueError, a 500 with a traceback.
        if _CONTROL_CHARACTER.search(absolute_path):
            raise tornado.web.HTTPError(400, "a static file name has no control characters")
        try:
            return super().validate_absolute_path(root, absolute_path)
        except (ValueError, OSError):
            raise tornado.web.HTTPError(404, "no such static file") from None

    def prepare(self) -> None:
        node: WebNode = self.settings["node"]
        try:
            node.check_host(self.request.headers.get("Host"))
        except Misdirected as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(orjson.dumps(exc.to_dict()))


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, quieter: a long-poller makes a request per message,
    so successful requests are logged at DEBUG and only failures above it."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if status in (421, 429) or getattr(handler, "counted_elsewhere", False):
        level = logging.DEBUG  # refusals by a limit: counted in /api/health; a flood must not flood the log
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, redact_uri(request.uri or ""),
                       request.remote_ip, 1000.0 * request.request_time())


class WebNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = load_or_create_secret(settings.secret, settings.data_dir)
        self.store: Store = open_store(
            settings.database_url, pool_size=settings.database_pool_size, timeout=settings.database_timeout
        )
        self.tokens = TokenCache(
            self.secret, session_active=self.store.session_active,
            max_age_days=settings.token_max_age_days,
            # Every open connection's token known at once, and room for as many coming back.
            size=max(10_000, settings.max_connections),
        )
        self.passwords = Passwords()
        # Who may read, post in and moderate which room (squall/rooms.py has the rules).
        self.access = Access(self.store, admins=settings.admins)
        self.bus: Bus = open_bus(
            settings.bus, prefix=settings.bus_prefix, max_queue=settings.bus_max_queue,
            reconnect_min=settings.reconnect_min, reconnect_max=settings.reconnect_max,
            ping_interval=settings.bus_ping_interval,
        )
        # Joins, and catch-ups woken by a store read, take turns with live messages.
        self.joins = Turns(per_turn=JOINS_PER_TURN)
        self.hub = Hub(
            self.store,
            bus=self.bus,
            recent_per_room=settings.recent_per_room,
            backlog_page=settings.backlog_page,
            history_on_join=settings.history_on_join,
            # A chunk of backlog written after a drain to low water (half of it)
            # stays well under outbound_bytes.
            catch_up_chunk_bytes=min(64 * 1024, settings.outbound_bytes // 4),
            turns=self.joins,
            fan_out=fan_out,
        )
        # This node's connections and polls; `room_presence` is what every node's
        # members see (one node: the same table; docs/presence.md).
        self.presence = PresenceTable(grace=settings.poll_grace)
        self.room_presence: Presence = _room_presence(settings, self.presence, self.bus)
        self.coalescer = Coalescer(interval=settings.presence_interval)
        self._presence_timer: asyncio.TimerHandle | None = None
        self._presence_due = 0.0  # when _presence_timer fires (time.monotonic())
        self._presence_publishing = False
        self.link = _processors(settings, link_key(self.secret), self._on_processed, self._on_updated)
        self.files = Files(settings, self.store, self.access)
        self._send_order = InOrder()  # one user's sends reach the processor in the order they came
        self.websockets: set[Any] = set()  # open WebSocket handlers
        self.event_streams: set[Any] = set()  # open SSE handlers
        self.poll_connections: set[PollConnection] = set()  # connections serving long-polls
        self._polls_gone: asyncio.Event | None = None  # set at shutdown once they are all closed
        self.counters = Counters()  # every refusal, by code and limit (/api/health)
        self.limits = _limits(settings, self.counters)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.metrics = NodeMetrics(self.counters)
        self.metrics_allow = parse_networks(settings.metrics_allow)
        self.canary = Canary(self.link, self.store, deadline=settings.ready_timeout)
        self.readiness = Readiness(self.canary.run, cache=settings.ready_cache)
        self._watch()
        self.hosts = HostPolicy(
            settings.allowed_hosts or default_allowed_hosts(settings.host, settings.public_url)
        )
        self._server: CountingHTTPServer | None = None
        self._listener: Listener | None = None
        self._router: PollFirst | None = None
        self._housekeeping: PeriodicCallback | None = None
        self._heartbeat: PeriodicCallback | None = None
        self._forget_guests: PeriodicCallback | None = None
        self._session_pruning: PeriodicCallback | None = None
        self.stopping = False

    def _watch(self) -> None:
        """Bind the metrics read at scrape to this node's state."""
        metrics = self.metrics
        metrics.connections.labels("websocket").set_function(lambda: len(self.websockets))
        metrics.connections.labels("sse").set_function(lambda: len(self.event_streams))
        metrics.connections.labels("longpoll").set_function(lambda: len(self.poll_connections))
        metrics.deliveries.set_function(lambda: self.hub.deliveries)
        metrics.presence_users.set_function(self.presence.users_online)
        metrics.presence_memberships.set_function(self.presence.memberships)
        for link in getattr(self.link, "links", ()):  # TCP links; the queue has none
            metrics.watch_link(link)
        if hasattr(self.bus, "lag_observer"):  # the Redis bus; the local one has no lag
            self.bus.lag_observer = metrics.bus_lag_seconds.observe

    async def read_queue_backlog(self) -> None:
        """Set the queue's depth and pending gauges from Redis, for a scrape (with --queue)."""
        if not isinstance(self.link, QueueClient):
            return
        try:
            async with asyncio.timeout(QUEUE_SCRAPE_TIMEOUT):
                depth, pending = await self.link.backlog()
        except (RedisError, OSError, TimeoutError):
            depth = pending = math.nan  # unknown, not zero: an empty queue and a dead Redis differ
        self.metrics.queue_depth.set(depth)
        self.metrics.queue_pending.set(pending)

    # -- life cycle -----------------------------------------------------

    def make_app(self) -> tornado.web.Application:
        from .base import NotFoundHandler
        from .handlers import routes

        return tornado.web.Application(
            routes(self),
            default_handler_class=NotFoundHandler,
            default_handler_args={"node": self},
            static_path=str(STATIC_DIR),
            static_handler_class=StaticFiles,
            node=self,
            template_path=str(STATIC_DIR),
            xsrf_cookies=True,
            websocket_max_message_size=self.settings.max_frame_bytes,
            compress_response=False,
            log_function=log_request,
        )

    async def start(self) -> None:
        await self.store.open()
        await self.bus.start(self)
        await self.room_presence.start()
        self.link.start()
        app = self.make_app()
        settings = self.settings
        self._router = PollFirst(app, self)
        self._server = CountingHTTPServer(
            self._router,
            xheaders=False,
            max_body_size=settings.max_body_bytes * 2,
            # Tornado's wait for each request head after the first (the first
            # gets header_timeout, see PollFirst), and for a body.
            idle_connection_timeout=settings.idle_timeout,
            body_timeout=settings.idle_timeout,
        )
        self._server.count_in(self.limits, trusted_proxies=self.trusted_proxies)
        # Our own accept loop rather than HTTPServer.listen: it backs off when
        # the process runs out of file descriptors instead of spinning.
        self._listener = Listener(
            bind_sockets(settings.port, settings.host, backlog=LISTEN_BACKLOG), self._accepted
        )
        self._listener.start()
        self._housekeeping = PeriodicCallback(self._sweep, HOUSEKEEPING_SECONDS * 1000)
        self._housekeeping.start()
        self._heartbeat = PeriodicCallback(self._sse_heartbeat, self.settings.sse_heartbeat * 1000)
        self._heartbeat.start()
        self._forget_guests = PeriodicCallback(self._start_forgetting_guests, FORGET_GUESTS_SECONDS * 1000)
        self._forget_guests.start()
        await self._prune_sessions()
        self._session_pruning = PeriodicCallback(self._prune_sessions, SESSION_PRUNE_SECONDS * 1000)
        self._session_pruning.start()

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        assert self._listener is not None
        return self._listener.port

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        assert self._server is not None
        self._server.handle_stream(IOStream(connection), address)

    async def stop(self) -> None:
        """Stop accepting, say goodbye to clients, wait for in-flight sends, close."""
        self.stopping = True
        if self._listener is not None:
            self._listener.stop()
        if self._server is not None:
            self._server.stop()
        for callback in (self._housekeeping, self._heartbeat, self._forget_guests, self._session_pruning):
            if callback is not None:
                callback.stop()
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        for handler in list(self.websockets):
            handler.close(1001, "server shutting down")
        self.hub.answer_all_waiters()
        for connection in list(self.poll_connections):
            connection.close_if_idle(now=time.monotonic(), idle_for=0)
        for stream in list(self.event_streams):
            stream.end()
        await self.link.close(timeout=self.settings.shutdown_timeout)
        if self.poll_connections:
            # Those still reading the store answer, then hang up, by themselves.
            self._polls_gone = asyncio.Event()
            try:
                await asyncio.wait_for(self._polls_gone.wait(), self.settings.shutdown_timeout)
            except TimeoutError:
                for connection in list(self.poll_connections):
                    connection.close()
        if self._server is not None:
            await asyncio.wait_for(self._server.close_all_connections(), self.settings.shutdown_timeout)
        await self.room_presence.close()
        await self.access.flush_joins()
        await self.bus.close()
        await self.store.close()
        self.passwords.close()
        self.files.close()

    def serve_stream(self, stream: IOStream, address: Any) -> None:
        """Serve a connection handed back by a :class:`PollConnection` with Tornado."""
        if self._server is None or self.stopping:
            stream.close()
        else:
            self._server.handle_stream(stream, address)

    def poll_connection_gone(self, connection: PollConnection) -> None:
        self.poll_connections.discard(connection)
        if self._polls_gone is not None and not self.poll_connections:
            self._polls_gone.set()

    # -- who is asking -----------------------------------------------------

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a connection from ``peer`` (see :mod:`squall.address`)."""
        return client_address(peer, forwarded_for, self.trusted_proxies)

    def via_https(self, peer: str, forwarded_proto: str | None) -> bool:
        """Whether the client reached us over HTTPS (public URL, or a trusted proxy says so)."""
        return self.settings.public_url.startswith("https:") or forwarded_https(
            peer, forwarded_proto, self.trusted_proxies
        )

    def check_host(self, host: str | None) -> None:
        """Refuse a ``Host`` this node does not answer to (:class:`Misdirected`, counted)."""
        if not self.hosts.allows(host):
            self.limits.count(Misdirected.default_code, "allowed_hosts")
            raise Misdirected(self.hosts.refusal_reason(host or ""))

    # -- sends ----------------------------------------------------------

    async def send(
        self, *, room: str, nick: str, body: str, id: str,
        reply_to: int | None = None, attachments: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Hand a message to the processor; returns it once stored (with ``seq``).

        ``attachments`` (file ids) must be the sender's uploads (else
        ``bad_attachment``); the message carries their attachment objects.
        Counts it, and its ack or refusal (refusals in :attr:`counters`, by code
        and ``pipeline`` or ``processor``: the rate limits counted theirs already).
        """
        return await self._process(
            room=room, nick=nick, body=body, id=id, attachments=attachments,
            event=None if reply_to is None else {"reply_to": reply_to},
        )

    async def change(self, command: MessageChange, *, nick: str) -> dict[str, Any]:
        """Hand an edit, delete or reaction to the processor; returns the stored
        change (``{"type": "change", "seq": ...}``), or raises as :meth:`send` does.

        A delete carries ``moderator: true`` when :meth:`may_moderate` says the
        sender may moderate the room; the processor's store decides the rest
        (author, edit window, target) in the transaction that stores it.
        """
        event: dict[str, Any] = {"kind": command.kind, "target": command.target}
        if command.emoji is not None:
            event["emoji"] = command.emoji
        return await self._process(
            room=command.room, nick=nick, body=command.body, id=command.id, event=event,
            moderated=command.kind == "delete",
        )

    async def may_moderate(self, room: str, key: str) -> bool:
        """Whether the user ``key`` (a casefolded nick) may moderate ``room``:
        delete anyone's message there (its owner and moderators, and the
        server's ``admins``). The one moderation check of message events."""
        try:
            await self.access.may_moderate(room, key)
        except Forbidden:
            return False
        return True

    async def _process(
        self, *, room: str, nick: str, body: str, id: str, event: dict[str, Any] | None,
        attachments: Sequence[str] = (), moderated: bool = False,
    ) -> dict[str, Any]:
        self.metrics.sends.inc()
        key = nick_key(nick)
        # The checks below may wait on the store; one user's sends still reach
        # the processor in the order they came (a send waits for the earlier
        # ones to be handed over, or refused), so a room's seqs keep it.
        earlier, mine = self._send_order.enter(key)
        try:
            # Every send, whatever its transport, passes here: one check for all.
            await self.access.may_post(room, key)
            if moderated and event is not None and await self.may_moderate(room, key):
                event["moderator"] = True
            files = await self.files.attachments(key, room, attachments) if attachments else ()
            await InOrder.turn(earlier)
            self._send_order.leave(key, mine)  # link.process queues the send before its first await
            message = await self.link.process(
                room=room, nick=nick, id=id, body=body, ts=int(time.time() * 1000), attachments=files, event=event,
            )
        except ClientError as exc:
            self.counters.count(exc.code, "processor" if isinstance(exc, Unavailable) else "pipeline")
            raise
        finally:
            self._send_order.leave(key, mine)
        self.metrics.acks.inc()
        return message

    def _on_processed(self, messages: list[dict[str, Any]]) -> None:
        self.bus.publish_all([
            Broadcast(
                message["room"], message["seq"], orjson.dumps(message),
                mentions=frozenset(nick_key(n) for n in wire_mentions(message)),
            )
            for message in messages
        ])

    def note_seen(self, key: str, messages: Iterable[Broadcast]) -> None:
        """``key``'s user was handed ``messages``; report those that mention them."""
        for broadcast in messages:
            if broadcast.seq is not None and key in broadcast.mentions:
                self.link.report_seen(key, broadcast.room, broadcast.seq)

    def _on_updated(self, value: dict[str, Any]) -> None:
        event = {"type": "update", "room": value["room"], "seq": value["seq"], "links": value["links"]}
        if isinstance(value.get("target"), int):  # previews of an edit: they belong to the message it edited
            event["target"] = value["target"]
        self.bus.publish(Broadcast(value["room"], None, orjson.dumps(event), kind="update"))

    # -- from the bus (squall.bus.Receiver) ------------------------------

    def receive_all(self, broadcasts: Sequence[Broadcast]) -> None:
        """What the bus delivers, to the hub (and to the readiness canary while one is out)."""
        if self.canary.waiting:
            self.canary.seen(broadcasts)
        started = time.perf_counter()
        self.hub.receive_all(broadcasts)
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)

    def resync(self, rooms: Collection[str]) -> None:
        self.hub.resync(rooms)

    def sessions_ended(self, session_ids: Collection[str]) -> None:
        self.end_sessions(session_ids, tell_others=False)

    def access_changed(self, changes: Sequence[tuple[str, str, str]]) -> None:
        self.change_access(changes, tell_others=False)

    def marked_seen(self, marks: Sequence[tuple[str, str, str]]) -> None:
        for room, key, seq in marks:
            if seq.isdigit():
                self._tell_seen(room, key, int(seq))

    # -- read positions (one per user, whatever the device) ---------------

    async def mark_read(self, room: str, key: str, seq: int) -> None:
        """User ``key`` read ``room`` up to ``seq``: store it, and tell their
        connections in that room, here and on every node, so that every device
        of theirs clears what was read."""
        await self.store.mark_read(key, room, seq)
        self._tell_seen(room, key, seq)
        self.bus.publish_seen([(room, key, str(seq))])

    def _tell_seen(self, room: str, key: str, seq: int) -> None:
        event = {"type": "seen", "room": room, "seq": seq}
        for connection in list(self.websockets):
            if connection.nick_key == key and room in connection.rooms:
                connection.send_json(event)
        for stream in list(self.event_streams):
            if stream.key == key:
                stream.tell(room, "seen", event)

    # -- rooms and memberships -------------------------------------------

    def change_access(self, changes: Sequence[tuple[str, str, str]], *, tell_others: bool = True) -> None:
        """Rooms or memberships changed: ``(room, key, evict)``. Forget the cached
        facts, close ``key``'s subscriptions to ``room`` with code ``evict``
        (when set) and, unless the news came from the bus, tell the other nodes."""
        self.access.forget((room, key) for room, key, _ in changes)
        for room, key, evict in changes:
            if key and evict:
                self.evict(room, key, evict)
        if tell_others:
            self.bus.publish_access_changed(list(changes))

    def evict(self, room: str, key: str, code: str) -> None:
        """End user ``key``'s open subscriptions to ``room`` on this node, each
        told why with an error (``code``: not_member, banned)."""
        reason = (f"you were banned from room {room}" if code == "banned"
                  else f"you are no longer a member of room {room}")
        for connection in list(self.websockets):
            if connection.nick_key == key:
                connection.evict(room, code, reason)
        for stream in list(self.event_streams):
            if stream.key == key:
                stream.evict(room, code, reason)
        for poll in list(self.poll_connections):
            poll.evict(room, key, code, reason)

    # -- sessions -------------------------------------------------------

    def end_sessions(self, session_ids: Iterable[str], *, tell_others: bool = True) -> None:
        """Refuse these sessions' tokens from now on, close this node's WebSocket
        and SSE connections that run on them and, unless the news came from
        the bus, tell the other nodes to do the same."""
        ended = set(session_ids)
        if not ended:
            return
        self.tokens.revoked(ended, now=time.monotonic())
        for connection in list(self.websockets):
            if connection.session_id in ended:
                connection.close(CLOSE_UNAUTHORIZED, "session ended: sign in again")
        for stream in list(self.event_streams):
            if stream.session_id in ended:
                stream.end()
        if tell_others:
            self.bus.publish_sessions_ended(ended)

    # -- presence -------------------------------------------------------
    #
    # Transitions and typing wait in the coalescer; once per presence_interval
    # the node publishes at most one presence and one typing event per room
    # (squall/coalesce.py), so a join costs O(1) whatever the room's size.

    def announce(self, transitions: list[Transition]) -> None:
        """Presence transitions of this node's connections, for the next flush."""
        if not transitions:
            return
        now = time.monotonic()
        for room, nick, state in transitions:
            self.coalescer.presence(room, nick, nick_key(nick), state, now=now)
        self._schedule_presence()

    def typing(self, room: str, nick: str) -> None:
        """``nick`` is typing in ``room`` (already rate-limited per user and room)."""
        self.coalescer.typing(room, nick, nick_key(nick), now=time.monotonic())
        self._schedule_presence()

    def _schedule_presence(self) -> None:
        due = self.coalescer.due
        if due is None or self._presence_publishing or self.stopping:
            return
        if self._presence_timer is not None:
            if self._presence_due <= due:
                return
            # Set for a held big room's turn; a room not held is due sooner.
            self._presence_timer.cancel()
        loop = asyncio.get_running_loop()
        self._presence_due = due
        self._presence_timer = loop.call_later(max(0.0, due - time.monotonic()), self._flush_presence)

    def _flush_presence(self) -> None:
        self._presence_timer = None
        pending = self.coalescer.take(now=time.monotonic())
        if not pending:
            self._schedule_presence()
            return
        self._presence_publishing = True
        asyncio.ensure_future(self._publish_presence(pending.presence, pending.typing))

    async def _publish_presence(
        self, presence: Mapping[str, Sequence[Change]], typing: Mapping[str, Sequence[str]]
    ) -> None:
        """One interval's events: the changes the room-wide view confirms, each
        room's count, who typed; encoded once each, published together (unless
        the room-wide view published its events itself, or can reach nobody else)."""
        try:
            updated = await self.room_presence.update(presence, count=typing)
            counts = updated.counts
            detail_max = self.settings.presence_detail_max
            events = [] if updated.reach is Reach.PUBLISHED else [
                Broadcast(room, None, encode_presence(room, counts[room], changes, detail_max=detail_max),
                          kind="presence")
                for room, changes in updated.changes.items() if changes
            ]
            if updated.reach is Reach.THIS_NODE:
                self.receive_all(events)
                events = []
            events += [Broadcast(room, None, encode_typing(room, nicks), kind="typing")
                       for room, nicks in typing.items()]
            self.bus.publish_all(events)
            # A big room's next events wait longer: each is a write to every member.
            until = time.monotonic() + BIG_ROOM_SPACING
            for room, count in counts.items():
                if count > detail_max:
                    self.coalescer.hold(room, until=until)
        except Exception:
            log.exception("publishing presence failed")
        finally:
            self._presence_publishing = False
            self._schedule_presence()

    # -- timers ---------------------------------------------------------

    def _sweep(self) -> None:
        now = time.monotonic()
        self.announce(self.presence.expire(now=now))
        self.hub.close_idle_rooms(now=now)
        settings = self.settings
        for connection in list(self.poll_connections):
            connection.close_if_idle(now=now, idle_for=settings.idle_timeout, head_for=settings.header_timeout)
        if self._router is not None:
            self._router.close_slow_heads(now=now, head_for=settings.header_timeout)
        self.limits.sweep(now=now)
        self.files.sweep(now=now)
        asyncio.ensure_future(self.access.flush_joins())

    def _start_forgetting_guests(self) -> None:
        asyncio.ensure_future(self.forget_guests(now=time.time()))

    async def forget_guests(self, *, now: float) -> int:
        """Delete guests none of whose tokens can still be valid at ``now`` (Unix seconds)."""
        cutoff = int(now - self.settings.token_max_age_days * 86400)
        try:
            forgotten = await self.store.forget_guests(cutoff)
        except Exception:
            log.exception("forgetting expired guests failed")
            return 0
        if forgotten:
            log.info("forgot %d guests whose sessions have all expired", forgotten)
        return forgotten

    async def _prune_sessions(self) -> None:
        oldest = time.time() - self.settings.token_max_age_days * 86400 - MAX_CLOCK_SKEW
        try:
            await self.store.forget_sessions(int(oldest))
        except Exception:
            log.exception("could not delete expired sessions")

    def _sse_heartbeat(self) -> None:
        for stream in list(self.event_streams):
            stream.heartbeat()


def _room_presence(settings: Settings, table: PresenceTable, bus: Bus) -> Presence:
    """Presence shared in Redis when the bus is Redis (keys under the bus's prefix), else the node's own."""
    if not settings.bus.startswith(("redis://", "rediss://")):
        return LocalPresence(table)
    from ..bus.redis_presence import RedisPresence

    return RedisPresence(
        settings.bus, table, node_id=bus.status()["node"], prefix=settings.bus_prefix,
        detail_max=settings.presence_detail_max, heartbeat=settings.presence_heartbeat,
        ttl=settings.presence_ttl,
    )


def _processors(
    settings: Settings, key: bytes,
    on_processed: Callable[[list[dict[str, Any]]], None], on_updated: Callable[[dict[str, Any]], None],
) -> ProcessorPool | QueueClient:
    """How sends reach processors: the queue when ``queue`` is set, else TCP links to ``processor``."""
    if settings.queue:
        return QueueClient(
            settings.queue, key=key, prefix=settings.queue_prefix, on_processed=on_processed,
            on_updated=on_updated, max_pending=settings.max_pending_sends,
            send_timeout=settings.send_timeout, max_len=settings.queue_max_len,
            reconnect_min=settings.reconnect_min, reconnect_max=settings.reconnect_max,
        )
    return ProcessorPool(
        settings.processor_addresses, key=key, on_processed=on_processed, on_updated=on_updated,
        max_pending=settings.max_pending_sends, send_timeout=settings.send_timeout,
        reconnect_min=settings.reconnect_min, reconnect_max=settings.reconnect_max,
    )


def _limits(settings: Settings, counters: Counters) -> Limits:
    return Limits(
        send_per_user=Rate("send_per_user", settings.send_rate, settings.send_burst, "sends", "per user"),
        send_per_address=Rate(
            "send_per_ip", settings.send_rate_per_ip, settings.send_burst_per_ip, "sends", "per address"
        ),
        session_per_address=Rate(
            "session_per_ip", settings.session_rate_per_ip, settings.session_burst_per_ip,
            "new sessions or accounts", "per address",
        ),
        join_per_connection=Rate(
            "join_per_connection", settings.join_rate, settings.join_burst, "joins", "per connection"
        ),
        join_per_user=Rate(
            "join_per_user", settings.join_rate_per_user, settings.join_burst_per_user, "joins", "per user"
        ),
        max_keys=settings.max_rate_keys,
        max_connections=settings.max_connections,
        max_connections_per_address=settings.max_connections_per_ip,
        max_http_connections=settings.max_http_connections,
        max_http_connections_per_address=settings.max_http_connections_per_ip,
        counters=counters,
        search_per_user=Rate(
            "search_per_user", settings.search_rate, settings.search_burst, "searches", "per user"
        ),
    )
