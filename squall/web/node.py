"""The web node: wires the hub, the bus, the store (read side), presence and the
processor link together, and owns the Tornado application.

Every chat send, whatever its transport, goes through :meth:`WebNode.send`;
every processed message comes back through :meth:`WebNode._on_processed` and
leaves for the bus, encoded once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream
from tornado.log import access_log

from ..bus import Bus, open_bus
from ..config import Settings
from ..frames import Broadcast
from ..hub import Hub
from ..limits import TokenBucket
from ..presence import PresenceTable, Transition
from ..processor.client import ProcessorLink
from ..protocol import nick_key
from ..store import Store, open_store
from .auth import MAX_CLOCK_SKEW, TokenCache, load_or_create_secret
from .passwords import Passwords
from .longpoll import PollConnection, PollFirst

__all__ = ["WebNode"]

log = logging.getLogger("squall.web")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# How often the node sweeps expired long-poll presence, idle rooms and old rate buckets.
HOUSEKEEPING_SECONDS = 1.0
# How often session rows too old for any token to be valid are deleted.
SESSION_PRUNE_SECONDS = 3600.0
# A keep-alive HTTP connection with no request in progress is closed after this long.
IDLE_CONNECTION_SECONDS = 3600.0


class StaticFiles(tornado.web.StaticFileHandler):
    """The page's scripts, styles and catalogues; never sniffed as another type."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, quieter: a long-poller makes a request per message,
    so successful requests are logged at DEBUG and only failures above it."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, request.uri,
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
        )
        self.presence = PresenceTable(grace=settings.poll_grace)
        self.link = ProcessorLink(
            settings.processor_address,
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
        self._http_buckets: dict[str, TokenBucket] = {}
        self._server: HTTPServer | None = None
        self._housekeeping: PeriodicCallback | None = None
        self._heartbeat: PeriodicCallback | None = None
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
        self._server = HTTPServer(
            PollFirst(app, self),
            xheaders=False,
            max_body_size=self.settings.max_body_bytes * 2,
            idle_connection_timeout=IDLE_CONNECTION_SECONDS,
        )
        self._server.listen(self.settings.port, self.settings.host)
        self._housekeeping = PeriodicCallback(self._sweep, HOUSEKEEPING_SECONDS * 1000)
        self._housekeeping.start()
        self._heartbeat = PeriodicCallback(self._sse_heartbeat, self.settings.sse_heartbeat * 1000)
        self._heartbeat.start()
        await self._prune_sessions()
        self._session_pruning = PeriodicCallback(self._prune_sessions, SESSION_PRUNE_SECONDS * 1000)
        self._session_pruning.start()

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        assert self._server is not None
        sockets = list(self._server._sockets.values())
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, say goodbye to clients, wait for in-flight sends, close."""
        self.stopping = True
        if self._server is not None:
            self._server.stop()
        for callback in (self._housekeeping, self._heartbeat, self._session_pruning):
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

    # -- sends ----------------------------------------------------------

    def check_http_rate(self, nick_key: str) -> None:
        now = time.monotonic()
        bucket = self._http_buckets.get(nick_key)
        if bucket is None:
            bucket = self._http_buckets[nick_key] = TokenBucket(
                rate=self.settings.send_rate, burst=self.settings.send_burst, now=now
            )
        bucket.check_send(now=now)

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
        for connection in list(self.poll_connections):
            connection.close_if_idle(now=now, idle_for=IDLE_CONNECTION_SECONDS)
        # Buckets that have refilled completely carry no information.
        horizon = self.settings.send_burst / self.settings.send_rate
        for key in [k for k, b in self._http_buckets.items() if now - b.stamp > horizon]:
            del self._http_buckets[key]

    async def _prune_sessions(self) -> None:
        oldest = time.time() - self.settings.token_max_age_days * 86400 - MAX_CLOCK_SKEW
        try:
            await self.store.forget_sessions(int(oldest))
        except Exception:
            log.exception("could not delete expired sessions")

    def _sse_heartbeat(self) -> None:
        for stream in list(self.event_streams):
            stream.heartbeat()
