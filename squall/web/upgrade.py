"""WebSocket upgrades served from the request head, without Tornado's request machinery.

Theory of operation. After a restart, every client of a web node comes back
within seconds, and each comes back with an upgrade request. Through Tornado's
application (routing, a ``RequestHandler``, its coroutine, ``prepare``) one
upgrade cost several hundred microseconds and left a trail of objects for the
garbage collector; 10,000 of them held the event loop for seconds. So
:class:`~squall.web.longpoll.PollFirst`, which already sees every request
head, hands an ordinary upgrade here (:func:`take_upgrade`): the same checks as
:class:`~squall.web.websocket.WebSocketEndpoint` makes — WebSocket enabled, the
``Host``, the RFC 6455 headers and ``Origin``, the token, the per-address
connection limit — then the ``101`` and the socket to a
:class:`~squall.web.websocket.ChatConnection`.

Anything out of the ordinary (WebSocket off, shutting down, a foreign
``Host``, bad upgrade headers, a body) is declined before anything is done,
and the application serves — and refuses — it exactly as before, so every
refusal keeps one place and one count. Once taken, the connection is ours: a
token this node has not checked lately is checked against the store first
(the socket is not read meanwhile), an unknown or ended session gets the
``101`` and close 4001 as on the endpoint, and a connection over its address's
limit gets the ``429`` or ``503`` refusal and is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson
from tornado.http1connection import HTTP1Connection
from tornado.log import access_log
from tornado.websocket import WebSocketProtocol13

from ..address import rate_key
from ..errors import ClientError, TooManyConnections
from ..http1 import RequestHead, query_params, response
from .auth import Session
from .base import find_token, redact_uri
from .streams import take_socket
from .websocket import ChatConnection, RefusedConnection, check_upgrade

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["take_upgrade"]

log = logging.getLogger("squall.ws")

_INTERNAL = b'{"code":"internal","reason":"the server failed to handle this request"}'
_SHUTTING_DOWN = b'{"code":"unavailable","reason":"the server is shutting down"}'


def take_upgrade(node: WebNode, connection: HTTP1Connection, head: RequestHead, peer: str) -> bool:
    """Serve the upgrade request ``head`` on Tornado's ``connection`` (from
    TCP ``peer``) if it is an ordinary one; False, with nothing done, for
    anything else: the application serves it then."""
    settings = node.settings
    headers = head.headers
    path, _, query = head.target.partition("?")
    if path != "/ws" or not settings.websocket or node.stopping or head.has_body or head.refusal is not None:
        return False
    host = headers.get("host")
    if host is None or not node.hosts.allows(host):
        return False
    try:
        key = check_upgrade(lambda name: headers.get(name.lower()), host, settings.allowed_origins)
    except ClientError:
        return False
    token, _by_cookie = find_token(
        headers.get("authorization", ""), query_params(query).get("token"), headers.get("cookie")
    )
    address = rate_key(node.client_address(peer, headers.get("x-forwarded-for")))
    started = time.monotonic()
    sock, leftover = take_socket(connection.detach())
    upgrade = _Upgrade(node, sock, leftover, key, address, head.target, peer, started)
    session = node.tokens.cached(token, now=started)
    if session is not None or not token:
        upgrade.finish(session)
    else:
        asyncio.ensure_future(upgrade.check_then_finish(token))
    return True


class _Upgrade:
    """One upgrade taken over: the socket, and what its answer needs."""

    __slots__ = ("node", "sock", "leftover", "key", "address", "target", "peer", "started")

    def __init__(
        self, node: WebNode, sock: socket.socket, leftover: bytes, key: str, address: str,
        target: str, peer: str, started: float,
    ) -> None:
        self.node = node
        self.sock = sock
        self.leftover = leftover
        self.key = key
        self.address = address
        self.target = target
        self.peer = peer
        self.started = started

    async def check_then_finish(self, token: str) -> None:
        """The store decides whether the session is live (the first time this node sees it)."""
        try:
            session = await self.node.tokens.check(token, now=time.monotonic())
        except Exception:
            log.exception("GET %s failed", redact_uri(self.target))
            self._answer(500, _INTERNAL)
            return
        if self.node.stopping:
            self._answer(503, _SHUTTING_DOWN)
            return
        self.finish(session)

    def finish(self, session: Session | None) -> None:
        """Count the connection against its address, answer 101 and hand the socket over."""
        node = self.node
        try:
            # Counted with or without a session: a refused socket lives up to close_timeout.
            node.limits.open_connection(self.address)
        except TooManyConnections as refusal:
            self._answer(refusal.status, orjson.dumps(refusal.to_dict()), headers=refusal.headers)
            return
        self._log(101)
        handshake = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {WebSocketProtocol13.compute_accept_value(self.key)}\r\n\r\n"
        ).encode("ascii")
        address = self.address
        if session is None:
            RefusedConnection(
                self.sock, node.settings, on_closed=lambda: node.limits.close_connection(address)
            ).start(handshake, self.leftover)
            return
        connection = ChatConnection(node, self.sock, session.nick, address)
        connection.session_id = session.id
        connection.write(handshake)
        connection.start(self.leftover)

    def _answer(self, status: int, body: bytes, *, headers: Any = None) -> None:
        """A refusal before any upgrade, and hang up. It is small enough for the
        socket's send buffer, so one non-blocking send delivers it."""
        self._log(status)
        try:
            self.sock.send(response(status, body, keep_alive=False, headers=headers))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()

    def _log(self, status: int) -> None:
        # As Tornado's access log (web/node.py, log_request): quiet for what succeeds or is limited.
        level = logging.DEBUG if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if status in (421, 429):
            level = logging.DEBUG
        if access_log.isEnabledFor(level):
            access_log.log(level, "%d GET %s (%s) %.2fms", status, redact_uri(self.target), self.peer,
                           1000.0 * (time.monotonic() - self.started))
