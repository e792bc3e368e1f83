"""``/api/rooms/R/messages``: history, long-polling and plain HTTP sends.

A poll whose cursor is behind the room is answered at once. One whose cursor is
at the end waits on the hub; every poller waiting on the same cursor is
answered with the same encoded body. A poller that hangs up stops waiting
(the connection's close callback cancels its future), so nothing piles up for it.

Polls are the web node's busiest requests — one per message per poller — so a
``GET`` never reaches Tornado's application: :class:`PollFirst`, the HTTP
server's delegate, recognises it from the request line and hands it to
:class:`PollEndpoint`, which answers with one ``write_headers`` call — no
``HTTPServerRequest``, routing table, ``RequestHandler`` or access-log line per
success. Every other request goes to the application unchanged; ``POST`` (a
send) is an ordinary handler.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from http.cookies import CookieError, Morsel, SimpleCookie
from typing import TYPE_CHECKING

import orjson
from tornado.escape import parse_qs_bytes
from tornado.http1connection import HTTP1Connection
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
)
from tornado.iostream import StreamClosedError
from tornado.web import Application

from ..errors import BadRequest, ClientError, Unauthorized
from ..hub import PollAnswer, Room, encode_poll_body
from ..protocol import check_client_id, check_room, float_param, int_param, nick_key
from .base import BaseHandler, query_argument, token_from_request

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["MessagesHandler", "PollEndpoint", "PollFirst", "PollRequest", "MAX_SEQ"]

log = logging.getLogger("squall.web")

# Seq numbers are JavaScript-safe integers.
MAX_SEQ = 2**53 - 1
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


_POLL_PATH = re.compile(r"/api/rooms/[^/?]+/messages(?:\?|$)")


class PollRequest:
    """What a poll needs of its request, without Tornado's ``HTTPServerRequest``
    (whose construction, with a deep copy of the arguments, is a fifth of a poll)."""

    __slots__ = ("uri", "path", "headers", "query_arguments", "connection", "_cookies")

    def __init__(self, start_line: RequestStartLine, headers: HTTPHeaders, connection: HTTP1Connection) -> None:
        self.uri = start_line.path
        self.path, _, query = start_line.path.partition("?")
        self.headers = headers
        self.query_arguments = parse_qs_bytes(query, keep_blank_values=True)
        self.connection = connection
        self._cookies: dict[str, Morsel[str]] | None = None

    @property
    def cookies(self) -> dict[str, Morsel[str]]:
        if self._cookies is None:
            cookie = SimpleCookie()
            try:
                cookie.load(self.headers.get("Cookie", ""))
            except CookieError:
                pass
            self._cookies = dict(cookie)
        return self._cookies

    @property
    def remote_ip(self) -> str:
        return str(getattr(self.connection.context, "remote_ip", ""))


class PollFirst(HTTPServerConnectionDelegate):
    """The HTTP server's delegate: long-poll GETs are served here, everything else
    goes to the Tornado application as usual."""

    def __init__(self, app: Application, endpoint: PollEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> HTTPMessageDelegate:
        return _PollOrApp(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _PollOrApp(HTTPMessageDelegate):
    __slots__ = ("router", "server_conn", "request_conn", "poll", "inner")

    def __init__(self, router: PollFirst, server_conn: object, request_conn: HTTPConnection) -> None:
        self.router = router
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.poll: PollRequest | None = None
        self.inner: HTTPMessageDelegate | None = None

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, RequestStartLine)
        if (
            start_line.method == "GET" and _POLL_PATH.match(start_line.path)
            and isinstance(self.request_conn, HTTP1Connection)
        ):
            self.poll = PollRequest(start_line, headers, self.request_conn)
            return None
        self.inner = self.router.app.start_request(self.server_conn, self.request_conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk) if self.inner is not None else None

    def finish(self) -> None:
        if self.poll is not None:
            asyncio.ensure_future(self.router.endpoint.serve(self.poll))
        elif self.inner is not None:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


class PollEndpoint:
    """``GET /api/rooms/R/messages``: history and long-polls, answered in one write."""

    def __init__(self, node: WebNode) -> None:
        self.node = node

    async def serve(self, request: PollRequest) -> None:
        connection = request.connection
        waiting: list[asyncio.Future[PollAnswer]] = []

        def hung_up() -> None:
            for future in waiting:
                future.cancel()

        connection.set_close_callback(hung_up)
        try:
            status, body = 200, await self._answer(request, waiting)
        except ClientError as exc:
            status, body = exc.status, orjson.dumps(exc.to_dict())
        except asyncio.CancelledError:
            return  # the poller hung up
        except Exception:
            log.exception("GET %s failed", request.uri)
            status, body = 500, b'{"code":"internal","reason":"the server failed to handle this request"}'
        connection.set_close_callback(None)
        headers = HTTPHeaders({
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        })
        try:
            connection.write_headers(ResponseStartLine("HTTP/1.1", status, _REASONS.get(status, "")), headers, body)
            connection.finish()
        except StreamClosedError:
            return
        if status >= 400:
            log.warning("%d GET %s (%s)", status, request.uri, request.remote_ip)

    async def _answer(self, request: PollRequest, waiting: list[asyncio.Future[PollAnswer]]) -> bytes:
        node = self.node
        settings = node.settings
        token, _by_cookie = token_from_request(request)
        nick = node.tokens.nick(token, now=time.monotonic())
        if nick is None:
            raise Unauthorized(
                "session token is missing, invalid or expired; create one with POST /api/session"
            )
        path_room = request.path.split("/")[3]
        room_name = check_room(path_room)
        since = int_param(query_argument(request, "since"), "since", default=None, low=0, high=MAX_SEQ)
        before = int_param(query_argument(request, "before"), "before", default=None, low=1, high=MAX_SEQ)
        limit = int_param(
            query_argument(request, "limit"), "limit",
            default=settings.poll_limit_default, low=1, high=settings.poll_limit_max,
        )
        wait = float_param(
            query_argument(request, "wait"), "wait",
            default=settings.poll_wait_default, low=0, high=settings.poll_wait_max,
        )
        assert limit is not None
        if since is not None and before is not None:
            raise BadRequest("give either since or before, not both", code="bad_param")

        hub = node.hub
        key = nick_key(nick)
        if since is None:
            # History: the newest `limit` messages (before `before`), at once.
            messages = await hub.read_before(room_name, before, limit)
            room = await hub.room(room_name)
            node.note_seen(key, messages)
            return encode_poll_body(messages, room.last_seq)

        node.announce(node.presence.poll(room_name, nick, key, now=time.monotonic(), wait=wait))
        room = await hub.room(room_name)
        # A cursor past the end (the store was reset, or a client's bug) means
        # "everything from now on", as a WebSocket join treats it.
        since = min(since, room.last_seq)
        if since < room.last_seq or wait == 0:
            messages = await hub.read_after(room, since, limit)
            node.note_seen(key, messages)
            return encode_poll_body(messages, room.last_seq)

        future = hub.wait(room, since, limit)
        waiting.append(future)
        timer = asyncio.get_running_loop().call_later(wait, _time_out, future, room)
        try:
            answer = await future  # cancelled if the poller hangs up
        finally:
            timer.cancel()
            hub.forget_waiter(room, future, now=time.monotonic())
        node.note_seen(key, answer.messages)
        return answer.body


def _time_out(future: asyncio.Future[PollAnswer], room: Room) -> None:
    """The wait ran out: answer with no messages and the room's position."""
    if not future.done():
        future.set_result(PollAnswer(encode_poll_body((), room.last_seq), []))


class MessagesHandler(BaseHandler):
    """``POST /api/rooms/R/messages``: a send that answers once the message is stored."""

    async def post(self, room_name: str) -> None:
        nick = self.current_nick()
        room_name = check_room(room_name)
        data = self.json_body()
        body = data.get("body")
        if not isinstance(body, str):
            raise BadRequest("body must be a string", code="bad_field")
        cid = check_client_id(data.get("id"))
        self.node.check_http_rate(nick_key(nick))
        message = await self.node.send(room=room_name, nick=nick, body=body, id=cid)
        self.write_json({"id": cid, "seq": message["seq"]})
