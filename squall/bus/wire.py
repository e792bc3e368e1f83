"""How broadcasts travel between web nodes on a shared bus, without I/O.

A room's broadcasts go on the room's channel (:func:`room_channel`). One bus
message carries one or more broadcasts of that room from one node, in order::

    SQB1 <origin> <published_ms>\\n
    [<seq or null>, "<kind>", ["<mentioned nick key>", ...], <payload length>]\\n<payload>
    ...

The payload (the event's JSON, as clients receive it) is carried byte for
byte: it is encoded once by the node that made it, and the receiving node
slices it out without parsing it. ``origin`` names the node that published,
so that a node skips its own broadcasts (it delivered them when it published
them); ``published_ms`` (the publisher's clock, ms since the epoch) lets the
receiver measure the bus's lag. A start line without it (a node from before)
is accepted.

Node-wide notices go on the control channel (:func:`control_channel`) as a JSON
object with an ``op``: ``resync`` (a node could not publish everything: read
every open room from the store), ``ended`` (sessions that have ended) and
``access`` (rooms or memberships that changed: ``changes``, a list of
``[room, nick key or "", eviction code or ""]``) and ``seen`` (read markers
that moved: ``changes`` of ``[room, nick key, seq]``, all text).

Everything read from the bus is checked: a message that does not parse raises
:class:`BadBusMessage`, which the caller logs and drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from ..frames import Broadcast

__all__ = [
    "BadBusMessage", "BusMessage", "Control", "room_channel", "control_channel", "room_of",
    "encode_broadcasts", "decode_broadcasts", "encode_control", "decode_control",
    "MAX_MESSAGE_BYTES",
]

_MAGIC = b"SQB1 "
# A bus message grows up to this size before the next broadcasts of the same
# room start another one: Redis's own limit is far above, but one huge message
# would hold up every other room behind it on the subscription connection.
MAX_MESSAGE_BYTES = 1024 * 1024
_MAX_KIND_CHARS = 32
_MAX_ORIGIN_BYTES = 64
_MAX_TIME_DIGITS = 15  # ms since the epoch until the year 33658
_MAX_HEADER_BYTES = 64 * 1024  # seq, kind and mentioned nick keys


class BadBusMessage(ValueError):
    """A bus message that is not one of ours (or is damaged)."""


class BusMessage(NamedTuple):
    origin: bytes
    published_ms: int | None  # None from a node that does not stamp its messages
    broadcasts: list[Broadcast]


def room_channel(prefix: str, room: str) -> bytes:
    return f"{prefix}room:{room}".encode()


def control_channel(prefix: str) -> bytes:
    return f"{prefix}control".encode()


def room_of(prefix: str, channel: bytes) -> str | None:
    """The room whose channel ``channel`` is, or None."""
    head = f"{prefix}room:".encode()
    if not channel.startswith(head):
        return None
    try:
        return channel[len(head):].decode()
    except UnicodeDecodeError:
        return None


def encode_broadcasts(origin: bytes, broadcasts: Iterable[Broadcast], *, published_ms: int) -> list[bytes]:
    """Bus messages for consecutive ``broadcasts`` of one room, each at most
    about :data:`MAX_MESSAGE_BYTES` (a single bigger broadcast travels alone)."""
    start = b"%s%s %d\n" % (_MAGIC, origin, published_ms)
    messages: list[bytes] = []
    parts: list[bytes] = [start]
    size = len(start)
    for broadcast in broadcasts:
        header = orjson.dumps(
            [broadcast.seq, broadcast.kind, sorted(broadcast.mentions), len(broadcast.payload)]
        )
        record = len(header) + 1 + len(broadcast.payload)
        if size + record > MAX_MESSAGE_BYTES and len(parts) > 1:
            messages.append(b"".join(parts))
            parts, size = [start], len(start)
        parts += (header, b"\n", broadcast.payload)
        size += record
    if len(parts) > 1:
        messages.append(b"".join(parts))
    return messages


def decode_broadcasts(room: str, data: bytes) -> BusMessage:
    """One bus message on ``room``'s channel."""
    if not data.startswith(_MAGIC):
        raise BadBusMessage("not a squall bus message (no SQB1 mark)")
    end = data.find(b"\n", len(_MAGIC), len(_MAGIC) + _MAX_ORIGIN_BYTES + _MAX_TIME_DIGITS + 2)
    if end < 0:
        raise BadBusMessage("the origin line is missing or too long")
    origin, published_ms = _start_line(data[len(_MAGIC):end])
    position = end + 1
    broadcasts: list[Broadcast] = []
    view = memoryview(data)
    while position < len(data):
        end = data.find(b"\n", position, position + _MAX_HEADER_BYTES)
        if end < 0:
            raise BadBusMessage(f"broadcast {len(broadcasts)}: header line missing or too long")
        try:
            header = orjson.loads(view[position:end])
        except orjson.JSONDecodeError as exc:
            raise BadBusMessage(f"broadcast {len(broadcasts)}: bad header: {exc}") from None
        seq, kind, mentions, length = _check_header(header, len(broadcasts))
        position = end + 1 + length
        if position > len(data):
            raise BadBusMessage(f"broadcast {len(broadcasts)}: payload cut short")
        payload = data[end + 1 : position]
        broadcasts.append(Broadcast(room, seq, payload, kind=kind, mentions=mentions))
    if not broadcasts:
        raise BadBusMessage("a bus message without broadcasts")
    return BusMessage(origin, published_ms, broadcasts)


def _start_line(line: bytes) -> tuple[bytes, int | None]:
    origin, space, stamp = line.rpartition(b" ")
    if not space:
        origin, stamp = line, b""
    if stamp and not (stamp.isdigit() and len(stamp) <= _MAX_TIME_DIGITS):
        raise BadBusMessage(f"the publish time {stamp[:32]!r} is not a number of milliseconds")
    if not 0 < len(origin) <= _MAX_ORIGIN_BYTES or b" " in origin:
        raise BadBusMessage("the origin is empty, too long or has a space")
    return origin, int(stamp) if stamp else None


def _check_header(header: Any, index: int) -> tuple[int | None, str, frozenset[str], int]:
    if not isinstance(header, list) or len(header) != 4:
        raise BadBusMessage(f"broadcast {index}: header is not [seq, kind, mentions, length]")
    seq, kind, mentions, length = header
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63):
        raise BadBusMessage(f"broadcast {index}: seq {seq!r} is not null or a positive integer")
    if not isinstance(kind, str) or not 0 < len(kind) <= _MAX_KIND_CHARS:
        raise BadBusMessage(f"broadcast {index}: kind {kind!r} is not a short string")
    if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
        raise BadBusMessage(f"broadcast {index}: mentions are not a list of strings")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise BadBusMessage(f"broadcast {index}: length {length!r} is not a size")
    return seq, kind, frozenset(mentions), length


class Control:
    """A node-wide notice from the control channel."""

    __slots__ = ("origin", "op", "sessions", "changes")

    def __init__(
        self, origin: bytes, op: str, sessions: Sequence[str] = (),
        changes: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        self.origin = origin
        self.op = op
        self.sessions = tuple(sessions)
        self.changes = tuple(changes)


def encode_control(
    origin: bytes, op: str, sessions: Sequence[str] = (), *, changes: Sequence[tuple[str, str, str]] = ()
) -> bytes:
    value: dict[str, Any] = {"origin": origin.decode(), "op": op}
    if sessions:
        value["sessions"] = list(sessions)
    if changes:
        value["changes"] = [list(change) for change in changes]
    return orjson.dumps(value)


def decode_control(data: bytes) -> Control:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadBusMessage(f"control message is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadBusMessage("control message is not a JSON object")
    origin, op, sessions = value.get("origin"), value.get("op"), value.get("sessions", [])
    if not isinstance(origin, str) or op not in ("resync", "ended", "access", "seen"):
        raise BadBusMessage(f"control message with origin {origin!r} and unknown op {op!r}")
    if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
        raise BadBusMessage("control message: sessions are not a list of strings")
    raw_changes = value.get("changes", [])
    if not isinstance(raw_changes, list) or not all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(part, str) for part in c) for c in raw_changes
    ):
        raise BadBusMessage("control message: changes are not a list of [room, key, value] strings")
    return Control(origin.encode(), op, sessions, [(c[0], c[1], c[2]) for c in raw_changes])
