"""Who may do what in a room: the access rules, with no I/O.

Theory of operation. A room is public unless it was created private (``POST
/api/rooms`` with ``"private": true``, or ``POST /api/dms``). A room nobody
created — one that exists because someone joined or posted to it, as every
room did before rooms had owners — is public and has no owner. Membership is a
row per (room, user): a role (``owner``, ``moderator``, ``member``), a time
until which the user is muted, and a ban flag. A banned user keeps the row
(so that the ban holds) but is no member.

The rules below take the facts (a :class:`RoomInfo`, a :class:`Membership`,
whether the user is a server admin, the time) and answer with ``None`` (allowed)
or a :class:`Refusal` (a wire code and a reason). The web node's
:class:`~squall.web.access.Access` and the processor's guard fetch the facts
and raise :class:`~squall.errors.Forbidden` with the refusal; nothing here
reads a store or a clock.

* read (join, stream, poll, history, members, typing): a server admin always;
  a banned user never (``banned``); a private room only its members
  (``not_member``); a public room anyone.
* post: as read, and not while muted (``muted``).
* moderate (mute, kick, ban and their undoing): owners and moderators of the
  room, and server admins (``forbidden``). Nobody acts on a room's owner but
  an admin, and a moderator does not act on another moderator.
* manage members (invite, remove): the owner and server admins (``forbidden``).

Room names starting with ``dm-`` are reserved for direct messages: such a
room that does not exist is private, so nobody creates one by joining it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable

__all__ = [
    "Role", "RoomInfo", "Membership", "Refusal", "NO_MEMBERSHIP", "DM_PREFIX",
    "read_refusal", "post_refusal", "moderate_refusal", "manage_refusal", "target_refusal",
    "dm_room_name", "is_dm", "MODERATION_ACTIONS", "MAX_MUTE_MINUTES",
]

DM_PREFIX = "dm-"
MODERATION_ACTIONS = ("mute", "unmute", "kick", "ban", "unban")
# A mute lasts at most a year; longer is a ban.
MAX_MUTE_MINUTES = 366 * 24 * 60


class Role(enum.Enum):
    OWNER = "owner"
    MODERATOR = "moderator"
    MEMBER = "member"


@dataclasses.dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room's row. ``exists`` is False for a name nobody created or used yet."""

    name: str
    exists: bool = True
    private: bool = False
    owner: str | None = None  # casefolded nick
    topic: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """One user's standing in one room; :data:`NO_MEMBERSHIP` when there is no row."""

    role: Role | None = None
    muted_until: int = 0  # ms since the epoch; 0: not muted
    banned: bool = False

    @property
    def is_member(self) -> bool:
        return self.role is not None and not self.banned


NO_MEMBERSHIP = Membership()


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # forbidden, not_member, banned, muted
    reason: str


def is_dm(room: str) -> bool:
    return room.startswith(DM_PREFIX)


def dm_room_name(keys: Iterable[str]) -> str:
    """The one room of a set of users (casefolded nicks), whoever asks for it."""
    digest = hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()
    return DM_PREFIX + digest[:24]


def _private(room: RoomInfo) -> bool:
    return room.private or (not room.exists and is_dm(room.name))


def read_refusal(room: RoomInfo, member: Membership, *, admin: bool) -> Refusal | None:
    if admin:
        return None
    if member.banned:
        return Refusal("banned", f"you are banned from room {room.name}")
    if _private(room) and not member.is_member:
        return Refusal("not_member", f"room {room.name} is private and you are not a member; ask its owner")
    return None


def post_refusal(room: RoomInfo, member: Membership, *, admin: bool, now_ms: int) -> Refusal | None:
    refusal = read_refusal(room, member, admin=admin)
    if refusal is not None or admin:
        return refusal
    if member.muted_until > now_ms:
        seconds = -(-(member.muted_until - now_ms) // 1000)
        return Refusal("muted", f"you are muted in room {room.name} for {seconds} more seconds")
    return None


def moderate_refusal(room: RoomInfo, member: Membership, *, admin: bool) -> Refusal | None:
    if admin or (member.is_member and member.role in (Role.OWNER, Role.MODERATOR)):
        return None
    return Refusal("forbidden", f"only owners and moderators of room {room.name} may moderate it")


def manage_refusal(room: RoomInfo, member: Membership, *, admin: bool) -> Refusal | None:
    if admin or (member.is_member and member.role is Role.OWNER):
        return None
    if room.owner is None and not room.private:
        return Refusal("forbidden", f"room {room.name} has no owner; only a server admin manages its members")
    return Refusal("forbidden", f"only the owner of room {room.name} may add or remove members")


def target_refusal(
    room: RoomInfo, actor: Membership, target: Membership, *, admin: bool, self_action: bool
) -> Refusal | None:
    """Whether an allowed moderator may act on this ``target``."""
    if self_action:
        return Refusal("forbidden", "you cannot moderate or remove yourself; leave the room instead")
    if admin:
        return None
    if target.role is Role.OWNER:
        return Refusal("forbidden", f"nobody but a server admin acts on the owner of room {room.name}")
    if target.role is Role.MODERATOR and actor.role is not Role.OWNER:
        return Refusal("forbidden", "a moderator cannot act on another moderator")
    return None
