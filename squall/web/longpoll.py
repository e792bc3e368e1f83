"""``/api/rooms/R/messages``: history, long-polling and plain HTTP sends.

A poll whose cursor is behind the room is answered at once. One whose cursor is
at the end waits on the hub; every poller waiting on the same cursor is
answered with the same encoded body. A poller that hangs up stops waiting
(the connection's close callback cancels its future), so nothing piles up for it.

Polls are the web node's busiest requests — one per message per poller — so
``GET`` is served by :class:`PollEndpoint`, a plain callable target of Tornado's
router rather than a ``RequestHandler``: it answers with one
``write_headers`` call, without a handler object, header bookkeeping, or an
access-log line per success. ``POST`` (a send) is an ordinary handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import orjson
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, HTTPServerRequest, ResponseStartLine
from tornado.iostream import StreamClosedError
from tornado.routing import PathMatches

from ..errors import BadRequest, ClientError, Unauthorized
from ..hub import PollAnswer, Room, encode_poll_body
from ..protocol import check_client_id, check_room, float_param, int_param, nick_key
from .base import BaseHandler, query_argument, token_from_request

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["MessagesHandler", "PollEndpoint", "PollMatches", "MAX_SEQ"]

log = logging.getLogger("squall.web")

# Seq numbers are JavaScript-safe integers.
MAX_SEQ = 2**53 - 1
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


class PollMatches(PathMatches):
    """``PathMatches`` for ``GET`` only; other methods fall through to the next rule."""

    def match(self, request: HTTPServerRequest) -> dict[str, object] | None:
        if request.method != "GET":
            return None
        return super().match(request)


class PollEndpoint:
    """``GET /api/rooms/R/messages``, as a router target: called with the request."""

    def __init__(self, node: WebNode) -> None:
        self.node = node

    def __call__(self, request: HTTPServerRequest, **route: object) -> None:
        asyncio.ensure_future(self._serve(request))

    async def _serve(self, request: HTTPServerRequest) -> None:
        connection = request.connection
        assert isinstance(connection, HTTP1Connection)
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

    async def _answer(self, request: HTTPServerRequest, waiting: list[asyncio.Future[PollAnswer]]) -> bytes:
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
