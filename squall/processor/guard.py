"""The processor's own access check: defence in depth behind the web node's.

A web node refuses a send into a private room from a non-member (and from a
banned user) before it reaches a processor (squall/web/access.py). This guard
refuses it again, with the same rules (:mod:`squall.rooms`), so that a web node
with a bug, an old cache, or a forged queue entry cannot store a message where
its author may not post. Server admins are a web-node setting: an admin's
message into a private room they do not belong to passes the web node, and is
let through here only if ``admins`` is set on the processor too (``squall run``
shares one configuration).

The facts are cached for :data:`GUARD_TTL` seconds: the processor hears of no
membership change, so a removal takes effect here at most that late (the web
node, told at once, refuses first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from ..errors import Rejected
from ..message import Draft
from ..protocol import CANARY_ROOM, nick_key
from ..rooms import Membership, RoomInfo, read_refusal
from ..store import Store

__all__ = ["AccessGuard", "GUARD_TTL"]

GUARD_TTL = 2.0
_MAX_CACHED = 10_000


class AccessGuard:
    """A pipeline step: ``await guard(draft)`` returns the draft, or raises :class:`Rejected`."""

    def __init__(self, store: Store, *, admins: Iterable[str] = (), ttl: float = GUARD_TTL) -> None:
        self.store = store
        self.admins = frozenset(nick_key(n) for n in admins)
        self.ttl = ttl
        self._rooms: OrderedDict[str, tuple[RoomInfo, float]] = OrderedDict()
        self._members: OrderedDict[tuple[str, str], tuple[Membership, float]] = OrderedDict()

    async def __call__(self, message: Draft) -> Draft:
        if message.room == CANARY_ROOM:
            return message
        key = nick_key(message.nick)
        if key in self.admins:
            return message
        now = time.monotonic()
        info = await self._room(message.room, now)
        member = await self._member(message.room, key, now)
        refusal = read_refusal(info, member, admin=False)
        if refusal is not None:
            raise Rejected(refusal.reason, code=refusal.code)
        return message

    async def _room(self, room: str, now: float) -> RoomInfo:
        entry = self._rooms.get(room)
        if entry is not None and entry[1] > now:
            return entry[0]
        info = await self.store.room_info(room)
        self._remember(self._rooms, room, (info, now + self.ttl))
        return info

    async def _member(self, room: str, key: str, now: float) -> Membership:
        entry = self._members.get((room, key))
        if entry is not None and entry[1] > now:
            return entry[0]
        member = await self.store.membership(room, key)
        self._remember(self._members, (room, key), (member, now + self.ttl))
        return member

    @staticmethod
    def _remember(cache: OrderedDict, name: object, value: object) -> None:  # type: ignore[type-arg]
        cache[name] = value
        cache.move_to_end(name)
        if len(cache) > _MAX_CACHED:
            cache.popitem(last=False)
