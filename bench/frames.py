"""Just enough RFC 6455 for the bench: the handshake, and frames in both directions.

Theory of operation: the ceiling server and the load generator both need to put
WebSocket frames on the wire and take them off again, and both want to do as
little work per frame as Python allows. Nothing here touches a socket. The
parsers take a buffer and a start offset and return where they stopped, so a
caller can walk a whole ``data_received`` chunk without slicing it into copies.

What is left out on purpose: fragmentation (neither Squall nor the peers
fragment small text messages), extensions (the load generator never offers
permessage-deflate, so nobody may use it, RFC 6455 section 9.1) and the UTF-8
check on text frames (the payload is opaque to the bench).
"""

from __future__ import annotations

import base64
import hashlib
import os

__all__ = [
    "GUID",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameTooBig",
    "accept_key",
    "client_frame",
    "client_handshake",
    "new_key",
    "parse_frame_header",
    "server_frame",
    "unmask",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class FrameTooBig(Exception):
    """A frame announced a payload longer than the reader's ``max_size``."""

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(f"frame with {size} bytes exceeds limit of {max_size} bytes")


def new_key() -> bytes:
    """Return a fresh ``Sec-WebSocket-Key`` value (16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16))


def accept_key(key: bytes) -> bytes:
    """Return the ``Sec-WebSocket-Accept`` value that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def client_handshake(host: str, path: str, key: bytes) -> bytes:
    """Return the opening GET request of a client that offers no extensions."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def _header(opcode: int, length: int, mask_bit: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 65536:
        return bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """Return one unmasked, unfragmented frame, as a server sends it."""
    return _header(opcode, len(payload), 0) + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask``; masking is its own inverse."""
    n = len(payload)
    if n == 0:
        return payload
    # One big-integer XOR beats a Python loop over bytes by two orders of magnitude.
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """Return one masked frame, as RFC 6455 section 5.3 requires of a client."""
    mask = os.urandom(4)
    return _header(opcode, len(payload), 0x80) + mask + unmask(payload, mask)


def parse_frame_header(
    data: bytes, start: int, *, max_size: int
) -> tuple[int, int, int, bytes | None] | None:
    """Read the frame header at ``data[start:]``.

    Returns ``(opcode, payload_start, payload_end, mask)`` with ``mask`` None for an
    unmasked frame, or None when the header or its payload has not fully arrived:
    keep the bytes from ``start`` on and call again once more data came in.
    Raises :class:`FrameTooBig` for a payload longer than ``max_size`` bytes.
    """
    avail = len(data) - start
    if avail < 2:
        return None
    second = data[start + 1]
    length = second & 0x7F
    pos = start + 2
    if length == 126:
        if avail < 4:
            return None
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
    elif length == 127:
        if avail < 10:
            return None
        length = int.from_bytes(data[pos : pos + 8], "big")
        pos += 8
    if length > max_size:
        raise FrameTooBig(length, max_size)
    mask = None
    if second & 0x80:
        if len(data) < pos + 4:
            return None
        mask = data[pos : pos + 4]
        pos += 4
    end = pos + length
    if end > len(data):
        return None
    return data[start] & 0x0F, pos, end, mask
