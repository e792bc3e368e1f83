"""The room directory, room creation, members, moderation and direct messages.

``GET/POST /api/rooms``, ``GET /api/rooms/R``, ``POST /api/rooms/R/members``,
``DELETE /api/rooms/R/members/N``, ``POST /api/rooms/R/moderation`` and
``GET/POST /api/dms`` (docs/protocol.md, "Rooms"). The rules are in
:mod:`squall.rooms`; the checks (and their cache) in :mod:`.access`. Every
change tells :meth:`~squall.web.node.WebNode.change_access`, which forgets the
cached facts on every node and closes the subscriptions of whoever lost the room.
"""

from __future__ import annotations

import re
import time
from typing import Any

from tornado.web import HTTPError

from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..protocol import check_nick, check_room, int_param, nick_key
from ..rooms import (
    MAX_MUTE_MINUTES,
    MODERATION_ACTIONS,
    Role,
    dm_room_name,
    is_dm,
    target_refusal,
)
from .base import BaseHandler, query_argument

__all__ = ["ReadHandler", "ReadMarkersHandler", "RoomsHandler", "RoomHandler", "RoomMemberHandler", "ModerationHandler", "DMsHandler",
           "MAX_TOPIC_CHARS", "MAX_DM_OTHERS"]

MAX_TOPIC_CHARS = 200
MAX_QUERY_CHARS = 64
MAX_DM_OTHERS = 8
DEFAULT_ROOMS_PAGE = 50
MAX_MEMBERS_SHOWN = 200  # membership rows GET /api/rooms/R lists
MAX_DMS_LISTED = 200
DEFAULT_MUTE_MINUTES = 10
_QUERY = re.compile(r"[a-z0-9_-]*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def _now_ms() -> int:
    return int(time.time() * 1000)


class _RoomsBase(BaseHandler):
    def registered_key(self, what: str) -> str:
        """The caller's casefolded nick, if it is an account's (guest nicks change hands)."""
        nick = self.current_nick()
        assert self.session is not None
        if not self.session_registered():
            raise Forbidden(f"{what} needs an account: register your nick first (POST /api/account)",
                            code="not_registered")
        return nick_key(nick)

    def session_registered(self) -> bool:
        return bool(getattr(self, "_registered", False))

    async def load_registered(self) -> None:
        user = await self.node.store.get_user(nick_key(self.current_nick()))
        self._registered = user is not None and user.registered

    async def target(self, raw: object) -> tuple[str, str]:
        """``(key, canonical nick)`` of a registered-or-known user named ``raw``."""
        nick = check_nick(raw)
        key = nick_key(nick)
        user = await self.node.store.get_user(key)
        if user is None:
            raise NotFound(f"there is no user {nick!r}", code="unknown_user")
        return key, user.nick


class RoomsHandler(_RoomsBase):
    """``GET /api/rooms?q=&cursor=&limit=`` (the directory) and ``POST /api/rooms`` (create)."""

    async def get(self) -> None:
        self.current_nick()
        query = (query_argument(self.request, "q") or "").strip().lower()
        if len(query) > MAX_QUERY_CHARS or not _QUERY.fullmatch(query):
            raise BadRequest(
                f"q must be at most {MAX_QUERY_CHARS} characters of a-z, 0-9, '_' and '-'", code="bad_param"
            )
        cursor = query_argument(self.request, "cursor")
        if cursor is not None:
            try:
                cursor = check_room(cursor)
            except BadRequest:
                raise BadRequest("cursor must be the 'next' of an earlier page", code="bad_param") from None
        limit = int_param(query_argument(self.request, "limit"), "limit",
                          default=min(DEFAULT_ROOMS_PAGE, self.node.settings.max_rooms_listed),
                          low=1, high=self.node.settings.max_rooms_listed)
        assert limit is not None
        rooms = await self.node.store.list_rooms(query=query, after=cursor, limit=limit)
        self.write_json({
            "rooms": [room.to_dict() for room in rooms],
            "next": rooms[-1].name if len(rooms) == limit else None,
        })

    async def post(self) -> None:
        await self.load_registered()
        key = self.registered_key("creating a room")
        data = self.json_body()
        room = check_room(data.get("name"))
        if is_dm(room):
            raise BadRequest(f"room names starting with 'dm-' are kept for direct messages; got {room!r}",
                             code="bad_room")
        topic = data.get("topic", "")
        if not isinstance(topic, str):
            raise BadRequest("topic must be a string", code="bad_field")
        topic = topic.strip()
        if len(topic) > MAX_TOPIC_CHARS or _CONTROL.search(topic):
            raise BadRequest(f"topic must be at most {MAX_TOPIC_CHARS} characters without control characters",
                             code="bad_field")
        private = data.get("private", False)
        if not isinstance(private, bool):
            raise BadRequest("private must be true or false", code="bad_field")
        if not await self.node.store.create_room(room, topic=topic, private=private, owner=key, now_ms=_now_ms()):
            raise Conflict(f"room {room} exists already; pick another name or join it", code="room_exists")
        self.node.change_access([(room, "", "")])
        self.write_json({"name": room, "topic": topic, "private": private, "owner": self.current_nick()}, 201)


class RoomHandler(_RoomsBase):
    """``GET /api/rooms/R``: the room, the caller's role, and its membership rows (to those who may read it)."""

    async def get(self, room: str) -> None:
        key = nick_key(self.current_nick())
        room = check_room(room)
        access = self.node.access
        await access.may_read(room, key)
        info, member = await access.facts(room, key)
        rows = await self.node.store.room_members(room, MAX_MEMBERS_SHOWN)
        now = _now_ms()
        owner = next((nick for nick, role, _, _ in rows if role == Role.OWNER.value), None)
        self.write_json({
            "name": room, "topic": info.topic, "private": info.private or (not info.exists and is_dm(room)),
            "owner": owner, "role": member.role.value if member.is_member and member.role else None,
            "admin": access.is_admin(key),
            "muted_until": member.muted_until if member.muted_until > now else None,
            "members": [
                {"nick": nick, "role": role, "banned": banned, "muted_until": muted if muted > now else None}
                for nick, role, muted, banned in rows
            ],
        })


class RoomMemberHandler(_RoomsBase):
    """``POST /api/rooms/R/members {"nick", "role"?}`` (invite, or set a role)
    and ``DELETE /api/rooms/R/members/N`` (remove, or leave)."""

    async def post(self, room: str, who: str | None = None) -> None:
        if who is not None:
            raise HTTPError(405, "POST /api/rooms/R/members with {\"nick\"} adds a member")
        actor = nick_key(self.current_nick())
        room = check_room(room)
        if is_dm(room):
            raise Forbidden("a direct message has fixed members; start another with POST /api/dms",
                            code="forbidden")
        await self.node.access.may_manage(room, actor)
        data = self.json_body()
        key, nick = await self.target(data.get("nick"))
        role = data.get("role", Role.MEMBER.value)
        if role not in (Role.MEMBER.value, Role.MODERATOR.value):
            raise BadRequest("role must be 'member' or 'moderator'", code="bad_field")
        user = await self.node.store.get_user(key)
        if user is None or not user.registered:
            raise Forbidden(f"{nick} has no account; only registered users can be added to a room",
                            code="not_registered")
        if key == actor:
            raise Forbidden("you cannot change your own role", code="forbidden")
        await self.node.store.set_member(room, key, role, now_ms=_now_ms())
        self.node.change_access([(room, key, "")])
        self.write_json({"room": room, "nick": nick, "role": role})

    async def delete(self, room: str, who: str) -> None:
        actor = nick_key(self.current_nick())
        room = check_room(room)
        key = nick_key(check_nick(who))
        access = self.node.access
        if key != actor:
            await access.may_manage(room, actor)
            info, actor_member = await access.facts(room, actor)
            _, target = await access.facts(room, key)
            refusal = target_refusal(info, actor_member, target, admin=access.is_admin(actor), self_action=False)
            if refusal is not None:
                raise Forbidden(refusal.reason, code=refusal.code)
        else:
            info, member = await access.facts(room, actor)
            if member.role is Role.OWNER and not access.is_admin(actor):
                raise Forbidden("the owner cannot leave the room they own", code="forbidden")
        if not await self.node.store.remove_member(room, key):
            raise NotFound(f"{who} is not a member of room {room}", code="not_member")
        info, _ = await access.facts(room, actor)
        self.node.change_access([(room, key, "not_member" if info.private or is_dm(room) else "")])
        self.set_status(204)
        self.finish()


class ModerationHandler(_RoomsBase):
    """``POST /api/rooms/R/moderation {"action", "nick", "minutes"?}``."""

    async def post(self, room: str) -> None:
        actor = nick_key(self.current_nick())
        room = check_room(room)
        access = self.node.access
        await access.may_moderate(room, actor)
        data = self.json_body()
        action = data.get("action")
        if action not in MODERATION_ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(MODERATION_ACTIONS)}", code="bad_field")
        key, nick = await self.target(data.get("nick"))
        info, actor_member = await access.facts(room, actor)
        _, target = await access.facts(room, key)
        refusal = target_refusal(info, actor_member, target, admin=access.is_admin(actor),
                                 self_action=key == actor)
        if refusal is not None:
            raise Forbidden(refusal.reason, code=refusal.code)
        store = self.node.store
        now = _now_ms()
        answer: dict[str, Any] = {"room": room, "nick": nick, "action": action}
        evict = ""
        if action == "mute":
            minutes = data.get("minutes", DEFAULT_MUTE_MINUTES)
            if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MUTE_MINUTES:
                raise BadRequest(f"minutes must be a whole number from 1 to {MAX_MUTE_MINUTES}", code="bad_field")
            answer["muted_until"] = now + minutes * 60_000
            await store.moderate_member(room, key, muted_until=answer["muted_until"], now_ms=now)
        elif action == "unmute":
            await store.moderate_member(room, key, muted_until=0, now_ms=now)
        elif action == "ban":
            await store.moderate_member(room, key, banned=True, now_ms=now)
            evict = "banned"
        elif action == "unban":
            await store.moderate_member(room, key, banned=False, now_ms=now)
        else:  # kick: out now; a private room's membership ends, a public room may be joined again
            if info.private and target.role is not None:
                await store.remove_member(room, key)
            evict = "not_member"
        self.node.change_access([(room, key, evict)])
        self.write_json(answer)


class DMsHandler(_RoomsBase):
    """``GET /api/dms`` (the caller's direct messages) and ``POST /api/dms {"nicks": [...]}``."""

    async def get(self) -> None:
        key = nick_key(self.current_nick())
        dms = await self.node.store.dm_rooms(key, MAX_DMS_LISTED)
        self.write_json({"dms": [
            {"room": dm.room, "nicks": list(dm.others), "last_activity": dm.last_activity} for dm in dms
        ]})

    async def post(self) -> None:
        await self.load_registered()
        key = self.registered_key("a direct message")
        data = self.json_body()
        raw = data.get("nicks")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_DM_OTHERS:
            raise BadRequest(f"nicks must be a list of 1-{MAX_DM_OTHERS} other users", code="bad_field")
        others: dict[str, str] = {}
        for item in raw:
            other_key, nick = await self.target(item)
            user = await self.node.store.get_user(other_key)
            if user is None or not user.registered:
                raise Forbidden(f"{nick} has no account; direct messages are between registered users",
                                code="not_registered")
            if other_key != key:
                others[other_key] = nick
        if not others:
            raise BadRequest("name at least one user other than yourself", code="bad_field")
        room = dm_room_name([key, *others])
        await self.node.store.create_dm(room, [key, *others], now_ms=_now_ms())
        self.node.change_access([(room, "", "")])
        self.write_json({"room": room, "nicks": sorted(others.values(), key=nick_key)})


MAX_READ_MARKERS = 1000
_MAX_SEQ = 2**53 - 1


class ReadHandler(BaseHandler):
    """``POST /api/rooms/R/seen {"seq": N}``: I read ``R`` up to ``N``, on this device."""

    async def post(self, room: str) -> None:
        key = nick_key(self.current_nick())
        room = check_room(room)
        await self.node.access.may_read(room, key)
        seq = self.json_body().get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_SEQ:
            raise BadRequest("seq must be the seq of a message, a whole number from 1", code="bad_field")
        # Never past the room's end: a read position ahead of it would hide what comes next.
        seq = min(seq, await self.node.store.last_seq(room))
        if seq > 0:
            await self.node.mark_read(room, key, seq)
        self.write_json({"room": room, "seq": seq})


class ReadMarkersHandler(BaseHandler):
    """``GET /api/seen``: my read position in each room, the same on every device."""

    async def get(self) -> None:
        key = nick_key(self.current_nick())
        self.write_json({"rooms": await self.node.store.read_markers(key, MAX_READ_MARKERS)})
