"""Who is online in which room, over every transport, without I/O.

A nick is online in a room while it holds at least one open connection there
(WebSocket or SSE), or while it keeps long-polling: each poll counts for
``grace`` seconds. Every call returns the transitions it caused, as
``(room, nick, "online" | "offline")``, for the caller to broadcast.
Time is an argument, so expiry is tested without a clock.

Each room's members are kept sorted by casefolded nick as they come and go
(a :class:`~sortedcontainers.SortedList`), so a page of them costs
O(log n + page) and nothing is sorted per join: :meth:`PresenceTable.page`
answers the ``joined`` reply's first page and ``/members``, by cursor.

Across rooms, the table also answers who is online anywhere
(:meth:`PresenceTable.online`) and who online looks like a given nick
(:meth:`PresenceTable.lookalike`, by confusable skeleton): a guest may not take
either. Both are kept up to date at each transition, so a question costs a
dictionary look-up, not a walk over everyone online.

One node or many. The table is one web node's own bookkeeping. What every
node's members see goes through :class:`Presence`, the room-wide view: the
node hands it the transitions its coalescer gathered in one interval
(:meth:`Presence.update`) and reads counts and pages from it. For one node,
:class:`LocalPresence` answers from the table itself. Across nodes
:class:`squall.bus.redis_presence.RedisPresence` keeps the same answers in
Redis (docs/presence.md); nothing above the interface changes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Protocol

from sortedcontainers import SortedList  # type: ignore[import-untyped, unused-ignore]

from .coalesce import Change
from .identity import nick_skeletons

__all__ = [
    "MembersPage", "Presence", "LocalPresence", "PresenceTable", "Reach", "Transition", "Updated",
    "members_fields",
]

Transition = tuple[str, str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class MembersPage:
    """Members of a room in casefolded order from a cursor: ``nicks`` as
    spelled (shared with other callers: do not change it), ``count`` in the
    whole room, and ``next``, the cursor of the page after this one (None
    when this page is the last)."""

    count: int
    nicks: list[str]
    next: str | None


def members_fields(page: MembersPage) -> dict[str, object]:
    """A page as the wire has it, in ``joined`` and ``/members``: ``count``,
    ``members`` and ``next`` (null on the last page)."""
    return {"count": page.count, "members": page.nicks, "next": page.next}


class Reach(enum.Enum):
    """Who still has to be told of an :class:`Updated`'s changes."""

    #: Nobody: the events are on the bus already, in the order the changes
    #: were applied (Redis publishes them in the same script).
    PUBLISHED = "published"
    #: Every node: the caller encodes the events and publishes them on the bus.
    EVERY_NODE = "every_node"
    #: This node's members only: the shared view is unreachable, so the node
    #: shows its own (the shared view is mended when it is back).
    THIS_NODE = "this_node"


@dataclasses.dataclass(frozen=True, slots=True)
class Updated:
    """What :meth:`Presence.update` did: per room, the ``changes`` that changed
    the room as a whole and its ``counts`` after them (of every room changed
    or asked about), and who still has to hear of them (``reach``)."""

    changes: dict[str, list[Change]]
    counts: dict[str, int]
    reach: Reach


class Presence(Protocol):
    """Who is online in each room, as every web node that shares it sees it.

    ``update`` takes the coalesced changes of this node (room → changes, last
    state per nick) and returns those that changed the room as a whole: a nick
    that goes offline here but is still online on another node is no change.
    Implementations must apply a change idempotently (a node may repeat one).
    """

    async def update(
        self, changes: Mapping[str, Sequence[Change]], *, count: Iterable[str] = ()
    ) -> Updated:
        """Apply this node's ``changes``; count their rooms and those in ``count``
        too. Publish the ``presence`` events unless :attr:`Updated.reach` says
        it is left to the caller."""

    async def online(self, key: str) -> str | None:
        """The nick as spelled if ``key`` is online in some room on any node, else None."""

    async def lookalike(self, nick: str, *, besides: str) -> str | None:
        """An online nick (of a user other than ``besides``) that looks like ``nick``, on any node."""

    async def start(self) -> None:
        """Begin whatever keeps the shared view alive (heartbeats); once the loop runs."""

    async def close(self) -> None:
        """Take this node's members out of the shared view and let go of it."""

    def status(self) -> dict[str, object]:
        """A summary for ``/api/health``."""

    async def counts(self, rooms: Iterable[str]) -> dict[str, int]:
        """Members online now in each of ``rooms``."""

    async def page(self, room: str, *, after: str | None, limit: int) -> MembersPage:
        """Up to ``limit`` members whose casefolded nick sorts after ``after``
        (from the first when None), and the room's count."""


class LocalPresence:
    """:class:`Presence` for one web node: the node's own table is the whole truth."""

    def __init__(self, table: PresenceTable) -> None:
        self.table = table

    async def update(
        self, changes: Mapping[str, Sequence[Change]], *, count: Iterable[str] = ()
    ) -> Updated:
        changed = {room: list(room_changes) for room, room_changes in changes.items() if room_changes}
        counts = {room: self.table.count(room) for room in (*changed, *count)}
        return Updated(changed, counts, Reach.EVERY_NODE)

    async def online(self, key: str) -> str | None:
        return self.table.online(key)

    async def lookalike(self, nick: str, *, besides: str) -> str | None:
        return self.table.lookalike(nick, besides=besides)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {"kind": "local"}

    async def counts(self, rooms: Iterable[str]) -> dict[str, int]:
        return {room: self.table.count(room) for room in rooms}

    async def page(self, room: str, *, after: str | None, limit: int) -> MembersPage:
        return self.table.page(room, after=after, limit=limit)


class PresenceTable:
    def __init__(self, *, grace: float = 30.0) -> None:
        self.grace = grace
        # room → nick_key → open connection count
        self._connections: defaultdict[str, dict[str, int]] = defaultdict(dict)
        # room → nick_key → poll expiry time
        self._polls: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._members: dict[str, SortedList] = {}  # room → nick_keys online in it, sorted
        self._spelling: dict[str, str] = {}  # nick_key online → nick as the user wrote it last
        self._rooms_online: dict[str, int] = {}  # nick_key → rooms it is online in
        self._skeletons: dict[str, frozenset[str]] = {}  # nick_key online → its skeletons
        self._by_skeleton: defaultdict[str, set[str]] = defaultdict(set)  # skeleton → nick_keys
        # room → (limit, nicks, next) of its first page: every join is answered
        # with it, and while a room fills it rarely changes (see _changed).
        self._first: dict[str, tuple[int, list[str], str | None]] = {}

    def _online(self, room: str, key: str) -> bool:
        return key in self._connections.get(room, ()) or key in self._polls.get(room, ())

    def _changed(self, room: str, key: str) -> None:
        """``key`` came to or left ``room``: forget the room's first page if that changes it."""
        first = self._first.get(room)
        if first is None:
            return
        limit, _nicks, after_page = first
        # The page holds every key up to `after_page` (its last); None: the whole room.
        if after_page is None or key <= after_page or self.count(room) <= limit:
            del self._first[room]

    def _spelled(self, key: str, nick: str) -> None:
        """Remember how ``key`` is spelled now; a new spelling may show on any first page."""
        was = self._spelling.get(key)
        if was != nick:
            self._spelling[key] = nick
            if was is not None:  # online already, spelled otherwise: pages may show it
                self._first.clear()

    def _came(self, room: str, key: str, nick: str) -> None:
        """``key`` went online in ``room``, one more room for it."""
        members = self._members.get(room)
        if members is None:
            members = self._members[room] = SortedList()
        members.add(key)
        self._changed(room, key)
        count = self._rooms_online.get(key, 0)
        self._rooms_online[key] = count + 1
        if count == 0:
            skeletons = self._skeletons[key] = nick_skeletons(nick)
            for skeleton in skeletons:
                self._by_skeleton[skeleton].add(key)

    def _went(self, room: str, key: str) -> str:
        """``key`` went offline in ``room``; returns its nick as spelled."""
        members = self._members.get(room)
        if members is not None:
            members.discard(key)
            self._changed(room, key)
            if not members:
                del self._members[room]
        nick = self._spelling.get(key, key)
        count = self._rooms_online.get(key, 0) - 1
        if count > 0:
            self._rooms_online[key] = count
            return nick
        self._rooms_online.pop(key, None)
        self._spelling.pop(key, None)
        for skeleton in self._skeletons.pop(key, ()):
            keys = self._by_skeleton[skeleton]
            keys.discard(key)
            if not keys:
                del self._by_skeleton[skeleton]
        return nick

    def online(self, key: str) -> str | None:
        """The nick as spelled if ``key`` is online in any room, else None."""
        return self._spelling.get(key, key) if key in self._rooms_online else None

    def skeletons(self, key: str) -> frozenset[str] | None:
        """The confusable skeletons of ``key`` if it is online here (kept, not computed), else None."""
        return self._skeletons.get(key)

    def lookalike(self, nick: str, *, besides: str) -> str | None:
        """An online nick (other than the user ``besides``) that looks like ``nick``."""
        for skeleton in nick_skeletons(nick):
            for key in self._by_skeleton.get(skeleton, ()):
                if key != besides:
                    return self._spelling.get(key, key)
        return None

    def connect(self, room: str, nick: str, key: str) -> list[Transition]:
        was_online = self._online(room, key)
        counts = self._connections[room]
        counts[key] = counts.get(key, 0) + 1
        self._spelled(key, nick)
        if was_online:
            return []
        self._came(room, key, nick)
        return [(room, nick, "online")]

    def disconnect(self, room: str, key: str) -> list[Transition]:
        counts = self._connections.get(room)
        if not counts or key not in counts:
            return []
        counts[key] -= 1
        if counts[key] > 0:
            return []
        del counts[key]
        if not counts:
            del self._connections[room]
        if self._online(room, key):
            return []
        return [(room, self._went(room, key), "offline")]

    def poll(self, room: str, nick: str, key: str, *, now: float, wait: float = 0.0) -> list[Transition]:
        """A long-poll arrived; it keeps ``nick`` online until it ends plus ``grace``."""
        was_online = self._online(room, key)
        self._polls[room][key] = now + wait + self.grace
        self._spelled(key, nick)
        if was_online:
            return []
        self._came(room, key, nick)
        return [(room, nick, "online")]

    def expire(self, *, now: float) -> list[Transition]:
        """Drop pollers whose grace has run out."""
        changes: list[Transition] = []
        for room in list(self._polls):
            polls = self._polls[room]
            for key in [k for k, until in polls.items() if until <= now]:
                del polls[key]
                if not self._online(room, key):
                    changes.append((room, self._went(room, key), "offline"))
            if not polls:
                del self._polls[room]
        return changes

    def users_online(self) -> int:
        """How many users are online in at least one room."""
        return len(self._rooms_online)

    def memberships(self) -> int:
        """How many (user, room) pairs are online."""
        return sum(self._rooms_online.values())
    def count(self, room: str) -> int:
        """How many nicks are online in ``room``."""
        members = self._members.get(room)
        return len(members) if members is not None else 0

    def page(self, room: str, *, after: str | None = None, limit: int) -> MembersPage:
        """Up to ``limit`` members of ``room`` whose key sorts after ``after``
        (a cursor: the key of the last member of the page before), in O(log n + limit)."""
        members = self._members.get(room)
        if members is None:
            return MembersPage(0, [], None)
        if after is None:
            first = self._first.get(room)
            if first is not None and first[0] == limit:
                return MembersPage(len(members), first[1], first[2])
        keys = members.irange(minimum=after, inclusive=(False, True)) if after is not None else iter(members)
        page = list(islice(keys, limit + 1))
        more = len(page) > limit
        if more:
            del page[limit:]
        spelling = self._spelling
        nicks = [spelling.get(k, k) for k in page]
        next_cursor = page[-1] if more else None
        if after is None:
            self._first[room] = (limit, nicks, next_cursor)
        return MembersPage(len(members), nicks, next_cursor)

    def pairs(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(room, nick_key, nick as spelled)`` online on this node."""
        spelling = self._spelling
        for room, members in self._members.items():
            for key in members:
                yield room, key, spelling.get(key, key)

    def members(self, room: str) -> list[str]:
        """Every member of ``room``, sorted by casefolded nick."""
        members = self._members.get(room, ())
        return [self._spelling.get(k, k) for k in members]
