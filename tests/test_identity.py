"""Identity without a server: confusable skeletons, bidi controls in names and
bodies, password rules, and the token rules (format, age, session)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tornado.web import create_signed_value

from support import run_async

from squall.config import load_settings
from squall.errors import BadRequest, ConfigError
from squall.identity import check_password, nick_skeleton, nick_skeletons
from squall.pipeline.richtext import Renderer
from squall.protocol import BIDI_CONTROLS, check_nick, check_room
from squall.store.sqlite import SQLiteStore
from squall.web.auth import (
    MAX_CLOCK_SKEW, TOKEN_NAME, SessionUnchecked, TokenCache, decode_token, make_token,
)

SECRET = "s" * 32
CYRILLIC_ALICE = "\u0430lice"  # а is U+0430 CYRILLIC SMALL LETTER A
FULL_WIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"


# -- confusable skeletons ------------------------------------------------------------


@pytest.mark.parametrize("lookalike", [
    CYRILLIC_ALICE, FULL_WIDTH_ALICE, "AIice", "\U0001d41a\U0001d425\U0001d422\U0001d41c\U0001d41e",
    "\u0410LICE",  # Cyrillic capital А, then Latin capitals
])
def test_lookalikes_share_a_skeleton_with_alice(lookalike: str) -> None:
    assert nick_skeleton("alice") in nick_skeletons(lookalike)


@pytest.mark.parametrize("other", ["bob", "alicia", "alice2", "al1ce_"])
def test_different_nicks_do_not(other: str) -> None:
    assert nick_skeleton("alice") not in nick_skeletons(other)


def test_one_user_has_one_skeleton_whatever_the_spelling() -> None:
    assert nick_skeleton("Alice") == nick_skeleton("ALICE") == nick_skeleton("alice") == "alice"


# -- bidirectional controls ------------------------------------------------------------


@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS))
def test_bidi_controls_are_refused_in_nicks_and_rooms_by_code_point(char: str) -> None:
    point = f"U+{ord(char):04X}"
    with pytest.raises(BadRequest) as nick_error:
        check_nick(f"ab{char}c")
    assert nick_error.value.code == "bad_nick" and point in nick_error.value.reason
    with pytest.raises(BadRequest) as room_error:
        check_room(f"ab{char}c")
    assert room_error.value.code == "bad_room" and point in room_error.value.reason


def test_the_bidi_set_is_exactly_the_explicit_formatting_characters() -> None:
    expected = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C}
    assert {ord(c) for c in BIDI_CONTROLS} == expected


@pytest.mark.parametrize("body", [
    "abc \u202eevil\u202c def",  # plain-line fast path
    "*abc* \u202eevil def",  # through the parser
    "x\n\n```\nif a\u2067 == b\u2069:\n```",  # in a code block ("Trojan Source")
])
def test_rendered_bodies_carry_no_bidi_control(body: str) -> None:
    html = Renderer().to_html(body)
    assert not BIDI_CONTROLS & set(html), html
    assert "evil" in html or "if a" in html


def test_right_to_left_text_itself_is_kept() -> None:
    assert Renderer().to_html("שלום עולם") == "<p>שלום עולם</p>\n"


# -- passwords ----------------------------------------------------------------------


@pytest.mark.parametrize("password, rule", [
    ("short", "at least 8 characters, got 5"),
    ("x" * 1025, "at most 1024 characters, got 1025"),
    ("LongNick12", "must not be the nick"),
])
def test_weak_passwords_say_which_rule(password: str, rule: str) -> None:
    with pytest.raises(BadRequest) as error:
        check_password(password, nick="longnick12", min_length=8)
    assert error.value.code == "weak_password" and rule in error.value.reason


def test_a_good_password_passes() -> None:
    assert check_password("correct horse", nick="alice", min_length=8) == "correct horse"


# -- tokens ---------------------------------------------------------------------------


def test_a_fresh_token_names_its_session_and_nick() -> None:
    session = decode_token(SECRET, make_token(SECRET, "sid1", "Alice"), max_age_days=30, now=time.time())
    assert session is not None and (session.id, session.nick, session.nick_key) == ("sid1", "Alice", "alice")


def test_a_token_dated_in_the_future_is_refused() -> None:
    now = time.time()
    ahead = make_token(SECRET, "sid1", "alice", clock=lambda: now + MAX_CLOCK_SKEW + 5)
    assert decode_token(SECRET, ahead, max_age_days=30, now=now) is None
    within = make_token(SECRET, "sid1", "alice", clock=lambda: now + MAX_CLOCK_SKEW - 5)
    assert decode_token(SECRET, within, max_age_days=30, now=now) is not None


def test_an_expired_token_is_refused() -> None:
    now = time.time()
    old = make_token(SECRET, "sid1", "alice", clock=lambda: now - 31 * 86400)
    assert decode_token(SECRET, old, max_age_days=30, now=now) is None


def test_a_version_1_signed_value_is_refused() -> None:
    legacy = create_signed_value(SECRET, TOKEN_NAME, "sid1:alice", version=1).decode()
    assert decode_token(SECRET, legacy, max_age_days=30, now=time.time()) is None


@pytest.mark.parametrize("value", ["alice", ":alice", "sid1:", "sid1:bad nick!"])
def test_a_token_without_a_session_or_a_valid_nick_is_refused(value: str) -> None:
    token = create_signed_value(SECRET, TOKEN_NAME, value, version=2).decode()
    assert decode_token(SECRET, token, max_age_days=30, now=time.time()) is None


def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert decode_token(SECRET, make_token("t" * 32, "sid1", "alice"), max_age_days=30, now=time.time()) is None


def test_the_token_cache_asks_the_store_once_then_forgets_a_revoked_session(tmp_path: Path) -> None:
    run_async(_token_cache(tmp_path / "squall.db"))


async def _token_cache(path: Path) -> None:
    store = SQLiteStore(str(path))
    await store.open()
    asked: list[str] = []

    async def session_active(session_id: str, key: str) -> bool:
        asked.append(session_id)
        return await store.session_active(session_id, key)

    try:
        granted = await store.open_guest_session("alice", "sid1", now=int(time.time()), takeover=True)
        assert granted is not None
        cache = TokenCache(SECRET, session_active=session_active, max_age_days=30, ttl=60)
        token = make_token(SECRET, "sid1", "alice")
        with pytest.raises(SessionUnchecked):
            cache.nick(token, now=0)  # nothing known yet: the caller must await check()
        assert (await cache.check(token, now=0)) is not None
        assert cache.nick(token, now=1) == "alice"  # from memory, no store read
        assert (await cache.check(token, now=2)) is not None
        assert asked == ["sid1"]
        with pytest.raises(SessionUnchecked):
            cache.nick(token, now=61)  # past the TTL, memory has no answer
        assert (await cache.check(token, now=61)) is not None
        assert asked == ["sid1", "sid1"]

        await store.revoke_session("sid1", now=int(time.time()))
        assert cache.nick(token, now=62) == "alice"  # another node's revocation: up to the TTL late
        cache.revoked(["sid1"], now=62)
        assert cache.nick(token, now=63) is None  # at once on this node
        assert (await cache.check(token, now=200)) is None  # and the store agrees later
        unknown = make_token(SECRET, "never-opened", "alice")
        assert (await cache.check(unknown, now=200)) is None
    finally:
        await store.close()


@pytest.mark.parametrize("value", [0, 1025])
def test_password_min_length_out_of_range_is_refused_naming_the_setting(value: int) -> None:
    with pytest.raises(ConfigError, match="password_min_length must be between 1 and 1024"):
        load_settings({"password_min_length": value}, environ={})


def test_a_revocation_during_a_store_read_wins(tmp_path: Path) -> None:
    run_async(_revoked_while_checking(tmp_path / "squall.db"))


async def _revoked_while_checking(path: Path) -> None:
    store = SQLiteStore(str(path))
    await store.open()
    reading = asyncio.Event()
    answered = asyncio.Event()

    async def slow_session_active(session_id: str, key: str) -> bool:
        live = await store.session_active(session_id, key)  # read before the revocation
        reading.set()
        await answered.wait()
        return live

    try:
        await store.open_guest_session("nora", "sid9", now=int(time.time()), takeover=True)
        cache = TokenCache(SECRET, session_active=slow_session_active, max_age_days=30, ttl=60)
        token = make_token(SECRET, "sid9", "nora")
        check = asyncio.ensure_future(cache.check(token, now=0))
        await reading.wait()
        cache.revoked(["sid9"], now=1)  # POST /api/logout on this node, meanwhile
        answered.set()
        assert await check is None
        assert cache.nick(token, now=2) is None
    finally:
        await store.close()
