"""The web node: wires the hub, the bus, the store (read side), presence and the
processor link together, and owns the Tornado application.

Every chat send, whatever its transport, goes through :meth:`WebNode.send`;
every processed message comes back through :meth:`WebNode._on_processed` and
leaves for the bus, encoded once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import tornado.web
from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream
from tornado.log import access_log
from tornado.netutil import bind_sockets

from ..address import HostPolicy, client_address, default_allowed_hosts, forwarded_https, parse_networks
from ..bus import Bus, open_bus
from ..config import Settings
from ..errors import Misdirected
from ..frames import Broadcast
from ..handshake import link_key
from ..hub import Hub
from ..limits import Counters, Limits, Rate
from ..listener import Listener
from ..presence import PresenceTable, Transition
from ..processor.client import ProcessorLink
from ..protocol import nick_key
from ..store import Store, open_store
from .auth import MAX_CLOCK_SKEW, TokenCache, load_or_create_secret
from .base import JSONErrors, redact_uri
from .connections import CountingHTTPServer
from .passwords import Passwords
from .longpoll import PollConnection, PollFirst
from .websocket import fan_out

__all__ = ["WebNode"]

log = logging.getLogger("squall.web")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
# How often the node sweeps expired long-poll presence, idle rooms, idle
# connections and old rate buckets.
HOUSEKEEPING_SECONDS = 1.0
# How often guests whose every token has expired are deleted from the users table.
FORGET_GUESTS_SECONDS = 3600.0
# How often session rows too old for any token to be valid are deleted.
SESSION_PRUNE_SECONDS = 3600.0


class StaticFiles(JSONErrors, tornado.web.StaticFileHandler):
    """The page's scripts, styles and catalogues; never sniffed as another type.
    Errors are JSON, as everywhere else."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

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
    if status in (421, 429):
        level = logging.DEBUG  # refusals by a limit: counted in /api/health; a flood must not flood the log
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, redact_uri(request.uri or ""),
                       request.remote_ip, 1000.0 * request.request_time())


class WebNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = load_or_create_secret(settings.secret, settings.data_dir)
        self.store: Store = open_store(settings.database_url)
        self.tokens = TokenCache(
            self.secret, session_active=self.store.session_active,
            max_age_days=settings.token_max_age_days,
        )
        self.passwords = Passwords()
        self.bus: Bus = open_bus(settings.bus)
        self.hub = Hub(
            self.store,
            recent_per_room=settings.recent_per_room,
            backlog_page=settings.backlog_page,
            history_on_join=settings.history_on_join,
            fan_out=fan_out,
        )
        self.presence = PresenceTable(grace=settings.poll_grace)
        self.link = ProcessorLink(
            settings.processor_address,
            key=link_key(self.secret),
            on_processed=self._on_processed,
            on_updated=self._on_updated,
            max_pending=settings.max_pending_sends,
            send_timeout=settings.send_timeout,
            reconnect_min=settings.reconnect_min,
            reconnect_max=settings.reconnect_max,
        )
        self.websockets: set[Any] = set()  # open WebSocket handlers
        self.event_streams: set[Any] = set()  # open SSE handlers
        self.poll_connections: set[PollConnection] = set()  # connections serving long-polls
        self._polls_gone: asyncio.Event | None = None  # set at shutdown once they are all closed
        self.counters = Counters()  # every refusal, by code and limit (/api/health)
        self.limits = _limits(settings, self.counters)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
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
        await self.bus.start(self.hub.receive_all)
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
        self._listener = Listener(bind_sockets(settings.port, settings.host), self._accepted)
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
        await self.bus.close()
        await self.store.close()
        self.passwords.close()

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

    async def send(self, *, room: str, nick: str, body: str, id: str) -> dict[str, Any]:
        """Hand a message to the processor; returns it once stored (with ``seq``)."""
        return await self.link.process(
            room=room, nick=nick, id=id, body=body, ts=int(time.time() * 1000)
        )

    def _on_processed(self, messages: list[dict[str, Any]]) -> None:
        self.bus.publish_all([
            Broadcast(
                message["room"], message["seq"], orjson.dumps(message),
                mentions=frozenset(nick_key(n) for n in message.get("mentions", ())),
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
        self.bus.publish(Broadcast(value["room"], None, orjson.dumps(event), kind="update"))

    # -- presence -------------------------------------------------------

    def announce(self, transitions: list[Transition]) -> None:
        for room, nick, state in transitions:
            self.publish_presence(room, nick, state)

    def publish_presence(self, room: str, nick: str, state: str) -> None:
        payload = orjson.dumps({"type": "presence", "room": room, "nick": nick, "state": state})
        self.bus.publish(Broadcast(room, None, payload, kind="presence"))

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
    )
