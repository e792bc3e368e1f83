"""What a line typed into ``squall chat`` means.

A line that starts with ``/`` is a command; anything else (and ``//text``, which
sends ``/text``) is a message for the room on screen. Parsing never fails: a line
it cannot make sense of becomes :class:`Invalid` with the words to show.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "Say", "Action", "Join", "Leave", "ListRooms", "ChangeNick", "Quit", "Help", "Invalid",
    "Command", "parse_line", "normalise_room", "HELP_TEXT",
]

ROOM_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # docs/protocol.md §2


@dataclasses.dataclass(frozen=True)
class Say:
    """Send ``body`` to the room on screen."""

    body: str


@dataclasses.dataclass(frozen=True)
class Action:
    """``/me waves``: sent as the body ``/me waves`` and shown as ``* nick waves``."""

    text: str


@dataclasses.dataclass(frozen=True)
class Join:
    room: str


@dataclasses.dataclass(frozen=True)
class Leave:
    """Leave ``room``, or the room on screen when it is None."""

    room: str | None


@dataclasses.dataclass(frozen=True)
class ListRooms:
    pass


@dataclasses.dataclass(frozen=True)
class ChangeNick:
    nick: str


@dataclasses.dataclass(frozen=True)
class Quit:
    pass


@dataclasses.dataclass(frozen=True)
class Help:
    pass


@dataclasses.dataclass(frozen=True)
class Invalid:
    reason: str


Command = Say | Action | Join | Leave | ListRooms | ChangeNick | Quit | Help | Invalid

HELP_TEXT = (
    "/join ROOM · /leave [ROOM] · /rooms · /me ACTION · /nick NICK · /quit · "
    "Ctrl+N/Ctrl+P next/previous room · PageUp/PageDown scroll (older history) · //text sends /text"
)


def normalise_room(text: str) -> str | None:
    """The room name the server accepts for what a person typed (``#Lobby`` → ``lobby``), or None."""
    room = text.strip().removeprefix("#").lower()
    return room if ROOM_PATTERN.fullmatch(room) else None


def parse_line(line: str) -> Command | None:
    """The command in ``line``; None for a blank line (nothing to do)."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("//"):
        return Say(text[1:])
    if not text.startswith("/"):
        return Say(text)
    name, _, rest = text[1:].partition(" ")
    rest = rest.strip()
    name = name.lower()
    if name in ("join", "j"):
        if not rest:
            return Invalid("/join needs a room: /join lobby")
        room = normalise_room(rest)
        if room is None:
            return Invalid(f"not a room name: {rest[:70]!r} (a–z, 0–9, _ and -, up to 64)")
        return Join(room)
    if name in ("leave", "part"):
        if not rest:
            return Leave(None)
        room = normalise_room(rest)
        return Leave(room) if room is not None else Invalid(f"not a room name: {rest[:70]!r}")
    if name == "rooms":
        return ListRooms()
    if name == "me":
        return Action(rest) if rest else Invalid("/me needs an action: /me waves")
    if name == "nick":
        if not rest or " " in rest:
            return Invalid("/nick needs one nick: /nick alice")
        return ChangeNick(rest)
    if name in ("quit", "exit"):
        return Quit()
    if name == "help":
        return Help()
    return Invalid(f"unknown command /{name[:30]}; /help lists them (//text sends /text)")
