"""The Store interface on both stores: every test runs on an SQLite file and on
a PostgreSQL database of its own (``store_url``; the PostgreSQL runs are marked
``postgres``). Store-specific tests live in test_store_sqlite.py and
test_store_postgres.py."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from pg_support import query
from support import opened, run_async

from squall.errors import ConfigError
from squall.message import Draft
from squall.store import Store, open_store


def draft(room: str, nick: str, cid: str, *, mentions: tuple[str, ...] = (), ts: int = 1) -> Draft:
    return Draft(room=room, nick=nick, id=cid, body=f"body of {cid}", ts=ts, mentions=mentions)


async def raw(url: str, statement: str) -> list[tuple[Any, ...]]:
    """One statement (no parameters, the same text for both) on the store's own database."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return db.execute(statement).fetchall()
    return [tuple(row) for row in await query(url, statement)]


def test_batches_store_each_client_id_once(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            first = await store.save_messages([draft("r", "Ann", "a"), draft("r", "ann", "a"), draft("r", "Bob", "a")])
            # Ann and ann are one nick; Bob's "a" is another message.
            assert [(d.seq, d.duplicate) for d in first] == [(1, False), (1, True), (2, False)]
            again = await store.save_messages(
                [draft("r", "Bob", "a"), draft("r", "Ann", "b"), draft("s", "Ann", "a")]
            )
            assert [(d.room, d.seq, d.duplicate) for d in again] == [("r", 2, True), ("r", 3, False), ("s", 1, False)]
            assert again[0].body == "body of a"
            assert await store.last_seq("r") == 3 and await store.last_seq("s") == 1
            assert await store.last_seq("nowhere") == 0

    run_async(scenario())


def test_a_message_without_a_nick_is_refused(store_url: str) -> None:
    """The last line behind the web node's authentication: no author, no message."""

    async def scenario() -> None:
        async with opened(store_url) as store:
            for nick in ("", "   "):
                with pytest.raises(ValueError, match="no nick"):
                    await store.save_messages([draft("r", "ann", "a1"), draft("r", nick, "a2")])
                with pytest.raises(ValueError, match="no nick"):
                    await store.save_user(nick)
            assert await store.last_seq("r") == 0
            assert await store.messages_after("r", 0, 10) == []

    run_async(scenario())


def test_history_reads_forward_and_backward_and_keeps_every_field(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            rich = Draft(room="r", nick="ann", id="x", body="see https://e.example", ts=1_700_000_000_123,
                         html="<p>see</p>", mentions=("Bob",), links=("https://e.example",))
            await store.save_messages([rich, *(draft("r", "ann", f"m{n}") for n in range(2, 8))])
            await store.save_previews("r", 1, [{"url": "https://e.example", "title": "E"}])
            after = await store.messages_after("r", 0, 3)
            assert [m.seq for m in after] == [1, 2, 3]
            assert after[0] == Draft(
                room="r", nick="ann", id="x", body=rich.body, ts=rich.ts, html=rich.html, mentions=("Bob",),
                links=("https://e.example",), seq=1, previews=({"url": "https://e.example", "title": "E"},),
            )
            assert [m.seq for m in await store.messages_after("r", 5, 10)] == [6, 7]
            assert [m.seq for m in await store.messages_before("r", None, 3)] == [5, 6, 7]
            assert [m.seq for m in await store.messages_before("r", 3, 10)] == [1, 2]
            assert await store.messages_before("other", None, 10) == []

    run_async(scenario())


def test_users_and_room_posters(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            assert await store.save_user("Ann") == "Ann"
            assert await store.save_user("ANN") == "Ann"  # the first spelling stays
            await store.save_user("Bob")
            await store.set_email("bob", "bob@example.org")
            assert await store.find_users(["ann", "bob", "carol"]) == {"ann": "Ann", "bob": "Bob"}
            assert await store.find_users([]) == {}
            user = await store.get_user("bob")
            assert user is not None and user.email == "bob@example.org" and not user.registered
            assert await store.get_user("carol") is None
            await store.save_messages([draft("r", "ann", "1"), draft("r", "Ann", "2"), draft("r", "bob", "3"),
                                       draft("s", "carol", "4")])
            assert sorted(await store.room_posters("r", 10)) == ["Ann", "Bob"]
            assert len(await store.room_posters("r", 1)) == 1

    run_async(scenario())


def test_guests_are_forgotten_once_their_last_session_is_old(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            for nick in ("Old", "Back", "Mailed", "Member", "Fresh"):
                await store.save_user(nick)
            await store.set_email("mailed", "m@example.com")
            await store.mark_seen([("old", "r", 3), ("fresh", "r", 4)])
            # As if a month had passed for all but Fresh.
            await raw(store_url, "UPDATE users SET created = 0 WHERE nick_key != 'fresh'")
            await raw(store_url, "UPDATE users SET password_hash = 'x' WHERE nick_key = 'member'")
            assert await store.save_user("back") == "Back"  # a new session: its clock restarts
            assert await store.forget_guests(last_session_before=100) == 1
            found = await store.find_users(["old", "back", "mailed", "member", "fresh"])
            assert sorted(found) == ["back", "fresh", "mailed", "member"]
            assert await raw(store_url, "SELECT nick_key FROM seen") == [("fresh",)]
            assert await store.forget_guests(last_session_before=100) == 0

    run_async(scenario())


def test_read_markers_only_rise(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            await store.mark_seen([("ann", "r", 5), ("ann", "s", 2)])
            await store.mark_seen([("ann", "r", 3), ("ann", "r", 7), ("ann", "s", 1)])
            assert sorted(await raw(store_url, "SELECT room, seq FROM seen WHERE nick_key = 'ann'")) == [("r", 7), ("s", 2)]
            await store.mark_seen([])

    run_async(scenario())


def test_accounts_and_sessions(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            # A guest holds "alice" on two sessions, then registers the nick.
            guest = await store.open_guest_session("Alice", "g1", now=10, takeover=False)
            assert guest is not None and guest.nick == "Alice" and guest.revoked == ()
            await store.open_guest_session("alice", "g2", now=11, takeover=False)
            await store.set_email("alice", "guest@example.org")
            done = await store.register("Alice", password_hash="h1", skeleton="alice", lookalikes=[],
                                        session_id="a1", now=12)
            assert done.taken_by is None and sorted(done.revoked) == ["g1", "g2"]
            user = await store.get_user("alice")
            assert user is not None and user.registered and user.email is None  # the guest's address went
            assert not await store.session_active("g1", "alice")
            assert await store.session_active("a1", "alice")
            assert not await store.session_active("a1", "bob")  # a session is one user's

            # The nick and its lookalikes are taken now.
            again = await store.register("ALICE", password_hash="h2", skeleton="alice", lookalikes=[],
                                         session_id="x", now=13)
            assert again.taken_by == "Alice"
            look = await store.register("AIice", password_hash="h2", skeleton="aiice", lookalikes=["alice"],
                                        session_id="x", now=13)
            assert look.taken_by == "Alice"
            assert await store.registered_lookalike(["alice", "zz"]) == "Alice"
            assert await store.registered_lookalike(["zz"]) is None
            assert await store.registered_lookalike([]) is None
            assert await store.open_guest_session("alice", "g3", now=14, takeover=True) is None

            # Another session, a re-hash that keeps them, a password change that ends them.
            await store.open_session("alice", "a2", now=15)
            await store.update_password_hash("alice", "h1-stronger")
            assert (await store.get_user("alice")).password_hash == "h1-stronger"  # type: ignore[union-attr]
            assert await store.session_active("a2", "alice")
            revoked = await store.change_password("alice", password_hash="h3", session_id="a3", now=16)
            assert sorted(revoked) == ["a1", "a2"]
            assert await store.session_active("a3", "alice")
            await store.revoke_session("a3", now=17)
            assert not await store.session_active("a3", "alice")

            # A guest nick changes hands with takeover; old sessions are forgotten by age.
            await store.open_guest_session("bob", "b1", now=20, takeover=False)
            taken = await store.open_guest_session("Bob", "b2", now=21, takeover=True)
            assert taken is not None and taken.nick == "bob" and taken.revoked == ("b1",)
            await store.forget_sessions(created_before=21)
            assert await raw(store_url, "SELECT id FROM sessions ORDER BY id") == [("b2",)]

    run_async(scenario())


def test_the_mention_mail_queue(store_url: str) -> None:
    """Mentions of users with an address are queued with the message; a claim
    hides them from every other notifier until it is finished, postponed or
    runs out."""

    async def scenario() -> None:
        async with opened(store_url) as store:
            for nick in ("ann", "bob", "carol"):
                await store.save_user(nick)
            await store.set_email("bob", "bob@example.org")
            await store.set_email("ann", "ann@example.org")
            saved = await store.save_messages(
                [draft("r", "ann", "1", mentions=("bob", "carol"), ts=1000),  # carol has no address
                 draft("r", "ann", "2", mentions=("ann",), ts=2000),  # her own name: nothing
                 draft("s", "carol", "3", mentions=("bob",), ts=3000)],
                notify_delay_ms=100,
            )
            await store.save_messages([draft("r", "ann", "1", mentions=("bob",), ts=1000)], notify_delay_ms=100)
            assert [d.duplicate for d in saved] == [False, False, False]
            await store.mark_seen([("bob", "s", 1)])

            assert await store.due_notifications(1099, 10) == []
            due = await store.due_notifications(1100, 10)
            assert [(n.nick_key, n.room, n.seq, n.sender) for n in due] == [("bob", "r", 1, "ann")]
            assert await store.next_notification_due() == 1100

            # A claim takes all of bob's pending notifications, due or not, with his read markers.
            claimed = await store.claim_notifications("bob", now_ms=1100, until_ms=5000)
            assert [(n.room, n.seq, n.email, n.seen_seq, n.due) for n in claimed] == [
                ("r", 1, "bob@example.org", None, 1100), ("s", 1, "bob@example.org", 1, 3100),
            ]
            assert await store.claim_notifications("bob", now_ms=1200, until_ms=5000) == []
            assert await store.due_notifications(4000, 10) == []  # claimed: nobody else's
            assert await store.next_notification_due() == 5000

            # A failed delivery postpones them and ends the claim.
            await store.postpone_notifications([claimed[0].id], 6000)
            assert await store.next_notification_due() == 5000  # the other one's claim
            again = await store.claim_notifications("bob", now_ms=5000, until_ms=9000)
            assert [(n.seq, n.room, n.attempts) for n in again] == [(1, "r", 1), (1, "s", 0)]
            await store.finish_notifications([n.id for n in again], "sent")
            assert await store.next_notification_due() is None
            assert await store.claim_notifications("bob", now_ms=99_999, until_ms=199_999) == []

    run_async(scenario())


def test_reopening_keeps_the_data_and_a_newer_schema_is_refused(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            await store.save_messages([draft("r", "ann", "1")])
        async with opened(store_url) as store:
            assert [m.id for m in await store.messages_after("r", 0, 10)] == ["1"]
        if store_url.startswith("sqlite:///"):
            await raw(store_url, "PRAGMA user_version = 99")
        else:
            await raw(store_url, "UPDATE schema_version SET version = 99")
        store = open_store(store_url)
        with pytest.raises((ConfigError, RuntimeError), match="schema version 99, newer than"):
            await store.open()
        await store.close()

    run_async(scenario())
