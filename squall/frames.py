"""Bytes that go out to clients, built once per broadcast.

A :class:`Broadcast` is one event for one room. Every transport asks it for the
bytes it needs (:attr:`ws_frame`, :attr:`sse_event`), which are built the first
time they are asked for and then shared by every member: one JSON encode and
one WebSocket frame per broadcast, not per client.
"""

from __future__ import annotations

import struct
from functools import cached_property

__all__ = ["Batch", "Broadcast", "encode_text_frame"]


def encode_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 §5.2): server → client."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


class Broadcast:
    """One event for a room's members: ``payload`` is its JSON, encoded once.

    ``seq`` is set for chat messages (ordered, resumable) and None for
    ephemeral events (presence, typing, link-preview updates).
    """

    __slots__ = ("room", "seq", "payload", "kind", "mentions", "__dict__")

    def __init__(
        self,
        room: str,
        seq: int | None,
        payload: bytes,
        kind: str = "message",
        mentions: frozenset[str] = frozenset(),
    ) -> None:
        self.room = room
        self.seq = seq
        self.payload = payload
        self.kind = kind
        # Casefolded nicks this message mentions: handing it to one of them
        # counts as "seen" for e-mail notifications.
        self.mentions = mentions

    @property
    def ephemeral(self) -> bool:
        return self.seq is None

    @cached_property
    def ws_frame(self) -> bytes:
        return encode_text_frame(self.payload)

    @cached_property
    def sse_event(self) -> bytes:
        head = b"id: %d\n" % self.seq if self.seq is not None else b""
        return head + b"event: " + self.kind.encode() + b"\ndata: " + self.payload + b"\n\n"

    def __repr__(self) -> str:
        return f"Broadcast({self.room!r}, seq={self.seq}, kind={self.kind!r})"


class Batch:
    """Consecutive messages of one room that became ready together.

    A member that keeps up gets them in one write (:attr:`ws_frames`), built
    once for every member: under load, messages come back from the processor
    and over the bus many at a time, and one ``send`` per member per batch
    instead of per message is most of what fan-out costs.
    """

    __slots__ = ("room", "broadcasts", "first_seq", "last_seq", "mentions", "__dict__")

    def __init__(self, broadcasts: list[Broadcast]) -> None:
        self.room = broadcasts[0].room
        self.broadcasts = broadcasts
        self.first_seq: int = broadcasts[0].seq  # type: ignore[assignment]
        self.last_seq: int = broadcasts[-1].seq  # type: ignore[assignment]
        self.mentions = frozenset().union(*(b.mentions for b in broadcasts))

    @cached_property
    def ws_frames(self) -> bytes:
        return b"".join(b.ws_frame for b in self.broadcasts)

    def __repr__(self) -> str:
        return f"Batch({self.room!r}, seq={self.first_seq}..{self.last_seq})"
