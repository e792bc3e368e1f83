"""Presence and typing, coalesced per room into one event per interval, without I/O.

Theory of operation. Telling every member of a room about every join, each in
its own write, makes filling a room of N cost O(N²): the 5,000th joiner alone
costs 4,999 sends. Instead a web node hands each presence transition and each
"is typing" to a :class:`Coalescer`, which keeps, per room, the *last* state of
every nick that changed and the nicks that started typing. Once per
``interval`` seconds (``presence_interval``, 0.25 s) the node takes what is
pending (:meth:`Coalescer.take`) and publishes at most one ``presence`` and one
``typing`` event per room, each encoded once and written to every member. A
join then costs O(1) amortised whatever the room's size: N joins within one
interval are one event of N changes, not N events.

What a change means. Each nick appears at most once per event, with its state
at the end of the interval. A join then a leave within one interval is one
``offline`` change, a leave then a join (a page reload) one ``online`` change.
Neither is dropped although the nick's state did not change overall: a member
that joined in the middle of the interval got a member list in which the nick
may have had the other state, and applying the last state is right for every
member, whenever it took its list, on this node and on others. A client
applies changes as set operations, so a repeated state is harmless.

Big rooms. Above ``detail_max`` members (``presence_detail_max``, 500) an event
carries the count alone: nobody reads a list of thousands of names going by,
and a client pages through ``/members`` when it wants names. Such a room's
events are spaced further, :data:`BIG_ROOM_SPACING` seconds apart
(:meth:`Coalescer.hold`): each of them is a write to thousands of members, and
a count shown a second late misleads nobody. While 10,000 members reconnect,
that is one write per member every 2 s instead of four a second, most of the
cost of a storm's fan-out besides the messages themselves.

Nothing here reads a clock: time comes in as an argument, so pacing is tested
without a loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import orjson

__all__ = [
    "Change", "Coalescer", "Pending", "ONLINE", "OFFLINE", "TYPING_NICKS_MAX", "BIG_ROOM_SPACING",
    "encode_presence", "encode_typing",
]

ONLINE = "online"
OFFLINE = "offline"
# At most this many nicks in one typing event: a page shows "several people
# are typing" past two, and a crowd typing at once must not grow the event.
TYPING_NICKS_MAX = 10
# Seconds between two events of a room above the detail threshold (counts only).
BIG_ROOM_SPACING = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """``nick`` (as spelled) is now ``state`` (``online`` or ``offline``) in a room."""

    nick: str
    state: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """What :meth:`Coalescer.take` hands over: per room, the changes (last state
    per nick, in the order the nicks first changed) and the nicks that typed."""

    presence: Mapping[str, Sequence[Change]]
    typing: Mapping[str, Sequence[str]]

    def __bool__(self) -> bool:
        return bool(self.presence or self.typing)


class Coalescer:
    """Presence transitions and typing, pending per room until the next flush.

    Feed it with :meth:`presence` and :meth:`typing`. :attr:`due` says when the
    next flush is due (``interval`` seconds after the first thing that is
    pending, None when nothing is); call :meth:`take` then, and publish what it
    returns. Anything fed afterwards waits for the flush after that, so a room
    gets at most one event of each kind per ``interval``. :meth:`hold` spaces
    a room's events further (a big room's count needs no such pace).
    """

    def __init__(self, *, interval: float = 0.25) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be more than 0, got {interval}")
        self.interval = interval
        # room → nick_key → the change to announce (its last state)
        self._presence: dict[str, dict[str, Change]] = {}
        # room → nick_key → nick as spelled
        self._typing: dict[str, dict[str, str]] = {}
        self._since: float | None = None  # when the oldest pending thing of a room not held came
        self._held: dict[str, float] = {}  # room → until when nothing of it is taken

    @property
    def due(self) -> float | None:
        """When :meth:`take` will next have something; None if nothing is pending."""
        due = None if self._since is None else self._since + self.interval
        for room, until in self._held.items():
            if (room in self._presence or room in self._typing) and (due is None or until < due):
                due = until
        return due

    def presence(self, room: str, nick: str, key: str, state: str, *, now: float) -> None:
        """``nick`` (casefolded: ``key``) went ``state`` (online or offline) in ``room``."""
        if state not in (ONLINE, OFFLINE):
            raise ValueError(f"state must be {ONLINE!r} or {OFFLINE!r}, got {state!r}")
        changes = self._presence.get(room)
        if changes is None:
            changes = self._presence[room] = {}
        changes[key] = Change(nick, state)  # replaces an earlier change, keeps its place
        if state == OFFLINE:
            typing = self._typing.get(room)
            if typing is not None:
                typing.pop(key, None)  # gone: no longer typing either
        self._pending(room, now)

    def typing(self, room: str, nick: str, key: str, *, now: float) -> None:
        """``nick`` is typing in ``room``. Rate-limit per user before calling this."""
        nicks = self._typing.get(room)
        if nicks is None:
            nicks = self._typing[room] = {}
        if key not in nicks and len(nicks) < TYPING_NICKS_MAX:
            nicks[key] = nick
        self._pending(room, now)

    def hold(self, room: str, *, until: float) -> None:
        """Take nothing of ``room`` before ``until``; what it gets meanwhile waits."""
        self._held[room] = until

    def take(self, *, now: float) -> Pending:
        """What is due at ``now``: every room's pending events once ``interval``
        has passed since the first of them, but those of rooms still held."""
        released = [room for room, until in self._held.items() if until <= now]
        for room in released:
            del self._held[room]
        if self._since is not None and now >= self._since + self.interval:
            rooms = [r for r in {**self._presence, **self._typing} if r not in self._held]
        else:
            rooms = [r for r in released if r in self._presence or r in self._typing]
        presence: dict[str, list[Change]] = {}
        typing: dict[str, list[str]] = {}
        for room in rooms:
            changes = self._presence.pop(room, None)
            if changes:
                presence[room] = list(changes.values())
            nicks = self._typing.pop(room, None)
            if nicks:
                typing[room] = list(nicks.values())
        if not any(r not in self._held for r in (*self._presence, *self._typing)):
            self._since = None
        return Pending(presence, typing)

    def _pending(self, room: str, now: float) -> None:
        if self._since is None and room not in self._held:
            self._since = now


def encode_presence(room: str, count: int, changes: Iterable[Change], *, detail_max: int) -> bytes:
    """The ``presence`` event: ``count`` members now, and the changes unless the
    room has more than ``detail_max`` members (then the count alone)."""
    event: dict[str, object] = {"type": "presence", "room": room, "count": count}
    if count <= detail_max:
        event["changes"] = [{"nick": c.nick, "state": c.state} for c in changes]
    return orjson.dumps(event)


def encode_typing(room: str, nicks: Sequence[str]) -> bytes:
    """The ``typing`` event: who started typing in ``room`` during the interval."""
    return orjson.dumps({"type": "typing", "room": room, "nicks": list(nicks)})
