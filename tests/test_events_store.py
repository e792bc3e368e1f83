"""Message events in the store, on both stores (``store_url``): edits, deletes,
reactions and replies as rows of the room's one seq order, the target row
holding the message's current state, refusals that store nothing, and
idempotency of changes (issue 12, items 3-5)."""

from __future__ import annotations

import dataclasses

import pytest

from support import opened, run_async

from squall.message import ChangeRules, Draft
from squall.store import Store

RULES = ChangeRules(edit_window_ms=60_000, max_reactions=2)


def msg(cid: str, nick: str = "alice", *, ts: int = 1000, body: str | None = None, **fields: object) -> Draft:
    text = body if body is not None else f"body of {cid}"
    return Draft(room="r", nick=nick, id=cid, body=text, html=f"<p>{text}</p>", ts=ts, **fields)  # type: ignore[arg-type]


def change(kind: str, cid: str, target: int, nick: str = "alice", *, ts: int = 2000, **fields: object) -> Draft:
    return Draft(room="r", nick=nick, id=cid, body=fields.pop("body", ""), ts=ts, kind=kind,  # type: ignore[arg-type]
                 target=target, **fields)  # type: ignore[arg-type]


async def save(store: Store, *drafts: Draft) -> list[Draft]:
    return await store.save_messages(list(drafts), rules=RULES)


def test_changes_take_seqs_and_the_target_holds_the_current_state(store_url: str) -> None:
    async def main() -> None:
        async with opened(store_url) as store:
            [first, second] = await save(store, msg("m1"), msg("m2", "bob"))
            [edit] = await save(store, change("edit", "e1", 1, body="new text", html="<p>new text</p>"))
            assert (edit.seq, edit.state.body, edit.state.edited) == (3, "new text", 2000)  # type: ignore[union-attr]
            [react, again, other] = await save(
                store, change("react", "x1", 2, emoji="👍"), change("react", "x2", 2, "carol", emoji="👍"),
                change("react", "x3", 2, emoji="🎉"),
            )
            assert other.state.reactions == (("👍", ("alice", "carol")), ("🎉", ("alice",)))  # type: ignore[union-attr]
            [gone] = await save(store, change("delete", "d1", 2, "bob"))
            assert gone.state.deleted and gone.state.body == "" and gone.state.reactions == ()  # type: ignore[union-attr]
            assert await store.last_seq("r") == 7

            history = await store.messages_before("r", None, 10)
            assert [(m.seq, m.body, m.deleted, m.edited) for m in history] == [
                (1, "new text", False, 2000), (2, "", True, None),
            ]
            after = await store.messages_after("r", 2, 10)
            assert [(c.seq, c.kind, c.target) for c in after] == [
                (3, "edit", 1), (4, "react", 2), (5, "react", 2), (6, "react", 2), (7, "delete", 2),
            ]
            # A change read back carries its target's state now (a tombstone for 2).
            assert after[1].state.deleted and after[0].state.body == "new text"  # type: ignore[union-attr]
            assert after[0].to_wire()["message"]["edited"] is True

    run_async(main())


def test_refusals_store_nothing_and_take_no_seq(store_url: str) -> None:
    async def main() -> None:
        async with opened(store_url) as store:
            await save(store, msg("m1"), msg("m2"), msg("m3"))
            refused = await save(
                store,
                change("edit", "a", 1, "bob", body="x"),  # not the author
                change("edit", "b", 1, ts=1000 + 60_001, body="x"),  # past the window
                change("edit", "c", 99, body="x"),  # no such message
                change("delete", "d", 1, "bob"),  # not the author, no moderator
                change("react", "e", 3, emoji="👍"),
                change("react", "f", 3, emoji="🎉"),
                change("react", "g", 3, emoji="🙂"),  # a third distinct emoji: limit 2
                msg("h", reply_to=42),  # answers nothing
            )
            assert [d.refusal[0] if d.refusal else None for d in refused] == [
                "forbidden", "edit_window", "not_found", "forbidden", None, None, "too_many_reactions",
                "not_found",
            ]
            assert [d.seq for d in refused if d.refusal is None] == [4, 5]
            assert await store.last_seq("r") == 5
            [moderated] = await save(store, change("delete", "i", 1, "bob", moderator=True))
            assert moderated.seq == 6 and moderated.state.deleted  # type: ignore[union-attr]
            [late] = await save(store, change("edit", "j", 1, body="x"))
            assert late.refusal is not None and late.refusal[0] == "not_found"  # deleted

    run_async(main())


def test_a_change_is_stored_once_per_client_id(store_url: str) -> None:
    async def main() -> None:
        async with opened(store_url) as store:
            await save(store, msg("m1"))
            [first] = await save(store, change("react", "x", 1, emoji="👍"))
            [again, inside] = await save(
                store, change("react", "x", 1, emoji="👍"), change("react", "x", 1, emoji="👍")
            )
            assert again.duplicate and inside.duplicate and again.seq == inside.seq == first.seq == 2
            assert again.kind == "react" and again.state.reactions == (("👍", ("alice",)),)  # type: ignore[union-attr]
            assert await store.last_seq("r") == 2

    run_async(main())


def test_replies_quote_their_target_until_it_is_deleted(store_url: str) -> None:
    async def main() -> None:
        async with opened(store_url) as store:
            await save(store, msg("m1", "bob", body="x" * 300))
            [reply] = await save(store, msg("m2", reply_to=1))
            assert reply.reply_to == 1 and reply.reply_snippet[0] == "bob"  # type: ignore[index]
            assert len(reply.reply_snippet[1]) == 100  # type: ignore[index]
            # A reply to a message of the same batch.
            [_, inner] = await save(store, msg("m3"), msg("m4", "bob", reply_to=3))
            assert inner.reply_snippet == ("alice", "body of m3")
            await save(store, change("delete", "d", 1, "bob"))
            [stored] = [m for m in await store.messages_before("r", None, 10) if m.seq == 2]
            assert stored.reply_to == 1 and stored.reply_snippet is None
            wire = stored.to_wire()
            assert wire["reply_to"] == 1 and wire["reply_snippet"] is None

    run_async(main())


def test_plain_messages_look_as_before_on_the_wire(store_url: str) -> None:
    async def main() -> None:
        async with opened(store_url) as store:
            [saved] = await save(store, msg("m1"))
            [read] = await store.messages_after("r", 0, 10)
            assert read == dataclasses.replace(saved, duplicate=False)
            assert set(read.to_wire()) == {"type", "room", "seq", "id", "nick", "body", "html", "mentions", "links", "ts"}

    run_async(main())
