"""The search index in both stores: built over existing messages by the
migration, kept in step with edits and deletes, ranked with newer first among
equals (``store_url``: SQLite, then PostgreSQL)."""

from __future__ import annotations

import sqlite3

import asyncpg

from pg_support import query
from support import opened, run_async

from squall.message import Draft
from squall.protocol import CANARY_ROOM
from squall.search import parse_query, rank
from squall.store import Store
from squall.store import postgres as pg_store
from squall.store import sqlite as sqlite_store


async def hits(store: Store, q: str, room: str | None = None) -> list[tuple[str, int]]:
    found = await store.search(parse_query(q), room=room, pin=None, window=100)
    return [(c.room, c.seq) for c in rank(found.candidates, parse_query(q).terms, share=found.share)]


def draft(room: str, cid: str, body: str, ts: int) -> Draft:
    return Draft(room=room, nick="ann", id=cid, body=body, ts=ts)


async def write(url: str, statement: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(statement)
    else:
        await query(url, statement)


async def create_before_search(url: str) -> None:
    """The schema as it was before search, with three messages in it."""
    rows = [
        ("lobby", 1, "the old deploy notes", 1000), ("lobby", 2, "旧的数据库备份", 2000),
        (CANARY_ROOM, 1, "deploy canary", 3000),
    ]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for script in sqlite_store._MIGRATIONS[:4]:
                db.executescript(script)
            db.execute("PRAGMA user_version=4")
            db.execute(f"INSERT INTO rooms VALUES ('lobby', 2), ('{CANARY_ROOM}', 1)")
            db.executemany(
                "INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts)"
                " VALUES (?, ?, 'ann', 'ann', ?, ?, '', '[]', '[]', ?)",
                [(room, seq, f"c{seq}{room}", body, ts) for room, seq, body, ts in rows],
            )
        return
    db = await asyncpg.connect(url)
    try:
        for script in pg_store._MIGRATIONS[:4]:
            await db.execute(script)
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute("INSERT INTO schema_version VALUES (4)")
        await db.execute(f"INSERT INTO rooms VALUES ('lobby', 2), ('{CANARY_ROOM}', 1)")
        await db.executemany(
            "INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts)"
            " VALUES ($1, $2, 'ann', 'ann', $3, $4, '', '[]', '[]', $5)",
            [(room, seq, f"c{seq}{room}", body, ts) for room, seq, body, ts in rows],
        )
    finally:
        await db.close()


def test_the_migration_indexes_existing_messages(store_url: str) -> None:
    async def scenario() -> None:
        await create_before_search(store_url)
        async with opened(store_url) as store:
            assert await hits(store, "deploy") == [("lobby", 1)]  # not the canary's
            assert await hits(store, "数据库") == [("lobby", 2)]
            # And messages stored from now on are found with them, newest first among equals.
            await store.save_messages([draft("lobby", "new", "new deploy notes", 5000)])
            assert await hits(store, "deploy notes") == [("lobby", 3), ("lobby", 1)]

    run_async(scenario())


def test_the_index_follows_edits_and_deletes(store_url: str) -> None:
    """Whoever changes a body or deletes a message (edits, tombstones), the index follows."""

    async def scenario() -> None:
        async with opened(store_url) as store:
            await store.save_messages([
                draft("r", "a", "plan one", 1), draft("r", "b", "plan two", 2), draft("s", "c", "plan six", 3),
            ])
            assert await hits(store, "plan") == [("s", 1), ("r", 2), ("r", 1)]
            assert await hits(store, "plan", room="r") == [("r", 2), ("r", 1)]
            await write(store_url, "UPDATE messages SET body = 'rewritten entirely' WHERE room = 'r' AND seq = 1")
            assert await hits(store, "one") == []
            assert await hits(store, "rewritten") == [("r", 1)]
            await write(store_url, "DELETE FROM messages WHERE room = 'r' AND seq = 2")
            assert await hits(store, "plan") == [("s", 1)]
            assert [m.body for m in await store.messages_at([("s", 1), ("r", 2), ("r", 1)])] == [
                "plan six", "rewritten entirely",
            ]

    run_async(scenario())


def test_wildcards_and_quotes_in_terms_are_literal(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            await store.save_messages([
                draft("r", "a", "100% sure", 1), draft("r", "b", "1000 sure", 2),
                draft("r", "c", 'she said "hi there" twice', 3), draft("r", "d", "a_b and axb", 4),
            ])
            assert await hits(store, "0%") == [("r", 1)]
            assert await hits(store, "100%") == [("r", 1)]
            assert await hits(store, '"hi') == [("r", 3)]
            assert await hits(store, "a_b") == [("r", 4)]
            assert await hits(store, "x_") == []
            assert await hits(store, "OR") == []  # not FTS syntax

    run_async(scenario())


def test_short_terms_ignore_case_in_any_script(store_url: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            await store.save_messages([
                draft("r", "a", "Été chaud", 1), draft("r", "b", "OK then", 2), draft("r", "c", "你好 everyone", 3),
            ])
            assert await hits(store, "éT") == [("r", 1)]
            assert await hits(store, "ok") == [("r", 2)]
            assert await hits(store, "你好") == [("r", 3)]
            assert await hits(store, "你好 EVERYONE") == [("r", 3)]

    run_async(scenario())
