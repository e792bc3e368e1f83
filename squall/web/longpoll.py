"""``/api/rooms/R/messages``: history, long-polling and plain HTTP sends.

A poll whose cursor is behind the room is answered at once. One whose cursor is
at the end parks on the hub; every poller parked on the same cursor is answered
with the same bytes — body and response head encoded once. A poller that hangs
up stops waiting, so nothing piles up for it.

Polls are the web node's busiest requests — one per message per poller — so
they do not go through Tornado's per-request machinery. :class:`PollFirst`, the
HTTP server's delegate, recognises a poll ``GET`` from its head and hands the
connection's socket to a :class:`PollConnection`, which serves that poll and
every following one on the connection itself: the event loop's reader
callback, the plain parser of :mod:`squall.http1`, one ``socket.send`` per
answer, and no coroutine, future or task unless the store must be read. The
first request on the connection that is not a plain poll ``GET`` (a send, a
page, anything unusual) gives the socket back to Tornado, with the bytes read
so far, as if nothing had happened.

``POST`` (a send) is an ordinary handler.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import socket
import time
import weakref
from asyncio import Future
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
)
from tornado.iostream import SSLIOStream
from tornado.web import Application

import orjson

from ..address import rate_key
from ..errors import BadRequest, ClientError, Forbidden, Misdirected, RateLimited, Unauthorized
from ..frames import Broadcast
from ..http1 import MAX_HEAD_BYTES, RequestHead, head_end, parse_simple_get, query_params, response
from ..hub import PollAnswer, Room, encode_poll_body
from ..protocol import Change, check_room, float_param, int_param, nick_key, parse_send_body
from ..rooms import Refusal
from .access import UNKNOWN
from .auth import SessionUnchecked
from .base import BaseHandler, find_token, redact_uri
from .streams import give_socket, read_buffered, receive, take_socket
from .upgrade import take_upgrade

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["MessagesHandler", "PollConnection", "PollFirst", "MAX_SEQ"]

log = logging.getLogger("squall.web")

# Seq numbers are JavaScript-safe integers.
MAX_SEQ = 2**53 - 1
_READ_SIZE = 64 * 1024
_POLL_PATH = re.compile(r"/api/rooms/[^/?]+/messages(?:\?|$)")
_UPGRADE_PATH = re.compile(r"/ws(?:\?|$)")
_INTERNAL = b'{"code":"internal","reason":"the server failed to handle this request"}'


class PollFirst(HTTPServerConnectionDelegate):
    """The HTTP server's delegate: a connection's first poll ``GET`` takes it over
    to a :class:`PollConnection`; everything else goes to the application.

    It also bounds how long Tornado waits for request heads. A connection's
    first request gets ``header_timeout`` (a client that connects and says
    nothing holds a file descriptor for nothing); each later one on a kept-alive
    connection gets the server's ``idle_connection_timeout`` (``idle_timeout``),
    and :meth:`close_slow_heads` closes it if, once its head has begun, the
    rest does not follow within ``header_timeout`` (slowloris).
    """

    def __init__(self, app: Application, node: WebNode) -> None:
        self.app = app
        self.node = node
        self._served: weakref.WeakSet[object] = weakref.WeakSet()  # connections past their first request
        self._first_params: HTTP1ConnectionParameters | None = None
        # Kept-alive connections waiting for a later request's head → when its
        # first bytes were seen (None: none yet).
        self._awaiting: dict[object, tuple[HTTP1Connection, float | None]] = {}

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> HTTPMessageDelegate:
        if isinstance(request_conn, HTTP1Connection):
            if server_conn not in self._served:
                self._served.add(server_conn)
                if self._first_params is None:
                    self._first_params = copy.copy(request_conn.params)
                    self._first_params.header_timeout = self.node.settings.header_timeout
                request_conn.params = self._first_params
            else:
                self._awaiting[server_conn] = (request_conn, None)
        return _PollOrApp(self, server_conn, request_conn)

    def head_received(self, server_conn: object) -> None:
        self._awaiting.pop(server_conn, None)

    def close_slow_heads(self, *, now: float, head_for: float) -> None:
        """Close kept-alive connections whose request head began ``head_for``
        seconds ago (as first seen by a call to this) and is still incomplete."""
        for server_conn, (request_conn, since) in list(self._awaiting.items()):
            stream = request_conn.stream
            if stream is None or stream.closed():
                del self._awaiting[server_conn]
            elif read_buffered(stream) == 0:
                continue  # idle: the idle timeout applies
            elif since is None:
                self._awaiting[server_conn] = (request_conn, now)
            elif now - since >= head_for:
                del self._awaiting[server_conn]
                log.info("closing %s: no complete request head in %.1f s",
                         request_conn.context.address, head_for)  # type: ignore[attr-defined]
                stream.close()

    def on_close(self, server_conn: object) -> None:
        self._served.discard(server_conn)
        self._awaiting.pop(server_conn, None)
        self.app.on_close(server_conn)


class _PollOrApp(HTTPMessageDelegate):
    """One request on a Tornado connection: a poll ``GET`` takes the connection
    over, after its body if it has one (read by Tornado, within
    ``max_body_size``, and dropped); anything else goes to the application."""

    __slots__ = ("router", "server_conn", "request_conn", "inner", "poll_head")

    def __init__(self, router: PollFirst, server_conn: object, request_conn: HTTPConnection) -> None:
        self.router = router
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.inner: HTTPMessageDelegate | None = None
        self.poll_head: RequestHead | None = None  # a poll whose body Tornado is reading

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, RequestStartLine)
        self.router.head_received(self.server_conn)
        connection = self.request_conn
        if (
            start_line.method == "GET" and _POLL_PATH.match(start_line.path)
            and isinstance(connection, HTTP1Connection)
            and not isinstance(connection.stream, SSLIOStream)
        ):
            minor_version = 1 if start_line.version == "HTTP/1.1" else 0
            head = RequestHead.from_fields(start_line.path, minor_version, list(headers.get_all()))
            if head is not None:
                if head.has_body:
                    self.poll_head = head
                else:
                    self._take_over(connection, head)
                return None
        if (
            start_line.method == "GET" and _UPGRADE_PATH.match(start_line.path)
            and isinstance(connection, HTTP1Connection)
            and not isinstance(connection.stream, SSLIOStream)
        ):
            # An ordinary WebSocket upgrade is served from its head (web/upgrade.py).
            minor_version = 1 if start_line.version == "HTTP/1.1" else 0
            head = RequestHead.from_fields(start_line.path, minor_version, list(headers.get_all()))
            address = connection.context.address  # type: ignore[attr-defined]
            peer = str(address[0]) if isinstance(address, tuple) else ""
            if head is not None and take_upgrade(self.router.node, connection, head, peer):
                return None
        self.inner = self.router.app.start_request(self.server_conn, connection)
        return self.inner.headers_received(start_line, headers)

    def _take_over(self, connection: HTTP1Connection, head: RequestHead) -> None:
        address = connection.context.address  # type: ignore[attr-defined]
        sock, read_ahead = take_socket(connection.detach())
        PollConnection(self.router.node, sock, address).start(head, read_ahead)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk) if self.inner is not None else None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
        elif self.poll_head is not None:
            head, self.poll_head = self.poll_head, None
            connection = self.request_conn
            assert isinstance(connection, HTTP1Connection)
            # Tornado may not have sent all of its `100 Continue` yet: take the
            # socket once its writes are out (at once, nearly always).
            flushed = connection.stream.write(b"")

            def take_over(future: Future[None]) -> None:
                if future.exception() is None and connection.stream is not None:
                    self._take_over(connection, head)

            flushed.add_done_callback(take_over)

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


class Poll:
    """One poll request, read and checked: who asks, for which room, from where."""

    __slots__ = ("target", "room", "nick", "nick_key", "since", "before", "limit", "wait")

    def __init__(self, node: WebNode, head: RequestHead, *, checked: str | None = None) -> None:
        settings = node.settings
        self.target = head.target
        if head.refusal is not None:
            raise BadRequest(head.refusal, code="bad_header")
        node.check_host(head.headers.get("host"))
        path, _, query = head.target.partition("?")
        params = query_params(query)
        token, _by_cookie = find_token(
            head.headers.get("authorization", ""), params.get("token"), head.headers.get("cookie")
        )
        # From memory; SessionUnchecked if the store must be asked first (the
        # answer then comes back as `checked`, the nick, or "" for refused).
        nick = checked if checked is not None else node.tokens.nick(token, now=time.monotonic())
        if not nick:
            raise Unauthorized(
                "session token is missing, invalid or expired; create one with POST /api/session"
            )
        self.nick = nick
        self.nick_key = nick_key(nick)
        self.room = check_room(path.split("/")[3])
        self.since = int_param(params.get("since"), "since", default=None, low=0, high=MAX_SEQ)
        self.before = int_param(params.get("before"), "before", default=None, low=1, high=MAX_SEQ)
        limit = int_param(
            params.get("limit"), "limit",
            default=settings.poll_limit_default, low=1, high=settings.poll_limit_max,
        )
        assert limit is not None
        self.limit = limit
        self.wait = float_param(
            params.get("wait"), "wait",
            default=settings.poll_wait_default, low=0, high=settings.poll_wait_max,
        )
        if self.since is not None and self.before is not None:
            raise BadRequest("give either since or before, not both", code="bad_param")


class PollConnection:
    """A keep-alive HTTP connection serving long-polls, on a socket the node owns.

    At any moment it is doing one of: reading the next request head (*idle*),
    reading the store for a poll (``task``), parked on a room (``room``), or
    sending an answer the kernel did not take at once (``unsent``). Requests
    that arrive meanwhile wait in ``inbox``, which is read no further than
    :data:`~squall.http1.MAX_HEAD_BYTES` while the connection is busy.
    """

    __slots__ = (
        "node", "sock", "fd", "loop", "address", "inbox", "unsent", "reading", "keep_alive",
        "poll", "room", "timer", "task", "closed", "idle_since", "counted_as",
    )

    def __init__(self, node: WebNode, sock: socket.socket, address: Any) -> None:
        self.node = node
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.address = address
        self.inbox = bytearray()
        self.unsent: memoryview | None = None
        self.reading = False
        self.keep_alive = True
        self.poll: Poll | None = None  # the poll being served, if any
        self.room: Room | None = None  # where it is parked, if it is
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Future[None] | None = None
        self.closed = False
        # When it last became idle, or when the head it is reading began.
        self.idle_since = time.monotonic()
        self.counted_as: str | None = None  # the client address its open connection counts against

    @property
    def idle(self) -> bool:
        return self.poll is None and self.unsent is None and self.task is None and not self.closed

    def start(self, head: RequestHead, read_ahead: bytes) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.node.poll_connections.add(self)
        self.inbox += read_ahead
        # A proxy may carry many clients on one kept-alive connection; it counts
        # against the client of its first request.
        address = rate_key(self.node.client_address(
            self._remote_ip(), head.headers.get("x-forwarded-for")
        ))
        try:
            self.node.limits.open_connection(address)
        except ClientError as exc:
            self.keep_alive = False
            self._refuse(head.target, exc)
            return
        self.counted_as = address
        self._read(True)
        self._serve(head)
        self._next()

    # -- reading requests -----------------------------------------------

    def _read(self, on: bool) -> None:
        if on and not self.reading:
            self.loop.add_reader(self.fd, self._on_readable)
        elif not on and self.reading:
            self.loop.remove_reader(self.fd)
        self.reading = on

    def _on_readable(self) -> None:
        data = receive(self.sock, _READ_SIZE)
        if data is None:
            return
        if not data:
            self.close()
            return
        if self.idle and not self.inbox:
            self.idle_since = time.monotonic()  # a head begins: header_timeout runs from here
        self.inbox += data
        if self.idle:
            self._next()
        elif len(self.inbox) > MAX_HEAD_BYTES:
            self._read(False)  # busy: let TCP hold the rest

    def _next(self) -> None:
        """Serve the requests waiting in ``inbox``, while the connection is idle."""
        while self.idle and self.inbox:
            if self.node.stopping:
                self.close()
                return
            end = head_end(self.inbox)
            if end < 0:
                if len(self.inbox) > MAX_HEAD_BYTES or not b"GET /".startswith(self.inbox[:5]) \
                        or b"\n\n" in self.inbox:
                    self._hand_back()  # Tornado refuses or serves what is not ours
                    return
                break  # the rest of the head is still to come
            head = parse_simple_get(bytes(self.inbox[:end]))
            if head is None or not _POLL_PATH.match(head.target):
                self._hand_back()
                return
            del self.inbox[:end]
            self._serve(head)
        if self.idle:
            self._read(True)

    def _hand_back(self) -> None:
        """Give the socket back to Tornado's HTTP server, unread requests first."""
        self._let_go()
        stream = give_socket(self.sock, bytes(self.inbox))
        self.node.serve_stream(stream, self.address)

    # -- serving a poll -------------------------------------------------

    def _serve(self, head: RequestHead, *, checked: str | None = None) -> None:
        self.keep_alive = head.keep_alive
        try:
            poll = self.poll = Poll(self.node, head, checked=checked)
        except SessionUnchecked as unchecked:
            self.task = asyncio.ensure_future(self._check_session(head, unchecked.token))
            return
        except ClientError as exc:
            self._refuse(head.target, exc)
            return
        verdict = self.node.access.cached_refusal(poll.room, poll.nick_key, now=time.monotonic())
        if verdict is UNKNOWN:
            self.task = asyncio.ensure_future(self._check_access(poll))
            return
        if verdict is not None:
            assert isinstance(verdict, Refusal)
            self._refuse(head.target, Forbidden(verdict.reason, code=verdict.code))
            return
        self._serve_poll(poll)

    async def _check_access(self, poll: Poll) -> None:
        """The first poll of a user in a room this node has no fresh facts about: ask the store."""
        try:
            await self.node.access.may_read(poll.room, poll.nick_key)
        except ClientError as exc:
            self.task = None
            self._refuse(poll.target, exc)
        except Exception:
            log.exception("GET %s failed", redact_uri(poll.target))
            self.task = None
            self._finish(500, _INTERNAL)
        else:
            self.task = None
            self._serve_poll(poll)
        self._next()

    def _serve_poll(self, poll: Poll) -> None:
        node = self.node
        if poll.since is not None:
            node.announce(node.presence.poll(
                poll.room, poll.nick, poll.nick_key, now=time.monotonic(), wait=poll.wait
            ))
            room = node.hub.rooms.get(poll.room)
            if room is not None and room.ready.done() and self._serve_from_memory(room, poll, poll.since):
                return
        self.task = asyncio.ensure_future(self._serve_from_store(poll))

    async def _check_session(self, head: RequestHead, token: str) -> None:
        """The first poll with a token this node has not seen lately: ask the store."""
        try:
            session = await self.node.tokens.check(token, now=time.monotonic())
        except Exception:
            log.exception("GET %s failed", head.target)
            self.task = None
            self._finish(500, _INTERNAL)
        else:
            self.task = None
            self._serve(head, checked=session.nick if session is not None else "")
        self._next()

    def _serve_from_memory(self, room: Room, poll: Poll, since: int, *, checked: bool = False) -> bool:
        """Park, or answer from the room's recent messages; False if they don't
        reach back, or if ``since`` is past this node's end and not yet
        ``checked`` against the store (:meth:`~squall.hub.Hub.cursor`): the
        client may have read on another node what this one has not heard yet."""
        if since > room.last_seq and not checked:
            return False
        if since >= room.last_seq and poll.wait > 0 and not self.node.stopping:
            self.room = room
            self.node.hub.park(room, since, poll.limit, self)
            self.timer = self.loop.call_later(poll.wait, self._time_out)
            return True
        if since > room.last_seq:
            return False  # this node lags the store: the answer comes from the store
        messages = room.recent_after(since, poll.limit)
        if messages is None:
            return False
        self._answer(encode_poll_body(messages, since), messages)
        return True

    async def _serve_from_store(self, poll: Poll) -> None:
        hub = self.node.hub
        messages: list[Broadcast] | None = None
        try:
            room = await hub.room(poll.room)
            if poll.since is None:
                # History: the newest `limit` messages (before `before`), at once,
                # read no further than the room's position now, which is then
                # the cursor of an empty answer: a message stored meanwhile
                # comes with the next poll instead of being skipped.
                since = room.last_seq if poll.before is None else min(poll.before - 1, room.last_seq)
                messages = await hub.read_before(poll.room, since + 1, poll.limit)
            else:
                # A cursor past the store's end (a reset store, a client's bug)
                # means "everything from now on", as a WebSocket join treats it.
                since = await hub.cursor(room, poll.since)
                if not self._serve_from_memory(room, poll, since, checked=True):
                    messages = await hub.read_after(room, since, poll.limit)
        except ClientError as exc:
            self._refuse(poll.target, exc)
        except Exception:
            log.exception("GET %s failed", redact_uri(poll.target))
            self._finish(500, _INTERNAL)
        else:
            if messages is not None:
                self._answer(encode_poll_body(messages, since), messages)
        finally:
            self.task = None
        self._next()

    def answered(self, answer: PollAnswer) -> None:
        """The hub's answer to the parked poll (the hub has let go of it)."""
        self._unpark()
        self._answer(answer.body, answer.messages, shared=answer)
        self._next()

    def evict(self, room: str, key: str, code: str, reason: str) -> None:
        """Membership of ``room`` ended for user ``key``: a poll of theirs parked there is refused now."""
        poll = self.poll
        if poll is None or self.room is None or poll.room != room or poll.nick_key != key:
            return
        self._unpark()
        self._refuse(poll.target, Forbidden(reason, code=code))
        self._next()

    def _time_out(self) -> None:
        """The wait ran out: answer with no messages and the cursor it waited on
        (the room's position, or it would have been answered)."""
        room = self.room
        self.timer = None
        if room is not None:
            since = room.waiters.get(self, (room.last_seq, 0))[0]
            self._unpark()
            self._answer(encode_poll_body((), since), [])
            self._next()

    def _unpark(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.room is not None:
            self.node.hub.unpark(self.room, self, now=time.monotonic())
            self.room = None

    def _answer(self, body: bytes, messages: list[Broadcast], *, shared: PollAnswer | None = None) -> None:
        self._note_seen(messages)
        self._finish(200, body, shared=shared)

    def _note_seen(self, messages: list[Broadcast]) -> None:
        if messages and self.poll is not None:
            self.node.note_seen(self.poll.nick_key, messages)

    def _refuse(self, target: str, exc: ClientError) -> None:
        # Refusals by a limit are counted in /api/health; a flood must not flood the log.
        level = logging.DEBUG if isinstance(exc, (RateLimited, Misdirected)) else logging.WARNING
        log.log(level, "%d GET %s (%s): %s", exc.status, redact_uri(target), self._remote_ip(), exc.reason)
        self._finish(exc.status, orjson.dumps(exc.to_dict()), headers=exc.headers)

    def _finish(
        self, status: int, body: bytes, *, shared: PollAnswer | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send the answer. Kept-alive pollers answered with one ``shared`` answer
        get the same response bytes, built by the first of them."""
        self.poll = None
        if self.node.stopping:
            self.keep_alive = False
        if shared is not None and self.keep_alive:
            if shared.wire is None:
                shared.wire = response(status, body, keep_alive=True)
            self._send(shared.wire)
        else:
            self._send(response(status, body, keep_alive=self.keep_alive, headers=headers))

    # -- writing answers ------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.unsent = memoryview(data)[sent:]
            self.loop.add_writer(self.fd, self._on_writable)
        elif not self.keep_alive:
            self.close()
        else:
            self._became_idle()

    def _on_writable(self) -> None:
        assert self.unsent is not None
        try:
            sent = self.sock.send(self.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.unsent = self.unsent[sent:] if sent < len(self.unsent) else None
        if self.unsent is None:
            self.loop.remove_writer(self.fd)
            if self.keep_alive:
                self._became_idle()
                self._next()
            else:
                self.close()

    def _became_idle(self) -> None:
        # The idle and header timeouts run from here, for the next request and
        # for any part of it that came pipelined behind the last one.
        self.idle_since = time.monotonic()

    # -- ending ---------------------------------------------------------

    def close_if_idle(self, *, now: float, idle_for: float, head_for: float | None = None) -> None:
        """Close the connection if it has waited ``idle_for`` seconds for a
        request, or ``head_for`` seconds for the rest of a head it has begun.
        Busy connections (a parked poll, an answer being sent) are not idle."""
        if not self.idle:
            return
        if self.inbox and head_for is not None and now - self.idle_since >= head_for:
            log.info("closing %s: no complete request head in %.1f s", self._remote_ip(), head_for)
            self.close()
        elif now - self.idle_since >= idle_for:
            self.close()

    def close(self) -> None:
        """Hang up (or notice the poller did): stop waiting, close the socket."""
        if self.closed:
            return
        self._let_go()
        if self.task is not None:
            self.task.cancel()
        self.sock.close()

    def _let_go(self) -> None:
        """Stop all I/O and waiting on this socket, without closing it."""
        self.closed = True
        if self.counted_as is not None:
            self.node.limits.close_connection(self.counted_as)
            self.counted_as = None
        self._unpark()
        self._read(False)
        if self.unsent is not None:
            self.loop.remove_writer(self.fd)
            self.unsent = None
        self.node.poll_connection_gone(self)

    def _remote_ip(self) -> str:
        return str(self.address[0]) if isinstance(self.address, tuple) else ""


class MessagesHandler(BaseHandler):
    """``POST /api/rooms/R/messages``: a send, or a change (``type`` edit, delete,
    react, unreact), that answers once it is stored: ``{"id", "seq"}``."""

    async def post(self, room_name: str) -> None:
        nick = self.current_nick()
        send = parse_send_body(room_name, self.request.body)
        try:
            self.node.limits.check_send(nick_key(nick), self.address_key, now=time.monotonic())
            if isinstance(send, Change):
                message = await self.node.change(send, nick=nick)
            else:
                message = await self.node.send(
                    room=send.room, nick=nick, body=send.body, id=send.id, reply_to=send.reply_to,
                    attachments=send.attachments,
                )
        except ClientError as exc:
            exc.id = send.id  # the answer names the send it refuses
            raise
        self.write_json({"id": send.id, "seq": message["seq"]})
