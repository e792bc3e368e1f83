"""The one place that leans on Tornado's IOStream internals.

Fan-out needs to know how much a client's stream still has to send, without
awaiting a future per write. Tornado keeps that in ``IOStream._write_buffer``;
``tests/test_streams.py`` fails loudly if an upgrade renames it.
"""

from __future__ import annotations

from tornado.iostream import IOStream

__all__ = ["buffered_bytes", "check_internals"]


def buffered_bytes(stream: IOStream) -> int:
    """Bytes written to ``stream`` but not yet handed to the kernel."""
    return len(stream._write_buffer)


def check_internals(stream: IOStream) -> None:
    """Raise if this Tornado no longer has what :func:`buffered_bytes` reads."""
    if not hasattr(stream, "_write_buffer") or not hasattr(stream._write_buffer, "__len__"):
        raise RuntimeError("tornado.iostream.IOStream._write_buffer changed; update squall/web/streams.py")
