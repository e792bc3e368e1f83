"""The one place that leans on Tornado's IOStream internals.

Fan-out writes one pre-built frame to thousands of streams. ``IOStream.write``
makes and later resolves a Future for every call, which caps a broadcast at about
half of what the kernel can take. :func:`write_now` hands the bytes straight to
``socket.send`` when the stream has nothing queued, and gives only a remainder
(when the kernel buffer is full) to the stream, which then watches for
writability as usual. Ordering is kept: once anything is queued, everything goes
through the queue.

It reads ``IOStream._write_buffer`` and ``IOStream.socket``;
``tests/test_streams.py`` fails loudly if a Tornado upgrade changes them. TLS
streams always take the plain path: their bytes must go through the SSL object.
"""

from __future__ import annotations

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

__all__ = ["buffered_bytes", "write_now", "check_internals"]


def buffered_bytes(stream: IOStream) -> int:
    """Bytes written to ``stream`` but not yet handed to the kernel."""
    return len(stream._write_buffer)


def write_now(stream: IOStream, data: bytes) -> None:
    """Send ``data`` on ``stream`` without making a Future when the kernel takes it all.

    Raises :class:`StreamClosedError` if the stream is closed.
    """
    if stream.closed():
        raise StreamClosedError()
    if not stream._write_buffer and not isinstance(stream, SSLIOStream):
        try:
            sent = stream.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # A reset peer is a close, not an error; let the stream report it.
            stream.close(exc_info=exc)
            raise StreamClosedError(real_error=exc) from None
        if sent == len(data):
            return
        data = data[sent:]
    stream.write(data)


def check_internals(stream: IOStream) -> None:
    """Raise if this Tornado no longer has what this module reads."""
    buffer = getattr(stream, "_write_buffer", None)
    if buffer is None or not hasattr(buffer, "__len__"):
        raise RuntimeError("tornado IOStream._write_buffer changed; update squall/web/streams.py")
    if not hasattr(stream, "socket"):
        raise RuntimeError("tornado IOStream.socket changed; update squall/web/streams.py")
