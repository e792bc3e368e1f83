"""The web node's access checks: the rules of :mod:`squall.rooms`, with the facts
read from the store and kept for a while.

Theory of operation. Every path that reads or writes a room's messages asks
one of :meth:`Access.may_read`, :meth:`Access.may_post`,
:meth:`Access.may_moderate` (or :meth:`Access.may_manage`), which raise
:class:`~squall.errors.Forbidden` with the rule's code (``forbidden``,
``not_member``, ``banned``, ``muted``) or return. The facts — the room's row
and the user's membership — come from the store the first time and are then
believed for at most ``ttl`` seconds (:data:`ACCESS_TTL`). A change made on
this node (create, invite, remove, mute, kick, ban) forgets the cached facts
at once here and, through the bus, on every other node (as ended sessions
are); a node that misses the notice (Redis down) believes the old facts for
``ttl`` seconds at most.

The hot paths (a long-poll answered from memory, typing) ask
:meth:`Access.cached_refusal` first, which answers from memory without an
await, or says that the store must be asked.

Joins of public rooms make the user a member (the directory counts members):
they are noted here and written in one transaction a second
(:meth:`Access.flush_joins`), so a join storm costs one write, not one per join.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

from ..errors import Forbidden
from ..protocol import nick_key
from ..rooms import (
    NO_MEMBERSHIP,
    Membership,
    Refusal,
    Role,
    is_dm,
    RoomInfo,
    manage_refusal,
    moderate_refusal,
    post_refusal,
    read_refusal,
)
from ..store import Store

__all__ = ["Access", "ACCESS_TTL", "UNKNOWN"]

log = logging.getLogger("squall.web")

# Seconds a room's row or a membership read from the store is believed: the
# longest a change on another node goes unseen if its bus notice is lost.
ACCESS_TTL = 60.0
# Memberships remembered at once (the least recently used go first).
MAX_CACHED_MEMBERSHIPS = 100_000
MAX_CACHED_ROOMS = 20_000
# Bans and running mutes of a public room held with its row: reading or posting
# in a public room then needs no read per user. A room with more is read per user.
MAX_RESTRICTIONS = 10_000
# Joins noted before a flush is forced; past it the oldest are written anyway.
MAX_PENDING_JOINS = 50_000


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # cached_refusal: the store must be asked


class Access:
    """Access checks for one web node.

    :param store: where rooms and memberships live.
    :param admins: nicks of server admins (any spelling; compared casefolded).
    :param ttl: seconds cached facts are believed; default :data:`ACCESS_TTL`.
    """

    def __init__(self, store: Store, *, admins: Iterable[str] = (), ttl: float = ACCESS_TTL) -> None:
        self.store = store
        self.admins = frozenset(nick_key(nick) for nick in admins)
        self.ttl = ttl
        self._rooms: OrderedDict[str, tuple[RoomInfo, float]] = OrderedDict()
        # A public room's bans and mutes, key → Membership (None: too many, read per user).
        self._restrictions: dict[str, dict[str, Membership] | None] = {}
        self._members: OrderedDict[tuple[str, str], tuple[Membership, float]] = OrderedDict()
        self._joins: set[tuple[str, str]] = set()
        self._joined: set[tuple[str, str]] = set()  # written already (bounded like _members)

    def is_admin(self, key: str) -> bool:
        return key in self.admins

    # -- the contract other features call ------------------------------------

    async def may_read(self, room: str, key: str) -> None:
        """Return if user ``key`` (casefolded nick) may read ``room``; else raise Forbidden."""
        info, member = await self.facts(room, key, roles=False)
        _raise(read_refusal(info, member, admin=self.is_admin(key)))

    async def may_post(self, room: str, key: str) -> None:
        info, member = await self.facts(room, key, roles=False)
        _raise(post_refusal(info, member, admin=self.is_admin(key), now_ms=int(time.time() * 1000)))

    async def may_moderate(self, room: str, key: str) -> None:
        info, member = await self.facts(room, key)
        _raise(moderate_refusal(info, member, admin=self.is_admin(key)))

    async def may_manage(self, room: str, key: str) -> None:
        """Whether ``key`` may invite and remove members (the owner, an admin)."""
        info, member = await self.facts(room, key)
        _raise(manage_refusal(info, member, admin=self.is_admin(key)))

    def cached_refusal(self, room: str, key: str, *, now: float) -> Refusal | None | _Unknown:
        """The read rule from memory: a refusal, None (allowed) or :data:`UNKNOWN`."""
        if key in self.admins:
            return None
        info = self._fresh(self._rooms, room, now)
        if info is None:
            return UNKNOWN
        member = self._restricted(info, key)
        if member is None:
            member = self._fresh(self._members, (room, key), now)
        if member is None:
            return UNKNOWN
        return read_refusal(info, member, admin=False)

    def _restricted(self, info: RoomInfo, key: str) -> Membership | None:
        """A public room's standing of ``key`` from its bans and mutes, or None (read per user)."""
        if info.private or (not info.exists and is_dm(info.name)):
            return None
        restrictions = self._restrictions.get(info.name)
        if restrictions is None:
            return None
        return restrictions.get(key, NO_MEMBERSHIP)

    # -- facts ---------------------------------------------------------------

    async def facts(self, room: str, key: str, *, roles: bool = True) -> tuple[RoomInfo, Membership]:
        """The room's row and ``key``'s membership. Without ``roles`` (reading,
        posting), a public room's answer may come from its bans and mutes alone."""
        now = time.monotonic()
        info = self._fresh(self._rooms, room, now)
        if info is None:
            info = await self.store.room_info(room)
            restrictions: dict[str, Membership] | None = None
            if not info.private and not (not info.exists and is_dm(room)):
                rows = await self.store.room_restrictions(
                    room, now_ms=int(time.time() * 1000), limit=MAX_RESTRICTIONS + 1
                )
                if len(rows) <= MAX_RESTRICTIONS:
                    restrictions = {k: Membership(Role.MEMBER, muted_until=muted, banned=banned)
                                    for k, muted, banned in rows}
            _remember(self._rooms, room, info, now + self.ttl, MAX_CACHED_ROOMS)
            self._restrictions[room] = restrictions
            if len(self._restrictions) > MAX_CACHED_ROOMS:
                self._restrictions = {name: self._restrictions[name] for name in self._rooms if name in self._restrictions}
        if not roles:
            member = self._restricted(info, key)
            if member is not None:
                return info, member
        member = self._fresh(self._members, (room, key), now)
        if member is None:
            member = await self.store.membership(room, key)
            _remember(self._members, (room, key), member, now + self.ttl, MAX_CACHED_MEMBERSHIPS)
        return info, member

    @staticmethod
    def _fresh(cache: OrderedDict, name: object, now: float):  # type: ignore[no-untyped-def, type-arg]
        entry = cache.get(name)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def forget(self, changes: Iterable[tuple[str, str]]) -> None:
        """Drop cached facts: ``(room, key)`` a membership, ``(room, "")`` the room and all its memberships."""
        for room, key in changes:
            # A ban or mute changes the room's restrictions: read them again.
            self._rooms.pop(room, None)
            self._restrictions.pop(room, None)
            if key:
                self._members.pop((room, key), None)
                self._joined.discard((room, key))
            else:
                for cached in [k for k in self._members if k[0] == room]:
                    del self._members[cached]

    # -- joins of public rooms ------------------------------------------------

    def note_join(self, room: str, key: str) -> None:
        """``key`` joined ``room`` (allowed): count them as a member, soon."""
        pair = (room, key)
        if pair in self._joined:
            return
        member = self._fresh(self._members, pair, time.monotonic())
        if member is not None and member.role is not None:
            return
        if len(self._joins) < MAX_PENDING_JOINS:
            self._joins.add(pair)

    async def flush_joins(self) -> None:
        if not self._joins:
            return
        joins, self._joins = self._joins, set()
        try:
            await self.store.add_members(sorted(joins), now_ms=int(time.time() * 1000))
        except Exception:
            log.exception("could not record %d room joins", len(joins))
            return
        if len(self._joined) + len(joins) > MAX_CACHED_MEMBERSHIPS:
            self._joined.clear()
        self._joined |= joins
        for room, key in joins:  # a member now, and the room may have a row now
            self._members.pop((room, key), None)
            cached = self._rooms.get(room)
            if cached is not None and not cached[0].exists:
                del self._rooms[room]


def _remember(cache: OrderedDict, name: object, value: object, expires: float, limit: int) -> None:  # type: ignore[type-arg]
    cache[name] = (value, expires)
    cache.move_to_end(name)
    while len(cache) > limit:
        cache.popitem(last=False)


def _raise(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise Forbidden(refusal.reason, code=refusal.code)

