"""The one place that leans on Tornado's IOStream internals.

* :func:`take_socket` hands a socket, once Tornado has parsed a request, to
  one of Squall's own lean connections (a WebSocket after its upgrade,
  ``web/websocket.py``; a long-poll keep-alive connection, ``web/longpoll.py``),
  together with any bytes Tornado had already read past the request.
* :func:`give_socket` hands such a socket back to Tornado in a new stream,
  with the bytes Squall had read but not served.
* :func:`receive` is how those connections read their socket.
* :func:`buffered_bytes` tells how much an SSE stream still has to send, so a
  slow reader can be cut off without a Future per write.
* :func:`read_buffered` tells whether a kept-alive connection has begun its
  next request head, so a slow one can be cut off.

They read ``IOStream._write_buffer``, ``_read_buffer``, ``_read_buffer_size``,
``_state`` and ``socket``; ``tests/test_streams.py`` fails loudly if a Tornado
upgrade changes them. TLS streams are refused: their bytes must go through the
SSL object (terminate TLS at a proxy in front of Squall).
"""

from __future__ import annotations

import socket

from tornado.iostream import IOStream, SSLIOStream

__all__ = ["buffered_bytes", "read_buffered", "take_socket", "give_socket", "receive", "check_internals"]


def buffered_bytes(stream: IOStream) -> int:
    """Bytes written to ``stream`` but not yet handed to the kernel."""
    return len(stream._write_buffer)


def read_buffered(stream: IOStream) -> int:
    """Bytes ``stream`` has received but not yet handed to whoever reads it."""
    return int(stream._read_buffer_size)


def check_internals(stream: IOStream) -> None:
    """Raise if this Tornado no longer has what this module reads."""
    buffer = getattr(stream, "_write_buffer", None)
    if buffer is None or not hasattr(buffer, "__len__"):
        raise RuntimeError("tornado IOStream._write_buffer changed; update squall/web/streams.py")
    for name in ("socket", "_read_buffer", "_read_buffer_size", "_state"):
        if not hasattr(stream, name):
            raise RuntimeError(f"tornado IOStream.{name} changed; update squall/web/streams.py")
    if not isinstance(stream._read_buffer, bytearray):
        raise RuntimeError("tornado IOStream._read_buffer is no longer a bytearray")


def take_socket(stream: IOStream) -> tuple[socket.socket, bytes]:
    """Take a detached stream's socket away from Tornado, with any bytes it read ahead.

    After this the stream must not be used; the caller owns the socket (still
    non-blocking) and must close it.
    """
    if isinstance(stream, SSLIOStream):
        raise ValueError("a TLS stream's socket cannot be taken over")
    sock = stream.socket
    leftover = bytes(stream._read_buffer)
    stream._read_buffer.clear()
    stream._read_buffer_size = 0
    if stream._state is not None:
        stream.io_loop.remove_handler(sock)
        stream._state = None
    # Without its socket the stream can neither read nor close it behind our back.
    stream.socket = None  # type: ignore[assignment]
    return sock, leftover


def give_socket(sock: socket.socket, read_ahead: bytes) -> IOStream:
    """A new stream over a socket taken with :func:`take_socket`, whose reads
    start with ``read_ahead`` (bytes already received but not yet served)."""
    stream = IOStream(sock)
    stream._read_buffer += read_ahead
    stream._read_buffer_size += len(read_ahead)
    return stream


def receive(sock: socket.socket, size: int) -> bytes | None:
    """Up to ``size`` bytes from a non-blocking socket the event loop said is
    readable: b"" once the peer has gone (a reset counts), None if nothing came."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
