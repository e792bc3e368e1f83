"""Newline-delimited JSON, the processor link's framing, without I/O.

Theory of operation: the reader is fed whatever bytes the socket produced
(:meth:`LineReader.receive_data`) and hands back one :class:`Line` per complete
line — either the decoded JSON object or the reason it could not be decoded.
A line longer than ``max_line`` raises :class:`~squall.errors.LineTooLong`: the
caller answers with an error and closes, because after an overlong line there
is no telling where the next one starts without buffering without bound.

One object per line, UTF-8, so a person can talk to the processor with ``nc``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from .errors import LineTooLong

__all__ = ["Line", "LineReader", "encode_line"]


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One received line: ``value`` when it decoded to a JSON object, else ``error``."""

    value: dict[str, Any] | None
    error: str | None = None


class LineReader:
    """Splits a byte stream into JSON lines, each at most ``max_line`` bytes.

    After calling :meth:`receive_data`, act on every returned :class:`Line` in
    order, then check :attr:`overflow`: if it is set, report it and close.
    """

    __slots__ = ("max_line", "overflow", "_buffer")

    def __init__(self, *, max_line: int = 64 * 1024) -> None:
        self.max_line = max_line
        self.overflow: LineTooLong | None = None
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> list[Line]:
        """The complete lines in what has arrived so far.

        Raises :class:`LineTooLong` if called again after an overflow.
        """
        if self.overflow is not None:
            raise self.overflow
        buffer = self._buffer
        buffer += data
        lines: list[Line] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.max_line:
                self.overflow = LineTooLong(end - start, self.max_line)
                break
            raw = bytes(buffer[start:end]).strip()
            start = end + 1
            if raw:
                lines.append(_decode(raw))
        del buffer[:start]
        if self.overflow is None and len(buffer) > self.max_line:
            self.overflow = LineTooLong(len(buffer), self.max_line)
        if self.overflow is not None:
            buffer.clear()
        return lines

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _decode(raw: bytes) -> Line:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Line(None, f"line is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return Line(None, "line must be a JSON object")
    return Line(value)


def encode_line(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value) + b"\n"
