"""``squall chat``'s I/O: the HTTP calls and the WebSocket connection loop.

Theory of operation. :class:`Link` owns the socket and nothing else: it dials
``/ws`` with the session's token, tells the :class:`~squall.chat.state.ChatState`
when the socket opens and closes, feeds it every frame, and writes whatever
:meth:`~squall.chat.state.ChatState.frames_to_send` gives (one writer task, so
frames leave in the order the state queued them). When the socket is lost it
dials again after a capped exponential back-off with jitter; a close 4001 (the
session ended) first gets a new session — a guest's with the same nick, an
account's with the password given at start. Keep-alive pings with a short
deadline (:data:`PING_INTERVAL`, :data:`PING_TIMEOUT`) notice a network that
vanished without a FIN within seconds, not minutes.

The WebSocket client is the ``websockets`` package (already the server's frame
codec): asyncio-native like prompt_toolkit, with keep-alive pings, an open
timeout and the peer's close code built in. HTTP goes through Tornado's
``AsyncHTTPClient`` on the same loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..backoff import backoff_delay
from .state import HISTORY_PAGE, ChatMessage, ChatState

__all__ = ["Session", "SessionError", "open_session", "fetch_older", "websocket_url", "Link", "load_older"]

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # s for each HTTP request
OPEN_TIMEOUT = 5.0  # s for the WebSocket handshake
PING_INTERVAL = 5.0  # s between keep-alive pings
PING_TIMEOUT = 4.0  # s for the pong
CLOSE_TIMEOUT = 1.0  # s for the close handshake: a dead network shows within 5 + 4 + 1 s
RECONNECT_LOW, RECONNECT_HIGH = 0.5, 8.0  # s, the reconnect back-off
MAX_FRAME = 4 * 2**20  # bytes: a frame from the server larger than this closes the socket
CLOSE_UNAUTHORIZED = 4001


@dataclasses.dataclass(frozen=True)
class Session:
    nick: str
    token: str
    registered: bool


class SessionError(Exception):
    """The server refused a session: ``code`` and ``reason`` from its answer."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        self.reason = reason


def websocket_url(base_url: str) -> str:
    """``http://host:port/x`` → ``ws://host:port/x/ws`` (``https`` → ``wss``)."""
    parts = urllib.parse.urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def _api_url(base_url: str, path: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


async def _request(method: str, url: str, *, token: str | None = None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = HTTPRequest(
        url, method=method, headers=headers, body=json.dumps(body) if body is not None else None,
        request_timeout=HTTP_TIMEOUT, connect_timeout=HTTP_TIMEOUT, follow_redirects=False,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError) as exc:
        raise SessionError("network", str(exc)) from None
    try:
        answer = json.loads(response.body) if response.body else None
    except ValueError:
        answer = None
    if response.code >= 400 or response.code == 599:
        if response.code == 599:
            raise SessionError("network", str(response.error))
        code = answer.get("code") if isinstance(answer, dict) else None
        reason = answer.get("reason") if isinstance(answer, dict) else None
        raise SessionError(str(code or f"http_{response.code}"), str(reason or ""))
    return answer


async def open_session(base_url: str, nick: str, password: str | None = None) -> Session:
    """``POST /api/session``: a guest session, or an account's with ``password``.
    Raises :class:`SessionError` with the server's code (``nick_taken``,
    ``bad_credentials``, …) or ``network``."""
    body: dict[str, str] = {"nick": nick}
    if password is not None:
        body["password"] = password
    answer = await _request("POST", _api_url(base_url, "/api/session"), body=body)
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise SessionError("bad_answer", "the server's answer has no token")
    return Session(str(answer.get("nick", nick)), answer["token"], bool(answer.get("registered")))


async def fetch_older(base_url: str, token: str, room: str, before: int, *, limit: int = HISTORY_PAGE) -> list[dict[str, Any]]:
    """``GET /api/rooms/R/messages?before=S&limit=L``: up to ``limit`` messages
    older than ``before``, oldest first."""
    query = urllib.parse.urlencode({"before": before, "limit": limit})
    path = f"/api/rooms/{urllib.parse.quote(room)}/messages?{query}"
    answer = await _request("GET", _api_url(base_url, path), token=token)
    messages = answer.get("messages") if isinstance(answer, dict) else None
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


class Link:
    """The WebSocket connection of one ``squall chat``, reconnecting until :meth:`stop`.

    ``on_change()`` is called after anything the screen shows may have changed;
    ``on_mention(message)`` for a new message that mentions us. After changing
    ``state`` from outside (a send, a join), call :meth:`flush`.
    """

    def __init__(
        self,
        base_url: str,
        session: Session,
        state: ChatState,
        *,
        on_change: Callable[[], None],
        on_mention: Callable[[ChatMessage], None] = lambda message: None,
        password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self.session = session
        self.state = state
        self.on_change = on_change
        self.on_mention = on_mention
        self._password = password
        self._clock = clock
        self._wake = asyncio.Event()
        self._socket: ClientConnection | None = None
        self._stopped = False
        self._redial = False
        self.last_error: str | None = None

    def flush(self) -> None:
        """Write what the state has queued, soon (from the writer task)."""
        self._wake.set()

    def use_session(self, session: Session) -> None:
        """Carry on under ``session`` (``/nick``): the socket is dialled again at once."""
        self.session = session
        self._redial = True
        if self._socket is not None:
            asyncio.ensure_future(self._socket.close())

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._socket is not None:
            await self._socket.close()

    async def run(self) -> None:
        """Dial, serve, and dial again, until :meth:`stop`."""
        ticker = asyncio.ensure_future(self._tick())
        attempt = 0
        try:
            while not self._stopped:
                self.state.connecting()
                self.on_change()
                code = await self._serve_once()
                if self._stopped:
                    break
                self.state.connection_lost(code)
                self.on_change()
                if code == CLOSE_UNAUTHORIZED:
                    await self._renew()  # then the back-off: a server that keeps refusing is not hammered
                elif code is not None:
                    attempt = 0  # the socket had opened: the first retry comes soon
                if self._redial:
                    self._redial = False
                    continue
                delay = backoff_delay(attempt, low=RECONNECT_LOW, high=RECONNECT_HIGH, rand=random.random())
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            ticker.cancel()

    async def _serve_once(self) -> int | None:
        """One connection, to its end; the close code when it had opened, else None."""
        try:
            async with connect(
                websocket_url(self.base_url),
                additional_headers={"Authorization": f"Bearer {self.session.token}"},
                open_timeout=OPEN_TIMEOUT, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT, max_size=MAX_FRAME, compression=None, proxy=None,
            ) as socket:
                self._socket = socket
                self.last_error = None
                self.state.connection_opened(self._clock())
                self.on_change()
                self._wake.set()
                writer = asyncio.ensure_future(self._write(socket))
                try:
                    await self._read(socket)
                finally:
                    writer.cancel()
                    self._socket = None
                return socket.close_code if socket.close_code is not None else 1006
        except InvalidStatus as exc:
            self.last_error = f"refused: HTTP {exc.response.status_code}"
            return CLOSE_UNAUTHORIZED if exc.response.status_code == 401 else None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.last_error = str(exc) or type(exc).__name__
            return None

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for frame in socket:
                try:
                    event = json.loads(frame)
                except ValueError:
                    continue  # the server only sends JSON; nothing to act on
                if not isinstance(event, dict):
                    continue
                mention = self.state.receive(event, self._clock())
                self._wake.set()
                self.on_change()
                if mention is not None:
                    self.on_mention(mention)
        except ConnectionClosed:
            pass

    async def _write(self, socket: ClientConnection) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for frame in self.state.frames_to_send():
                    await socket.send(json.dumps(frame))
        except ConnectionClosed:
            pass  # the reader sees the close too; the state resends on the next socket

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.state.tick(self._clock())
            self._wake.set()
            self.on_change()

    async def _renew(self) -> bool:
        """A new session after close 4001: same nick, and the password if we have one."""
        try:
            self.session = await open_session(self.base_url, self.session.nick, self._password)
        except SessionError as exc:
            self.state.notice(f"the session ended and a new one was refused: {exc}")
            self.on_change()
            return False
        self.state.notice("the session ended; signed in again")
        return True


async def load_older(link: Link, room: str) -> int:
    """Read the next history page of ``room`` into the state; how many messages were new."""
    before = link.state.history_request(room)
    if before is None:
        return 0
    try:
        events = await fetch_older(link.base_url, link.session.token, room, before)
    except SessionError as exc:
        link.state.history_failed(room)
        link.state.notice(f"could not load older messages: {exc}", room)
        return 0
    return link.state.add_history(room, events)
