"""The access rules of squall/rooms.py (no I/O), the processor's guard on a real
SQLite store, and the bus notice that carries access changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from squall.bus.wire import BadBusMessage, decode_control, encode_control
from squall.errors import Rejected
from squall.message import Draft
from squall.processor.guard import AccessGuard
from squall.rooms import (
    NO_MEMBERSHIP,
    Membership,
    Role,
    RoomInfo,
    dm_room_name,
    manage_refusal,
    moderate_refusal,
    post_refusal,
    read_refusal,
    target_refusal,
)
from squall.store import open_store

PUBLIC = RoomInfo("lobby")
PRIVATE = RoomInfo("secret", private=True, owner="alice")
MEMBER = Membership(Role.MEMBER)
OWNER = Membership(Role.OWNER)
MODERATOR = Membership(Role.MODERATOR)
BANNED = Membership(Role.MEMBER, banned=True)


def code(refusal: object) -> str | None:
    return getattr(refusal, "code", None)


@pytest.mark.parametrize(("room", "member", "admin", "expected"), [
    (PUBLIC, NO_MEMBERSHIP, False, None),
    (PUBLIC, BANNED, False, "banned"),
    (PRIVATE, NO_MEMBERSHIP, False, "not_member"),
    (PRIVATE, MEMBER, False, None),
    (PRIVATE, BANNED, False, "banned"),
    (PRIVATE, NO_MEMBERSHIP, True, None),
    (RoomInfo("dm-abc", exists=False), NO_MEMBERSHIP, False, "not_member"),
    (RoomInfo("nobody-made-me", exists=False), NO_MEMBERSHIP, False, None),
])
def test_who_reads(room: RoomInfo, member: Membership, admin: bool, expected: str | None) -> None:
    assert code(read_refusal(room, member, admin=admin)) == expected


def test_a_mute_ends_at_its_time() -> None:
    muted = Membership(Role.MEMBER, muted_until=10_000)
    refusal = post_refusal(PUBLIC, muted, admin=False, now_ms=8_500)
    assert refusal is not None and refusal.code == "muted" and "2 more seconds" in refusal.reason
    assert post_refusal(PUBLIC, muted, admin=False, now_ms=10_000) is None
    assert post_refusal(PUBLIC, muted, admin=True, now_ms=0) is None


def test_who_moderates_and_manages() -> None:
    assert code(moderate_refusal(PRIVATE, MEMBER, admin=False)) == "forbidden"
    assert moderate_refusal(PRIVATE, MODERATOR, admin=False) is None
    assert code(moderate_refusal(PRIVATE, Membership(Role.OWNER, banned=True), admin=False)) == "forbidden"
    assert code(manage_refusal(PRIVATE, MODERATOR, admin=False)) == "forbidden"
    assert manage_refusal(PRIVATE, OWNER, admin=False) is None
    assert manage_refusal(PUBLIC, NO_MEMBERSHIP, admin=True) is None
    assert code(target_refusal(PRIVATE, MODERATOR, OWNER, admin=False, self_action=False)) == "forbidden"
    assert code(target_refusal(PRIVATE, MODERATOR, MODERATOR, admin=False, self_action=False)) == "forbidden"
    assert target_refusal(PRIVATE, OWNER, MODERATOR, admin=False, self_action=False) is None
    assert target_refusal(PRIVATE, NO_MEMBERSHIP, OWNER, admin=True, self_action=False) is None
    assert code(target_refusal(PRIVATE, OWNER, OWNER, admin=False, self_action=True)) == "forbidden"


def test_a_dm_name_depends_on_the_set_only() -> None:
    assert dm_room_name(["bob", "alice"]) == dm_room_name(["alice", "bob", "bob"])
    assert dm_room_name(["alice", "bob"]) != dm_room_name(["alice", "carol"])
    assert dm_room_name(["a"]).startswith("dm-") and len(dm_room_name(["a"])) == 27


def test_access_changes_cross_the_bus_intact() -> None:
    data = encode_control(b"node1", "access", changes=[("secret", "carol", "banned"), ("lobby", "", "")])
    control = decode_control(data)
    assert control.op == "access" and control.changes == (("secret", "carol", "banned"), ("lobby", "", ""))
    with pytest.raises(BadBusMessage):
        decode_control(b'{"origin": "n", "op": "access", "changes": [["only", "two"]]}')


def test_the_processor_refuses_a_send_into_a_private_room_from_a_non_member(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'squall.db'}")
        await store.open()
        try:
            assert await store.create_room("secret", topic="", private=True, owner="alice", now_ms=1)
            guard = AccessGuard(store, admins=["Root"])

            def draft(nick: str, room: str = "secret") -> Draft:
                return Draft(room=room, nick=nick, id="1", body="hi", ts=1)

            assert (await guard(draft("alice"))).nick == "alice"
            assert (await guard(draft("ROOT"))).nick == "ROOT"
            assert (await guard(draft("bob", "lobby"))).room == "lobby"
            with pytest.raises(Rejected) as refused:
                await guard(draft("bob"))
            assert refused.value.code == "not_member"
            with pytest.raises(Rejected) as refused:
                await guard(draft("bob", "dm-0123"))
            assert refused.value.code == "not_member"
        finally:
            await store.close()

    asyncio.run(scenario())
