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

A refused ``send`` carries its ``id`` whenever the frame's id could be read,
whatever else was wrong with it. One refusal needs a second parser: JSON allows
a lone surrogate escape (``"\ud83d"``), which is no Unicode text and which
orjson refuses with the whole frame. Only then is the text read again with the
standard parser, to find the id and say "bad body"; a command read that way is
never returned.

Changes to a message — ``edit``, ``delete``, ``react``, ``unreact`` — are one
command, :class:`Change`, with the ``kind`` and the ``target`` seq; they take
a client ``id`` as sends do, and a refusal carries it the same way. A reaction
is one emoji as Unicode's emoji data (the ``emoji`` package) has it, skin tones
and ZWJ sequences included.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import emoji as emoji_data
import orjson

from .errors import BadRequest, ClientError, Rejected

__all__ = [
    "Join", "Leave", "Send", "Change", "Typing", "Ping", "Command", "check_seq", "check_emoji",
    "MAX_EMOJI_CHARS", "MAX_SEQ",
    "parse_command", "parse_send_body", "check_room", "check_nick", "nick_key", "check_client_id",
    "int_param", "float_param", "member_cursor", "MAX_CLIENT_ID", "MAX_NICK", "MAX_MEMBER_CURSOR",
    "BIDI_CONTROLS", "CANARY_ROOM", "check_link_room", "MAX_ATTACHMENTS", "check_attachment_ids",
]

MAX_NICK = 32
# Files one message may carry.
MAX_ATTACHMENTS = 8
_FILE_ID = re.compile(r"f_[A-Za-z0-9_-]{22}")
# The longest emoji sequence Unicode lists is 10 code points (a family or a
# kiss with skin tones); anything much longer is no single emoji.
MAX_EMOJI_CHARS = 16
# A seq a client may name: JSON numbers past 2**53 lose precision in browsers.
MAX_SEQ = 2**53
MAX_CLIENT_ID = 64
# A members cursor is a casefolded nick, and case folding may triple a
# character's length ("\ufb03", the ffi ligature, folds to "ffi").
MAX_MEMBER_CURSOR = 3 * MAX_NICK
_ROOM = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# The room of the readiness canary (``/readyz``): a web node's own messages,
# sent through processor, store and bus to prove they work. It breaks the room
# rule on purpose (no room starts with "_"), so check_room refuses it on every
# client path — no join, send, poll, stream or member list can name it — and
# only the processor link accepts it (check_link_room).
CANARY_ROOM = "_canary"
_NICK_PUNCTUATION = frozenset("_-.")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
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
    attachments: tuple[str, ...] = ()  # file ids from POST /api/files, the sender's own
    reply_to: int | None = None  # the seq of the message this one answers


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """An ``edit`` (with ``body``), ``delete``, ``react`` or ``unreact`` (with
    ``emoji``) of message ``target`` in ``room``."""

    kind: str
    room: str
    id: str
    target: int
    body: str = ""
    emoji: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Typing:
    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    pass


Command = Join | Leave | Send | Change | Typing | Ping


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


def check_link_room(room: object) -> str:
    """A room on the processor link: any client room, or :data:`CANARY_ROOM`."""
    return CANARY_ROOM if room == CANARY_ROOM else check_room(room)


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
    surrogate = _SURROGATE.search(cid)
    if surrogate is not None:
        raise BadRequest(f"id {_lone_surrogate(surrogate)}", code="bad_id")
    return cid


def parse_command(text: str | bytes) -> Command:
    """Parse one client frame into a command, or raise :class:`ClientError`
    (a refused ``send`` carries its ``id`` when it could be read)."""
    data, refused = _load(text, "frame")
    if not isinstance(data, dict):
        raise BadRequest(f"frame must be a JSON object, got {_kind(data)}", code="bad_frame")
    kind = data.get("type")
    if kind is None:
        raise BadRequest("frame has no 'type' field", code="bad_field")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise BadRequest(f"unknown type {kind!r}; known types are {known}", code="unknown_type")
    command = parser(data)
    if refused is not None:  # read by the lenient parser: refused all the same
        if isinstance(command, (Send, Change)):
            refused.id = command.id
        raise refused
    return command


def parse_send_body(room: str, body: bytes) -> Send | Change:
    """``POST /api/rooms/<room>/messages``: the path's room and the JSON body as
    a :class:`Send` (``type`` absent or ``"send"``: ``body``, ``id``, optional
    ``reply_to``) or a :class:`Change` (``type`` edit, delete, react or unreact),
    or :class:`ClientError` (with the ``id`` whenever it could be read)."""
    data, refused = _load(body, "request body")
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {_kind(data)}", code="bad_json")
    kind = data.get("type", "send")
    command: Send | Change
    if kind == "send":
        command = _with_readable_id(data, lambda: _send_fields(room, data, "the request body"))
    elif isinstance(kind, str) and kind in _CHANGE_KINDS:
        command = _with_readable_id(data, lambda: _change_fields(kind, room, data))
    else:
        raise BadRequest(
            f"type must be send, {', '.join(_CHANGE_KINDS)}; got {str(kind)[:40]!r}", code="unknown_type"
        )
    if refused is not None:
        refused.id = command.id
        raise refused
    return command


def _load(text: str | bytes, what: str) -> tuple[Any, BadRequest | None]:
    """The JSON value of ``text``, and, if only the lenient parser could read
    it, the ``bad_json`` error to raise once the id is known."""
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        refused = BadRequest(f"{what} is not valid JSON: {exc}", code="bad_json")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise refused from None
    if not _SURROGATE_ESCAPE.search(text):
        raise refused
    try:
        return json.loads(text, parse_constant=_refuse_constant), refused
    except (ValueError, RecursionError):
        raise refused from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_join(data: Mapping[str, Any]) -> Join:
    since = data.get("since")
    if since is not None:
        since = _seq_field(since, "since")
    return Join(room=check_room(_required(data, "room")), since=since)


def _parse_leave(data: Mapping[str, Any]) -> Leave:
    return Leave(room=check_room(_required(data, "room")))


def _parse_send(data: Mapping[str, Any]) -> Send:
    return _with_readable_id(data, lambda: _send_fields(_required(data, "room"), data, "'send' frame"))


_T = TypeVar("_T", Send, Change)


def _with_readable_id(data: Mapping[str, Any], parse: Callable[[], _T]) -> _T:
    """``parse()``; a refusal it raises names ``data``'s id if that is a valid one."""
    try:
        return parse()
    except ClientError as exc:
        try:
            exc.id = check_client_id(data.get("id"))
        except BadRequest:
            pass
        raise


def _send_fields(room: object, data: Mapping[str, Any], where: str) -> Send:
    room = check_room(room)
    if "body" not in data:
        raise BadRequest(f"{where} needs a 'body' field", code="bad_field")
    body = data["body"]
    if not isinstance(body, str):
        raise BadRequest(f"body must be a string, got {_kind(body)}", code="bad_field")
    surrogate = _SURROGATE.search(body)
    if surrogate is not None:
        raise Rejected(f"body {_lone_surrogate(surrogate)}", code="bad_body")
    if "id" not in data:
        raise BadRequest(f"{where} needs an 'id' field", code="bad_field")
    attachments = check_attachment_ids(data.get("attachments", []))
    cid = check_client_id(data["id"])
    reply_to = data.get("reply_to")
    return Send(
        room=room, body=body, id=cid, attachments=attachments,
        reply_to=None if reply_to is None else check_seq(reply_to, "reply_to"),
    )

def check_attachment_ids(value: object) -> tuple[str, ...]:
    """A send's ``attachments``: at most :data:`MAX_ATTACHMENTS` distinct file ids."""
    if not isinstance(value, list):
        raise BadRequest(f"attachments must be an array of file ids, got {_kind(value)}", code="bad_attachment")
    if len(value) > MAX_ATTACHMENTS:
        raise BadRequest(
            f"a message may carry at most {MAX_ATTACHMENTS} attachments, got {len(value)}", code="bad_attachment"
        )
    for item in value:
        if not isinstance(item, str) or not _FILE_ID.fullmatch(item):
            shown = item[:40] if isinstance(item, str) else _kind(item)
            raise BadRequest(
                f"attachment {shown!r} is not a file id (the 'id' POST /api/files answered)", code="bad_attachment"
            )
    if len(set(value)) != len(value):
        raise BadRequest("attachments names a file twice", code="bad_attachment")
    return tuple(value)



_CHANGE_KINDS = ("edit", "delete", "react", "unreact")


def _parse_change(data: Mapping[str, Any]) -> Change:
    kind = str(data["type"])
    return _with_readable_id(data, lambda: _change_fields(kind, _required(data, "room"), data))


def _change_fields(kind: str, room: object, data: Mapping[str, Any]) -> Change:
    room = check_room(room)
    cid = check_client_id(_required(data, "id", kind))
    target = check_seq(_required(data, "target", kind), "target")
    if kind == "edit":
        body = _required(data, "body", kind)
        if not isinstance(body, str):
            raise BadRequest(f"body must be a string, got {_kind(body)}", code="bad_field")
        surrogate = _SURROGATE.search(body)
        if surrogate is not None:
            raise Rejected(f"body {_lone_surrogate(surrogate)}", code="bad_body")
        return Change(kind=kind, room=room, id=cid, target=target, body=body)
    if kind in ("react", "unreact"):
        return Change(kind=kind, room=room, id=cid, target=target, emoji=check_emoji(_required(data, "emoji", kind)))
    return Change(kind=kind, room=room, id=cid, target=target)


def check_seq(value: object, name: str) -> int:
    """A message seq a client names (``target``, ``reply_to``): a whole number 1 to 2**53."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a message's seq (a whole number), got {_kind(value)}", code="bad_field")
    if not 1 <= value <= MAX_SEQ:
        raise BadRequest(f"{name} must be between 1 and {MAX_SEQ}, got {value}", code="bad_field")
    return value


def check_emoji(value: object) -> str:
    """One emoji, or :class:`BadRequest` ``bad_emoji``."""
    if not isinstance(value, str):
        raise BadRequest(f"emoji must be a string, got {_kind(value)}", code="bad_emoji")
    if not 1 <= len(value) <= MAX_EMOJI_CHARS or not emoji_data.is_emoji(value):
        shown = value if len(value) <= 20 else value[:17] + "..."
        raise BadRequest(f"{shown!r} is not one emoji", code="bad_emoji")
    return value


def _lone_surrogate(match: re.Match[str]) -> str:
    return (
        f"has a lone surrogate U+{ord(match.group()):04X} at position {match.start()},"
        " which is not Unicode text"
    )


def _parse_typing(data: Mapping[str, Any]) -> Typing:
    return Typing(room=check_room(_required(data, "room")))


def _parse_ping(data: Mapping[str, Any]) -> Ping:
    return Ping()


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Command]] = {
    "join": _parse_join,
    "leave": _parse_leave,
    "send": _parse_send,
    "edit": _parse_change,
    "delete": _parse_change,
    "react": _parse_change,
    "unreact": _parse_change,
    "typing": _parse_typing,
    "ping": _parse_ping,
}


def _required(data: Mapping[str, Any], name: str, kind: str | None = None) -> Any:
    if name not in data:
        raise BadRequest(f"{kind or data.get('type')!r} needs a {name!r} field", code="bad_field")
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
    """A whole-number query parameter within ``[low, high]``, or ``default`` when
    absent. Present but empty (``?since=``) is no number, and refused like one."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw[:40]!r}", code="bad_param") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}", code="bad_param")
    return value


def member_cursor(raw: str | None) -> str | None:
    """The ``cursor`` query parameter of ``/members``: the ``next`` an earlier
    page gave (a casefolded nick), or None when absent. Anything that cannot be
    one — empty, too long, not in casefolded form — is refused."""
    if raw is None:
        return None
    if not raw or len(raw) > MAX_MEMBER_CURSOR or nick_key(raw) != raw:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise BadRequest(
            f"cursor {shown!r} is not one a members page gave: pass the 'next' of the page before"
            f" (a casefolded nick, 1-{MAX_MEMBER_CURSOR} characters), or no cursor for the first page",
            code="bad_param",
        )
    return raw


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
