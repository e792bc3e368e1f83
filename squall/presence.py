"""Who is online in which room, over every transport, without I/O.

A nick is online in a room while it holds at least one open connection there
(WebSocket or SSE), or while it keeps long-polling: each poll counts for
``grace`` seconds. Every call returns the transitions it caused, as
``(room, nick, "online" | "offline")``, for the caller to broadcast.
Time is an argument, so expiry is tested without a clock.

Across rooms, the table also answers who is online anywhere
(:meth:`PresenceTable.online`) and who online looks like a given nick
(:meth:`PresenceTable.lookalike`, by confusable skeleton): a guest may not take
either. Both are kept up to date at each transition, so a question costs a
dictionary look-up, not a walk over everyone online.
"""

from __future__ import annotations

from collections import defaultdict

from .identity import nick_skeletons

__all__ = ["PresenceTable", "Transition"]

Transition = tuple[str, str, str]


class PresenceTable:
    def __init__(self, *, grace: float = 30.0) -> None:
        self.grace = grace
        # room → nick_key → open connection count
        self._connections: defaultdict[str, dict[str, int]] = defaultdict(dict)
        # room → nick_key → poll expiry time
        self._polls: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._spelling: dict[str, str] = {}  # nick_key → nick as the user wrote it
        self._rooms_online: dict[str, int] = {}  # nick_key → rooms it is online in
        self._skeletons: dict[str, frozenset[str]] = {}  # nick_key online → its skeletons
        self._by_skeleton: defaultdict[str, set[str]] = defaultdict(set)  # skeleton → nick_keys

    def _online(self, room: str, key: str) -> bool:
        return key in self._connections.get(room, ()) or key in self._polls.get(room, ())

    def _came(self, key: str, nick: str) -> None:
        """``key`` went online in one more room."""
        count = self._rooms_online.get(key, 0)
        self._rooms_online[key] = count + 1
        if count == 0:
            skeletons = self._skeletons[key] = nick_skeletons(nick)
            for skeleton in skeletons:
                self._by_skeleton[skeleton].add(key)

    def _went(self, key: str) -> None:
        """``key`` went offline in one room."""
        count = self._rooms_online.get(key, 0) - 1
        if count > 0:
            self._rooms_online[key] = count
            return
        self._rooms_online.pop(key, None)
        for skeleton in self._skeletons.pop(key, ()):
            keys = self._by_skeleton[skeleton]
            keys.discard(key)
            if not keys:
                del self._by_skeleton[skeleton]

    def online(self, key: str) -> str | None:
        """The nick as spelled if ``key`` is online in any room, else None."""
        return self._spelling.get(key, key) if key in self._rooms_online else None

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
        self._spelling[key] = nick
        if was_online:
            return []
        self._came(key, nick)
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
        self._went(key)
        return [(room, self._spelling.get(key, key), "offline")]

    def poll(self, room: str, nick: str, key: str, *, now: float, wait: float = 0.0) -> list[Transition]:
        """A long-poll arrived; it keeps ``nick`` online until it ends plus ``grace``."""
        was_online = self._online(room, key)
        self._polls[room][key] = now + wait + self.grace
        self._spelling[key] = nick
        if was_online:
            return []
        self._came(key, nick)
        return [(room, nick, "online")]

    def expire(self, *, now: float) -> list[Transition]:
        """Drop pollers whose grace has run out."""
        changes: list[Transition] = []
        for room in list(self._polls):
            polls = self._polls[room]
            for key in [k for k, until in polls.items() if until <= now]:
                del polls[key]
                if not self._online(room, key):
                    self._went(key)
                    changes.append((room, self._spelling.get(key, key), "offline"))
            if not polls:
                del self._polls[room]
        return changes

    def users_online(self) -> int:
        """How many users are online in at least one room."""
        return len(self._rooms_online)

    def memberships(self) -> int:
        """How many (user, room) pairs are online."""
        return sum(self._rooms_online.values())

    def members(self, room: str) -> list[str]:
        keys = set(self._connections.get(room, ())) | set(self._polls.get(room, ()))
        return sorted((self._spelling.get(k, k) for k in keys), key=str.casefold)
