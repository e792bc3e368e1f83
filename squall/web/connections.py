"""The HTTP server, counting the raw connections it owns.

Tornado owns a connection from accept until a WebSocket upgrade or a
long-poll takes its socket (``web/streams.py``), or until it closes. While it
does, the connection counts in :attr:`Limits.http_connections
<squall.limits.Limits.http_connections>`, by TCP peer: no request has been
read yet, so ``X-Forwarded-For`` is not known, and a trusted proxy, which
carries many clients, is held only to the total. A connection over a limit is
answered at once with a ``too_many_connections`` refusal and closed, before
Tornado reads a byte of it. Once a transport takes the socket, the count
moves to that transport's own (``max_connections_per_ip``, per client).
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from ..address import Network, parse_ip
from ..errors import TooManyConnections
from ..http1 import response
from ..limits import Limits

__all__ = ["CountingHTTPServer"]


class CountingHTTPServer(HTTPServer):
    """:class:`~tornado.httpserver.HTTPServer` that counts its connections in ``limits``.

    Call :meth:`count_in` before it listens.
    """

    _limits: Limits | None = None
    _trusted: tuple[Network, ...] = ()

    def count_in(self, limits: Limits, *, trusted_proxies: tuple[Network, ...]) -> None:
        self._limits = limits
        self._trusted = trusted_proxies

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        if self._limits is not None:
            peer = _peer(address)
            ip = parse_ip(peer)
            per_peer = ip is None or not any(ip in network for network in self._trusted)
            try:
                self._limits.open_http_connection(peer, per_peer=per_peer)
            except TooManyConnections as refusal:
                _refuse(stream, refusal)
                return
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        if self._limits is not None:
            context = getattr(server_conn, "context", None)
            self._limits.close_http_connection(_peer(getattr(context, "address", None)))


def _peer(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else ""


def _refuse(stream: IOStream, refusal: TooManyConnections) -> None:
    """Answer without reading, and hang up. The answer is small enough for the
    socket's send buffer, so one non-blocking send delivers it."""
    sock = stream.socket
    try:
        sock.send(response(
            refusal.status, orjson.dumps(refusal.to_dict()), keep_alive=False, headers=refusal.headers
        ))
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    stream.close()
