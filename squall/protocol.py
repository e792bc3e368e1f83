"""The client wire protocol, without I/O.

Theory of operation: every transport (WebSocket frames, HTTP query strings and
bodies) hands raw client input to a function here and gets back either a frozen
command dataclass or a :class:`~squall.errors.BadRequest` whose ``code`` and
``reason`` go to the client unchanged. Nothing here touches a socket or a clock,
so the whole table of bad inputs is tested without a server.

Names are checked here too: nicks (1–32 Unicode letters, digits, ``_ - .``,
compared case-insensitively through :func:`nick_key`) and rooms
(``[a-z0-9][a-z0-9_-]{0,63}``). Bidirectional controls (:data:`BIDI_CONTROLS`)
are named in the refusal: they reorder the text around them on screen, the
"Trojan Source" trick, so a name holding one could pose as another.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .errors import BadRequest

__all__ = [
    "Join", "Leave", "Send", "Typing", "Ping", "Command",
    "parse_command", "check_room", "check_nick", "nick_key", "check_client_id",
    "int_param", "float_param", "MAX_CLIENT_ID", "MAX_NICK", "BIDI_CONTROLS",
]

MAX_NICK = 32
MAX_CLIENT_ID = 64
_ROOM = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_NICK_PUNCTUATION = frozenset("_-.")
# Explicit bidirectional formatting characters (UAX #9 section 2): embeddings and
# overrides U+202A-202E, isolates U+2066-2069, and the marks LRM, RLM and ALM.
BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)


@dataclasses.dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    room: str
    body: str
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Typing:
    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    pass


Command = Join | Leave | Send | Typing | Ping


def _refuse_bidi(text: str, what: str, code: str) -> None:
    for char in text:
        if char in BIDI_CONTROLS:
            raise BadRequest(
                f"{what} may not contain the bidirectional control character"
                f" U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})",
                code=code,
            )


def check_room(room: object) -> str:
    if not isinstance(room, str):
        raise BadRequest(f"room must be a string, got {_kind(room)}", code="bad_room")
    _refuse_bidi(room, "room name", "bad_room")
    if not _ROOM.fullmatch(room):
        shown = room if len(room) <= 80 else room[:77] + "..."
        raise BadRequest(
            f"room {shown!r} is not a valid name: 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit",
            code="bad_room",
        )
    return room


def check_nick(nick: object) -> str:
    if not isinstance(nick, str):
        raise BadRequest(f"nick must be a string, got {_kind(nick)}", code="bad_nick")
    if not 1 <= len(nick) <= MAX_NICK:
        raise BadRequest(
            f"nick must be 1-{MAX_NICK} characters, got {len(nick)}", code="bad_nick"
        )
    _refuse_bidi(nick, "nick", "bad_nick")
    for char in nick:
        if not (char.isalnum() or char in _NICK_PUNCTUATION):
            raise BadRequest(
                f"nick may hold only letters, digits, '_', '-' and '.', not {char!r}",
                code="bad_nick",
            )
    return nick


def nick_key(nick: str) -> str:
    """The form nicks are compared in: ``Alice`` and ``ALICE`` are one user."""
    return nick.casefold()


def check_client_id(cid: object) -> str:
    if not isinstance(cid, str):
        raise BadRequest(f"id must be a string, got {_kind(cid)}", code="bad_id")
    if not 1 <= len(cid) <= MAX_CLIENT_ID:
        raise BadRequest(
            f"id must be 1-{MAX_CLIENT_ID} characters, got {len(cid)}", code="bad_id"
        )
    return cid


def parse_command(text: str | bytes) -> Command:
    """Parse one client frame into a command, or raise :class:`BadRequest`."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"frame is not valid JSON: {exc}", code="bad_json") from None
    if not isinstance(data, dict):
        raise BadRequest(f"frame must be a JSON object, got {_kind(data)}", code="bad_frame")
    kind = data.get("type")
    if kind is None:
        raise BadRequest("frame has no 'type' field", code="bad_field")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise BadRequest(f"unknown type {kind!r}; known types are {known}", code="unknown_type")
    return parser(data)


def _parse_join(data: Mapping[str, Any]) -> Join:
    since = data.get("since")
    if since is not None:
        since = _seq_field(since, "since")
    return Join(room=check_room(_required(data, "room")), since=since)


def _parse_leave(data: Mapping[str, Any]) -> Leave:
    return Leave(room=check_room(_required(data, "room")))


def _parse_send(data: Mapping[str, Any]) -> Send:
    room = check_room(_required(data, "room"))
    body = _required(data, "body")
    if not isinstance(body, str):
        raise BadRequest(f"body must be a string, got {_kind(body)}", code="bad_field")
    return Send(room=room, body=body, id=check_client_id(_required(data, "id")))


def _parse_typing(data: Mapping[str, Any]) -> Typing:
    return Typing(room=check_room(_required(data, "room")))


def _parse_ping(data: Mapping[str, Any]) -> Ping:
    return Ping()


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Command]] = {
    "join": _parse_join,
    "leave": _parse_leave,
    "send": _parse_send,
    "typing": _parse_typing,
    "ping": _parse_ping,
}


def _required(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise BadRequest(f"{data.get('type')!r} frame needs a {name!r} field", code="bad_field")
    return data[name]


def _seq_field(value: object, name: str) -> int:
    # bool is an int subclass; `"since": true` is a client bug, not seq 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a whole number, got {_kind(value)}", code="bad_field")
    if value < 0:
        raise BadRequest(f"{name} must be 0 or more, got {value}", code="bad_field")
    return value


def int_param(
    raw: str | None, name: str, *, default: int | None, low: int, high: int
) -> int | None:
    """A whole-number query parameter within ``[low, high]``, or ``default`` when absent."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw[:40]!r}", code="bad_param") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}", code="bad_param")
    return value


def float_param(raw: str | None, name: str, *, default: float, low: float, high: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw[:40]!r}", code="bad_param") from None
    if not low <= value <= high:  # also refuses nan
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {raw[:40]}", code="bad_param")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
