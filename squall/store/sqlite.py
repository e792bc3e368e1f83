"""The SQLite store, the embedded default.

Writes come in batches (group commit): the processor hands over every message
that arrived while the previous transaction ran, and one ``BEGIN IMMEDIATE`` …
``COMMIT`` stores them all. ``BEGIN IMMEDIATE`` takes the write lock up front,
so two processors sharing a file serialise instead of both reading the same
``last_seq``. WAL mode lets the web node read while the processor writes.
``synchronous=FULL`` because an acknowledged message must survive a power cut,
not only a crash; the batch amortises the fsync.

Writes run on one connection, each transaction as a single plain function
(``_save_batch``), never one await per statement as through aiosqlite, whose
per-call round trips cost more CPU than the statements themselves. Where they
run is the owner's choice:

* in one worker thread (the default, for the web node, whose loop must never
  block): one hop between the event loop and the thread per transaction; the
  one thread also serialises every write;
* on the event loop itself (``writes_in_loop=True``, for the processor): the
  loop stops for each transaction, fsync included. That costs the processor
  nothing it needs (requests that arrive meanwhile wait in the socket and make
  the next group commit bigger) and saves the two thread switches and three
  futures per transaction, most of a lone message's cost in a processor.

Reads go through aiosqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from ..changes import apply_change, reply_snippet
from ..files import FileRecord
from ..message import MESSAGE, ChangeRules, Draft, reactions_from_json
from ..protocol import CANARY_ROOM, nick_key
from ..rooms import NO_MEMBERSHIP, Membership, Role, RoomInfo, is_dm
from ..search import SHARE_SAMPLE, SHORT_QUERY_WINDOW, Candidate, SearchQuery, contains
from . import (
    DirectMessages, GuestSession, Notification, Registration, RoomListing, SearchWindow, User, fts_query,
    like_escape,
)

__all__ = ["SQLiteStore", "SCHEMA_VERSION", "SEARCH_INDEX_TABLES", "earlier_copies_sql"]

_MIGRATIONS: list[str] = [
    # 1: rooms, messages, users.
    """
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        nick TEXT NOT NULL,
        nick_key TEXT NOT NULL,
        cid TEXT NOT NULL,
        body TEXT NOT NULL,
        html TEXT NOT NULL,
        mentions TEXT NOT NULL,
        links TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (room, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_by_client_id ON messages (room, nick_key, cid);
    CREATE TABLE users (
        nick_key TEXT PRIMARY KEY,
        nick TEXT NOT NULL,
        email TEXT,
        password_hash TEXT,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: link previews, read markers, pending e-mail notifications.
    """
    ALTER TABLE messages ADD COLUMN previews TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE seen (
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (nick_key, room)
    ) WITHOUT ROWID;
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        ts INTEGER NOT NULL,
        due INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        UNIQUE (nick_key, room, seq)
    );
    CREATE INDEX notifications_due ON notifications (state, due);
    """,
    # 3: accounts (password_hash is set for registered users, with their
    # confusable skeleton, unique among them) and revocable sessions.
    """
    ALTER TABLE users ADD COLUMN skeleton TEXT;
    CREATE UNIQUE INDEX users_by_skeleton ON users (skeleton);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        nick_key TEXT NOT NULL,
        created INTEGER NOT NULL,
        revoked INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (nick_key);
    CREATE INDEX sessions_by_age ON sessions (created);
    """,
    # 4: a notifier claims a user's notifications before mailing them, so that
    # several notifiers sharing the queue never mail one twice (ms; 0: free).
    """
    ALTER TABLE notifications ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: full-text search (docs/store.md, "Search"). message_search is a
    # contentless FTS5 index of trigrams of each body (any script, spaces or
    # none); search_rows numbers the indexed messages in the order they were
    # stored and maps that number, the index's rowid, to (room, seq), since
    # messages has no rowid of its own. Triggers keep both in step with
    # messages in the writer's own transaction: an insert, a body changed (an
    # edit, a tombstone), a delete. The canary room is never indexed. Existing
    # messages are indexed here, oldest first.
    """
    CREATE TABLE search_rows (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        UNIQUE (room, seq)
    );
    CREATE VIRTUAL TABLE message_search USING fts5 (body, content='', tokenize='trigram');
    CREATE TRIGGER message_search_insert AFTER INSERT ON messages WHEN new.room != '_canary' BEGIN
        INSERT INTO search_rows (room, seq) VALUES (new.room, new.seq);
        INSERT INTO message_search (rowid, body) VALUES (last_insert_rowid(), new.body);
    END;
    CREATE TRIGGER message_search_update AFTER UPDATE OF body ON messages
    WHEN new.room != '_canary' AND new.body IS NOT old.body BEGIN
        INSERT INTO message_search (message_search, rowid, body)
        SELECT 'delete', id, old.body FROM search_rows WHERE room = old.room AND seq = old.seq;
        INSERT INTO message_search (rowid, body)
        SELECT id, new.body FROM search_rows WHERE room = new.room AND seq = new.seq;
    END;
    CREATE TRIGGER message_search_delete AFTER DELETE ON messages WHEN old.room != '_canary' BEGIN
        INSERT INTO message_search (message_search, rowid, body)
        SELECT 'delete', id, old.body FROM search_rows WHERE room = old.room AND seq = old.seq;
        DELETE FROM search_rows WHERE room = old.room AND seq = old.seq;
    END;
    INSERT INTO search_rows (room, seq)
    SELECT room, seq FROM messages WHERE room != '_canary' ORDER BY ts, room, seq;
    INSERT INTO message_search (rowid, body)
    SELECT r.id, m.body FROM search_rows r JOIN messages m ON m.room = r.room AND m.seq = r.seq;
    """,
    # 6: uploads (squall/files.py): one row per user and content; a message's
    # attachments (FileRecord.to_wire() dicts, JSON); the rooms a file was
    # posted to, which decide who may fetch it besides its uploaders.
    """
    ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        ext TEXT NOT NULL,
        size INTEGER NOT NULL,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        thumb TEXT,
        created INTEGER NOT NULL,
        UNIQUE (owner_key, sha256)
    ) WITHOUT ROWID;
    CREATE INDEX files_by_sha256 ON files (sha256);
    CREATE TABLE file_rooms (
        sha256 TEXT NOT NULL,
        room TEXT NOT NULL,
        PRIMARY KEY (sha256, room)
    ) WITHOUT ROWID;
    """,
    # 7: message events (squall/changes.py): edits, deletes and reactions are rows
    # of their own (kind, target, emoji) in the room's seq order; the target row
    # holds the message's current state (edited, deleted, reactions). Replies
    # carry the seq they answer and a snippet of it (JSON [nick, body] or NULL).
    """
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
    ALTER TABLE messages ADD COLUMN target INTEGER;
    ALTER TABLE messages ADD COLUMN emoji TEXT;
    ALTER TABLE messages ADD COLUMN reply_to INTEGER;
    ALTER TABLE messages ADD COLUMN reply_snippet TEXT;
    ALTER TABLE messages ADD COLUMN edited INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN reactions TEXT NOT NULL DEFAULT '{}';
    CREATE INDEX messages_by_target ON messages (room, target) WHERE target IS NOT NULL;
    CREATE INDEX messages_by_reply ON messages (room, reply_to) WHERE reply_to IS NOT NULL;
    """,
    # 8: rooms: topic, owner, private, created (ms); memberships with roles, mutes, bans.
    """
    ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN owner TEXT;
    ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE members (
        room TEXT NOT NULL,
        nick_key TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'member',
        muted_until INTEGER NOT NULL DEFAULT 0,
        banned INTEGER NOT NULL DEFAULT 0,
        since INTEGER NOT NULL,
        PRIMARY KEY (room, nick_key)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members (nick_key);
    CREATE TABLE reads (
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (nick_key, room)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)
# Tables (and prefixes of FTS5's shadow tables) that are the search index
# here and an index on messages in PostgreSQL: the two schemas differ by them.
SEARCH_INDEX_TABLES = ("search_rows", "message_search")

_T = TypeVar("_T")
# How long a connection waits for the other process's lock before failing.
_BUSY_TIMEOUT_MS = 10_000

_COLUMNS = (
    "room, seq, nick, cid, body, html, mentions, links, ts, previews,"
    " kind, target, emoji, reply_to, reply_snippet, edited, deleted, reactions, attachments"
)
_NUM_COLUMNS = len(_COLUMNS.split(","))
_FILE_COLUMNS = "id, owner_key, sha256, ext, size, type, name, created, width, height, thumb"
# A Notification's fields, from notifications n JOIN users u LEFT JOIN seen s.
_NOTIFICATION_COLUMNS = (
    "n.id, n.nick_key, u.nick, u.email, n.room, n.seq, n.sender, n.body, n.ts, n.due, n.attempts, s.seq"
)


_EARLIER_COLUMNS = ", ".join(f"m.{name.strip()}" for name in _COLUMNS.split(","))
_TARGET_COLUMNS = ", ".join(f"t.{name.strip()}" for name in _COLUMNS.split(","))
# A row and, for a change, its target's current state (history reads, resumes).
_WITH_TARGET = (
    f"SELECT {_EARLIER_COLUMNS}, {_TARGET_COLUMNS} FROM messages AS m"
    " LEFT JOIN messages AS t ON t.room = m.room AND t.seq = m.target"
)


@functools.lru_cache(maxsize=64)
def earlier_copies_sql(keys: int) -> str:
    """The query for stored messages with any of ``keys`` (room, nick_key, cid) triples.

    A join from the keys, not ``(room, nick_key, cid) IN (VALUES ...)``: SQLite
    answers that form with a scan of every message, so each batch would cost
    more as the room's history grows.
    """
    marks = ",".join(["(?, ?, ?)"] * keys)
    columns = _EARLIER_COLUMNS
    return (
        f"SELECT {columns}, {_TARGET_COLUMNS}, m.nick_key FROM (VALUES {marks}) AS k JOIN messages AS m"
        " ON m.room = k.column1 AND m.nick_key = k.column2 AND m.cid = k.column3"
        " LEFT JOIN messages AS t ON t.room = m.room AND t.seq = m.target"
    )


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script``, one by one; a trigger's body (``BEGIN … END;``)
    holds semicolons of its own, so splitting at each one would cut it."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"migration ends in an incomplete statement: {pending.strip()[:80]!r}")


def _check_author(nick: str, what: str) -> None:
    """The store's own last line behind authentication (which must have refused
    first): nothing is stored without an author."""
    if not nick.strip():
        raise ValueError(f"{what} has no nick ({nick!r}); the store keeps nothing without an author")


def _row_to_draft(row: Any) -> Draft:
    """A row of :data:`_COLUMNS`, followed (for a change) by its target's."""
    (room, seq, nick, cid, body, html, mentions, links, ts, previews,
     kind, target, emoji, reply_to, snippet, edited, deleted, reactions, attachments) = row[:_NUM_COLUMNS]
    state = None
    if kind != MESSAGE and len(row) >= 2 * _NUM_COLUMNS and row[_NUM_COLUMNS + 1] is not None:
        state = _row_to_draft(row[_NUM_COLUMNS: 2 * _NUM_COLUMNS])
    return Draft(
        room=room, seq=seq, nick=nick, id=cid, body=body, html=html,
        mentions=tuple(orjson.loads(mentions)), links=tuple(orjson.loads(links)), ts=ts,
        previews=tuple(orjson.loads(previews)), kind=kind, target=target, emoji=emoji,
        reply_to=reply_to, reply_snippet=tuple(orjson.loads(snippet)) if snippet else None,
        edited=edited, deleted=bool(deleted), reactions=reactions_from_json(orjson.loads(reactions)),
        state=state, attachments=tuple(orjson.loads(attachments)),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _message_row(saved: Draft, key: str) -> tuple[Any, ...]:
    """The INSERT values (:data:`_INSERT`) of a stored message or change."""
    return (
        saved.room, saved.seq, saved.nick, key, saved.id,
        "" if saved.is_change else saved.body, "" if saved.is_change else saved.html,
        _json(list(saved.mentions)), _json([] if saved.is_change else list(saved.links)), saved.ts,
        saved.kind, saved.target, saved.emoji, saved.reply_to,
        _json(list(saved.reply_snippet)) if saved.reply_snippet else None,
        _json([] if saved.is_change else list(saved.attachments)),
    )


_INSERT = (
    "INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts,"
    " kind, target, emoji, reply_to, reply_snippet, attachments)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(*row)


# Guest rows deleted per write transaction by forget_guests.
_FORGET_SLICE = 1000


class SQLiteStore:
    """Messages, users and sessions in the SQLite file at ``path``.

    :param writes_in_loop: run write transactions on the event loop's thread,
        blocking it for each (see the module's docstring); default False, a
        worker thread. Only for a process whose loop may block: the processor.
    """

    def __init__(self, path: str, *, writes_in_loop: bool = False) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None  # reads
        self._writer: sqlite3.Connection | None = None  # used only in _write_thread, or in the loop
        self._write_thread = (
            None if writes_in_loop
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="squall-sqlite")
        )

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before open()")
        return self._db

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Processes opening a fresh file together may all ask for the lock that
        # switches it to WAL at once; SQLite then refuses one at once instead of
        # calling its busy handler (that wait could deadlock). Try again, within
        # the same bound as any other wait for a lock.
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        pause = 0.005
        while True:
            try:
                await self._in_writer(self._open_writer)
                break
            except sqlite3.OperationalError as exc:
                await self._in_writer(self._close_writer)
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.2)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        # Search's check of a term against a body, with Unicode case folding
        # (SQLite's LIKE folds ASCII only).
        await db.create_function("squall_contains", 2, contains, deterministic=True)
        self._db = db

    async def _in_writer(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._write_thread is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, function, *args)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open_writer(self) -> None:
        writer = self._writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Web node and processor share the file; wait for the other's lock
        # instead of failing at once. First, because switching to WAL locks too.
        writer.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA synchronous=FULL")
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this Squall's "
                    f"{SCHEMA_VERSION}; upgrade Squall"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(_MIGRATIONS[number]):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` on the writer; only where writes run (_in_writer)."""
        db = self._writer
        if db is None:
            raise RuntimeError("SQLiteStore used before open()")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        await self._in_writer(self._close_writer)
        if self._write_thread is not None:
            self._write_thread.shutdown(wait=False)

    async def save_messages(
        self, drafts: Sequence[Draft], *, notify_delay_ms: int | None = None,
        rules: ChangeRules = ChangeRules(),
    ) -> list[Draft]:
        if not drafts:
            return []
        for draft in drafts:
            _check_author(draft.nick, f"message {draft.room}/{draft.id}")
        return await self._in_writer(self._save_batch, list(drafts), notify_delay_ms, rules)

    def _save_batch(self, drafts: list[Draft], notify_delay_ms: int | None, rules: ChangeRules) -> list[Draft]:
        with self._transaction() as db:
            result = self._save_in_transaction(db, drafts, rules)
            if notify_delay_ms is not None:
                self._queue_notifications(db, result, notify_delay_ms)
        return result

    async def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._in_writer(self._write_rows, sql, rows)

    def _write_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._transaction() as db:
            db.executemany(sql, rows)

    def _save_in_transaction(
        self, db: sqlite3.Connection, drafts: Sequence[Draft], rules: ChangeRules = ChangeRules()
    ) -> list[Draft]:
        keys = [(d.room, nick_key(d.nick), d.id) for d in drafts]
        stored: dict[tuple[str, str, str], Draft] = {}
        # One query per batch finds earlier copies of these client ids.
        unique = list(set(keys))
        for row in db.execute(earlier_copies_sql(len(unique)), [part for key in unique for part in key]):
            earlier = _row_to_draft(row[:-1])
            stored[(earlier.room, row[-1], earlier.id)] = earlier

        rooms = list({d.room for d in drafts})
        last = dict.fromkeys(rooms, 0)
        for name, seq in db.execute(
            f"SELECT name, last_seq FROM rooms WHERE name IN ({','.join('?' * len(rooms))})",
            rooms,
        ):
            last[name] = seq

        result: list[Draft] = []
        rows: list[tuple[Any, ...]] = []
        for draft, key in zip(drafts, keys, strict=True):
            original = stored.get(key)
            if original is not None:
                result.append(dataclasses.replace(original, duplicate=True))
                continue
            if draft.is_change or draft.reply_to is not None:
                # Changes read what came before them, this batch's messages too.
                if rows:
                    db.executemany(_INSERT, rows)
                    rows.clear()
                draft = self._resolve(db, draft, rules)
                if draft.refusal is not None:
                    result.append(draft)
                    continue
            seq = last[draft.room] = last[draft.room] + 1
            saved = dataclasses.replace(draft, seq=seq)
            stored[key] = saved
            result.append(saved)
            rows.append(_message_row(saved, key[1]))
        if rows:
            db.executemany(_INSERT, rows)
        if any(d.seq is not None and not d.duplicate for d in result):
            db.executemany(
                "INSERT INTO rooms (name, last_seq) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq",
                list(last.items()),
            )
        return result

    def _target(self, db: sqlite3.Connection, room: str, seq: int | None) -> Draft | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq = ?", (room, seq)).fetchone()
        return _row_to_draft(row) if row else None

    def _resolve(self, db: sqlite3.Connection, draft: Draft, rules: ChangeRules) -> Draft:
        """A reply with its snippet, or a change applied to its target (the
        target row updated); either with ``refusal`` set, and nothing written."""
        if not draft.is_change:
            snippet, refusal = reply_snippet(draft, self._target(db, draft.room, draft.reply_to))
            return dataclasses.replace(draft, reply_snippet=snippet, refusal=refusal)
        applied = apply_change(self._target(db, draft.room, draft.target), draft, rules)
        if applied.refusal is not None or applied.state is None:
            return dataclasses.replace(draft, refusal=applied.refusal)
        state = applied.state
        db.execute(
            "UPDATE messages SET body = ?, html = ?, mentions = ?, links = ?, previews = ?, edited = ?,"
            " deleted = ?, reactions = ?, reply_snippet = ? WHERE room = ? AND seq = ?",
            (state.body, state.html, _json(list(state.mentions)), _json(list(state.links)),
             _json(list(state.previews)), state.edited, int(state.deleted),
             _json({emoji: list(nicks) for emoji, nicks in state.reactions}),
             _json(list(state.reply_snippet)) if state.reply_snippet else None, draft.room, draft.target),
        )
        if draft.kind == "delete":
            # Nothing of a deleted message survives: not the quotes of it in
            # replies, not the mail about it (or about its edits) not yet sent.
            db.execute(
                "UPDATE messages SET reply_snippet = NULL WHERE room = ? AND reply_to = ?",
                (draft.room, draft.target),
            )
            db.execute(
                "UPDATE notifications SET state = 'skipped' WHERE room = ? AND state = 'pending' AND"
                " (seq = ? OR seq IN (SELECT seq FROM messages WHERE room = ? AND target = ? AND kind = 'edit'))",
                (draft.room, draft.target, draft.room, draft.target),
            )
        return dataclasses.replace(draft, state=state, mentions=applied.added_mentions)

    def _queue_notifications(self, db: sqlite3.Connection, saved: Sequence[Draft], delay_ms: int) -> None:
        # In the message's own transaction: a stored mention always has its
        # pending notification, whatever happens to the processor next.
        rows = [
            (d.room, d.seq, d.nick, d.body, d.ts, d.ts + delay_ms, nick_key(mentioned), nick_key(d.nick))
            for d in saved if not d.duplicate and d.refusal is None
            for mentioned in d.mentions
        ]
        if rows:
            db.executemany(
                "INSERT OR IGNORE INTO notifications (nick_key, room, seq, sender, body, ts, due)"
                " SELECT nick_key, ?1, ?2, ?3, ?4, ?5, ?6 FROM users"
                " WHERE nick_key = ?7 AND nick_key != ?8 AND email IS NOT NULL"
                # A private room's mentions are mailed to its members only.
                " AND (NOT EXISTS (SELECT 1 FROM rooms WHERE name = ?1 AND private = 1)"
                " OR EXISTS (SELECT 1 FROM members m WHERE m.room = ?1 AND m.nick_key = ?7 AND m.banned = 0))",
                rows,
            )

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]:
        async with self.db.execute(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications n JOIN users u USING (nick_key)"
            " LEFT JOIN seen s ON s.nick_key = n.nick_key AND s.room = n.room"
            " WHERE n.state = 'pending' AND n.due <= ? AND n.claimed_until <= ? ORDER BY n.due LIMIT ?",
            (now_ms, now_ms, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [Notification(*row) for row in rows]

    async def next_notification_due(self) -> int | None:
        async with self.db.execute(
            "SELECT min(max(due, claimed_until)) FROM notifications WHERE state = 'pending'"
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    async def claim_notifications(self, key: str, *, now_ms: int, until_ms: int) -> list[Notification]:
        return await self._in_writer(self._claim_notifications, key, now_ms, until_ms)

    def _claim_notifications(self, key: str, now_ms: int, until_ms: int) -> list[Notification]:
        # The write lock (BEGIN IMMEDIATE) makes claims of one user one after another.
        with self._transaction() as db:
            ids = [row[0] for row in db.execute(
                "UPDATE notifications SET claimed_until = ?"
                " WHERE nick_key = ? AND state = 'pending' AND claimed_until <= ? RETURNING id",
                (until_ms, key, now_ms),
            )]
            if not ids:
                return []
            rows = db.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications n JOIN users u USING (nick_key)"
                " LEFT JOIN seen s ON s.nick_key = n.nick_key AND s.room = n.room"
                f" WHERE n.id IN ({','.join('?' * len(ids))}) ORDER BY n.ts, n.id",
                ids,
            ).fetchall()
        return [Notification(*row) for row in rows]

    async def finish_notifications(self, ids: Sequence[int], state: str) -> None:
        await self._write("UPDATE notifications SET state = ? WHERE id = ?", [(state, i) for i in ids])

    async def postpone_notifications(self, ids: Sequence[int], due_ms: int) -> None:
        await self._write(
            "UPDATE notifications SET due = ?, attempts = attempts + 1, claimed_until = 0 WHERE id = ?",
            [(due_ms, i) for i in ids],
        )

    async def mark_seen(self, marks: Sequence[tuple[str, str, int]]) -> None:
        await self._write(
            "INSERT INTO seen (nick_key, room, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (nick_key, room) DO UPDATE SET seq = max(seq, excluded.seq)",
            marks,
        )

    async def save_previews(self, room: str, seq: int, previews: Sequence[dict[str, Any]]) -> None:
        await self._write(
            "UPDATE messages SET previews = ? WHERE room = ? AND seq = ?",
            [(orjson.dumps(list(previews)).decode(), room, seq)],
        )

    # -- files -----------------------------------------------------------

    async def save_file(self, record: FileRecord) -> FileRecord:
        return await self._in_writer(self._save_file, record)

    def _save_file(self, record: FileRecord) -> FileRecord:
        with self._transaction() as db:
            row = db.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (owner_key, sha256) DO UPDATE SET name = excluded.name"
                f" RETURNING {_FILE_COLUMNS}",
                dataclasses.astuple(record),
            ).fetchone()
        return _row_to_file(row)

    async def files_of(self, owner: str, ids: Sequence[str]) -> list[FileRecord]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        async with self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_key = ? AND id IN ({marks})", [owner, *wanted]
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_file(row) for row in rows]

    async def upload_bytes(self, owner: str) -> int:
        async with self.db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_key = ?", (owner,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def file_access(self, sha256: str) -> tuple[list[str], list[str]]:
        async with self.db.execute("SELECT owner_key FROM files WHERE sha256 = ?", (sha256,)) as cursor:
            owners = [row[0] for row in await cursor.fetchall()]
        async with self.db.execute("SELECT room FROM file_rooms WHERE sha256 = ?", (sha256,)) as cursor:
            rooms = [row[0] for row in await cursor.fetchall()]
        return owners, rooms

    async def share_files(self, room: str, sha256s: Sequence[str]) -> None:
        await self._write(
            "INSERT INTO file_rooms (sha256, room) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(sha, room) for sha in dict.fromkeys(sha256s)],
        )

    async def set_email(self, key: str, email: str | None) -> None:
        await self._write("UPDATE users SET email = ? WHERE nick_key = ?", [(email, key)])

    async def get_user(self, key: str) -> User | None:
        async with self.db.execute(
            "SELECT nick, email, password_hash FROM users WHERE nick_key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        return User(nick=row[0], email=row[1], password_hash=row[2]) if row else None

    # -- accounts and sessions ------------------------------------------

    async def registered_lookalike(self, skeletons: Collection[str]) -> str | None:
        wanted = list(skeletons)
        if not wanted:
            return None
        async with self.db.execute(
            f"SELECT nick FROM users WHERE skeleton IN ({','.join('?' * len(wanted))})"
            " AND password_hash IS NOT NULL",
            wanted,
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def register(
        self, nick: str, *, password_hash: str, skeleton: str, lookalikes: Collection[str],
        session_id: str, now: int,
    ) -> Registration:
        return await self._in_writer(
            self._register, nick, password_hash, skeleton, list(lookalikes), session_id, now
        )

    def _register(
        self, nick: str, password_hash: str, skeleton: str, lookalikes: list[str], session_id: str, now: int
    ) -> Registration:
        key = nick_key(nick)
        wanted = [skeleton, *lookalikes]
        with self._transaction() as db:
            row = db.execute(
                "SELECT nick FROM users WHERE password_hash IS NOT NULL"
                f" AND (nick_key = ? OR skeleton IN ({','.join('?' * len(wanted))}))",
                (key, *wanted),
            ).fetchone()
            if row is not None:
                return Registration(taken_by=str(row[0]))
            # A guest row of this nick becomes the account; the guest's e-mail
            # address is not the registrant's.
            db.execute(
                "INSERT INTO users (nick_key, nick, email, password_hash, skeleton, created)"
                " VALUES (?, ?, NULL, ?, ?, ?) ON CONFLICT (nick_key) DO UPDATE SET"
                " nick = excluded.nick, email = NULL, password_hash = excluded.password_hash,"
                " skeleton = excluded.skeleton",
                (key, nick, password_hash, skeleton, now),
            )
            revoked = tuple(r[0] for r in db.execute(
                "UPDATE sessions SET revoked = ? WHERE nick_key = ? AND revoked IS NULL RETURNING id",
                (now, key),
            ))
            db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES (?, ?, ?)", (session_id, key, now)
            )
        return Registration(taken_by=None, revoked=revoked)

    async def open_guest_session(
        self, nick: str, session_id: str, *, now: int, takeover: bool
    ) -> GuestSession | None:
        return await self._in_writer(self._open_guest_session, nick, session_id, now, takeover)

    def _open_guest_session(self, nick: str, session_id: str, now: int, takeover: bool) -> GuestSession | None:
        key = nick_key(nick)
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO users (nick_key, nick, created) VALUES (?, ?, ?)"
                " ON CONFLICT (nick_key) DO UPDATE SET nick_key = excluded.nick_key"
                " RETURNING nick, password_hash",
                (key, nick, now),
            ).fetchone()
            if row[1] is not None:
                return None  # registered meanwhile; the upsert changed nothing
            revoked: list[str] = []
            if takeover:
                revoked = [r[0] for r in db.execute(
                    "UPDATE sessions SET revoked = ? WHERE nick_key = ? AND revoked IS NULL RETURNING id",
                    (now, key),
                )]
            db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES (?, ?, ?)", (session_id, key, now)
            )
        return GuestSession(nick=str(row[0]), revoked=tuple(revoked))

    async def open_session(self, key: str, session_id: str, *, now: int) -> None:
        await self._write(
            "INSERT INTO sessions (id, nick_key, created) VALUES (?, ?, ?)", [(session_id, key, now)]
        )

    async def session_active(self, session_id: str, key: str) -> bool:
        async with self.db.execute(
            "SELECT 1 FROM sessions WHERE id = ? AND nick_key = ? AND revoked IS NULL", (session_id, key)
        ) as cursor:
            return await cursor.fetchone() is not None

    async def revoke_session(self, session_id: str, *, now: int) -> None:
        await self._write(
            "UPDATE sessions SET revoked = ? WHERE id = ? AND revoked IS NULL", [(now, session_id)]
        )

    async def change_password(
        self, key: str, *, password_hash: str, session_id: str, now: int
    ) -> tuple[str, ...]:
        return await self._in_writer(self._change_password, key, password_hash, session_id, now)

    def _change_password(self, key: str, password_hash: str, session_id: str, now: int) -> tuple[str, ...]:
        with self._transaction() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE nick_key = ?", (password_hash, key))
            revoked = tuple(r[0] for r in db.execute(
                "UPDATE sessions SET revoked = ? WHERE nick_key = ? AND revoked IS NULL RETURNING id",
                (now, key),
            ))
            db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES (?, ?, ?)", (session_id, key, now)
            )
        return revoked

    async def update_password_hash(self, key: str, password_hash: str) -> None:
        await self._write(
            "UPDATE users SET password_hash = ? WHERE nick_key = ? AND password_hash IS NOT NULL",
            [(password_hash, key)],
        )

    async def forget_sessions(self, created_before: int) -> None:
        await self._write("DELETE FROM sessions WHERE created < ?", [(created_before,)])

    async def room_posters(self, room: str, limit: int) -> list[str]:
        async with self.db.execute(
            "SELECT DISTINCT u.nick FROM messages m JOIN users u ON u.nick_key = m.nick_key"
            " WHERE m.room = ? AND m.kind = 'message' LIMIT ?",
            (room, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [row[0] for row in rows]

    async def last_seq(self, room: str) -> int:
        async with self.db.execute("SELECT last_seq FROM rooms WHERE name=?", (room,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        async with self.db.execute(
            f"{_WITH_TARGET} WHERE m.room=? AND m.seq>? ORDER BY m.seq LIMIT ?",
            (room, since, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_draft(row) for row in rows]

    async def messages_before(self, room: str, before: int | None, limit: int) -> list[Draft]:
        bound = before if before is not None else 2**62
        async with self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE room=? AND seq<? AND kind='message'"
            " ORDER BY seq DESC LIMIT ?",
            (room, bound, limit),
        ) as cursor:
            rows = list(await cursor.fetchall())
        return [_row_to_draft(row) for row in reversed(rows)]

    # -- search (docs/store.md, "Search") ---------------------------------

    async def search(
        self, query: SearchQuery, *, room: str | None, pin: int | None, window: int
    ) -> SearchWindow:
        where: list[str] = ["r.room != ?"]
        filters: list[str | int] = [CANARY_ROOM]
        if room is not None:
            where.append("r.room = ?")
            filters.append(room)
        for term in query.body_checks:
            # C where it gives the same answer: a term without letters that
            # have case (Chinese, digits) is found as it is; an ASCII one by
            # LIKE, which folds ASCII. Else Python's case folding, per row.
            if term.casefold() == term == term.upper():
                where.append("instr(m.body, ?) > 0")
            elif term.isascii():
                where.append("m.body LIKE ? ESCAPE '\\'")
                term = f"%{like_escape(term)}%"
            else:
                where.append("squall_contains(m.body, ?)")
            filters.append(term)
        async with self.db.execute("SELECT max(id) FROM search_rows") as cursor:
            row = await cursor.fetchone()
        newest = int(row[0]) if row and row[0] is not None else 0
        pin = newest if pin is None else min(pin, newest)
        conditions = " AND ".join(where)
        lookups = query.lookups
        if lookups:
            # The index hands out matches newest first and stops at the
            # window; no bm25() here: its IDF counts every match of each term.
            sql = (
                "SELECT r.room, r.seq, m.body FROM message_search f JOIN search_rows r ON r.id = f.rowid"
                " JOIN messages m ON m.room = r.room AND m.seq = r.seq"
                f" WHERE message_search MATCH ? AND f.rowid <= ? AND {conditions}"
                " ORDER BY f.rowid DESC LIMIT ?"
            )
            args: list[str | int] = [fts_query(list(lookups.values())), pin, *filters, window]
        else:
            sql = (
                "SELECT r.room, r.seq, m.body FROM search_rows r"
                " JOIN messages m ON m.room = r.room AND m.seq = r.seq"
                f" WHERE r.id > ? AND r.id <= ? AND {conditions} ORDER BY r.id DESC LIMIT ?"
            )
            args = [pin - SHORT_QUERY_WINDOW, pin, *filters, window]
        async with self.db.execute(sql, args) as cursor:
            rows = await cursor.fetchall()
        share = {term: await self._share(piece, pin) for term, piece in lookups.items()} if rows else None
        return SearchWindow([Candidate(str(r), int(s), str(b)) for r, s, b in rows], pin=pin, share=share)

    async def _share(self, term: str, pin: int) -> float:
        """About what fraction of the messages up to ``pin`` hold ``term``: from
        how far back its newest SHARE_SAMPLE occurrences reach (the rows are
        numbered in order), so that a common term costs no more than a rare one."""
        async with self.db.execute(
            "SELECT count(*), min(rowid) FROM (SELECT rowid FROM message_search"
            " WHERE message_search MATCH ? AND rowid <= ? ORDER BY rowid DESC LIMIT ?)",
            (fts_query([term]), pin, SHARE_SAMPLE),
        ) as cursor:
            row = await cursor.fetchone()
        found, oldest = (int(row[0]), row[1]) if row else (0, None)
        if found < SHARE_SAMPLE or oldest is None:
            return found / max(pin, 1)
        return found / max(pin - int(oldest) + 1, 1)

    async def messages_at(self, keys: Sequence[tuple[str, int]]) -> list[Draft]:
        if not keys:
            return []
        marks = ",".join(["(?, ?)"] * len(keys))
        async with self.db.execute(
            f"SELECT {_EARLIER_COLUMNS} FROM (VALUES {marks}) AS k JOIN messages AS m"
            " ON m.room = k.column1 AND m.seq = k.column2",
            [part for key in keys for part in key],
        ) as cursor:
            rows = await cursor.fetchall()
        found = {(d.room, d.seq): d for d in map(_row_to_draft, rows)}
        return [found[key] for key in keys if key in found]

    async def save_user(self, nick: str) -> str:
        _check_author(nick, "user")
        return await self._in_writer(self._save_user, nick)

    def _save_user(self, nick: str) -> str:
        # A guest's `created` moves to its newest session: see forget_guests.
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO users (nick_key, nick, created) VALUES (?, ?, ?)"
                " ON CONFLICT (nick_key) DO UPDATE SET created = CASE"
                " WHEN users.password_hash IS NULL THEN excluded.created ELSE users.created END"
                " RETURNING nick",
                (nick_key(nick), nick, int(time.time())),
            ).fetchone()
        return str(row[0]) if row else nick

    async def forget_guests(self, last_session_before: int) -> int:
        return await self._in_writer(self._forget_guests, last_session_before)

    def _forget_guests(self, last_session_before: int) -> int:
        forgotten = 0
        while True:  # in slices, so the processor never waits long for the write lock
            with self._transaction() as db:
                keys = [row[0] for row in db.execute(
                    "SELECT nick_key FROM users WHERE password_hash IS NULL AND email IS NULL"
                    " AND created < ? LIMIT ?", (last_session_before, _FORGET_SLICE),
                )]
                db.executemany("DELETE FROM seen WHERE nick_key = ?", [(k,) for k in keys])
                db.executemany("DELETE FROM reads WHERE nick_key = ?", [(k,) for k in keys])
                # The next holder of a guest nick inherits nothing from the last one.
                db.executemany("DELETE FROM members WHERE nick_key = ?", [(k,) for k in keys])
                db.executemany("DELETE FROM users WHERE nick_key = ?", [(k,) for k in keys])
            forgotten += len(keys)
            if len(keys) < _FORGET_SLICE:
                return forgotten

    # -- rooms and memberships ------------------------------------------

    async def room_info(self, room: str) -> RoomInfo:
        async with self.db.execute(
            "SELECT private, owner, topic FROM rooms WHERE name = ?", (room,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return RoomInfo(room, exists=False)
        return RoomInfo(room, private=bool(row[0]), owner=row[1], topic=row[2])

    async def room_restrictions(self, room: str, *, now_ms: int, limit: int) -> list[tuple[str, int, bool]]:
        async with self.db.execute(
            "SELECT nick_key, muted_until, banned FROM members WHERE room = ? AND (banned = 1 OR muted_until > ?)"
            " LIMIT ?", (room, now_ms, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(key, int(muted), bool(banned)) for key, muted, banned in rows]

    async def membership(self, room: str, key: str) -> Membership:
        async with self.db.execute(
            "SELECT role, muted_until, banned FROM members WHERE room = ? AND nick_key = ?", (room, key)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return NO_MEMBERSHIP
        return Membership(Role(row[0]), muted_until=int(row[1]), banned=bool(row[2]))

    async def create_room(self, room: str, *, topic: str, private: bool, owner: str, now_ms: int) -> bool:
        return await self._in_writer(self._create_room, room, topic, private, owner, now_ms)

    def _create_room(self, room: str, topic: str, private: bool, owner: str, now_ms: int) -> bool:
        with self._transaction() as db:
            created = db.execute(
                "INSERT INTO rooms (name, last_seq, topic, owner, private, created) VALUES (?, 0, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING RETURNING name",
                (room, topic, owner, int(private), now_ms),
            ).fetchone()
            if created is None:
                return False
            db.execute(
                "INSERT INTO members (room, nick_key, role, since) VALUES (?, ?, 'owner', ?)"
                " ON CONFLICT (room, nick_key) DO UPDATE SET role = 'owner', banned = 0",
                (room, owner, now_ms),
            )
        return True

    async def create_dm(self, room: str, keys: Collection[str], *, now_ms: int) -> None:
        await self._in_writer(self._create_dm, room, sorted(keys), now_ms)

    def _create_dm(self, room: str, keys: list[str], now_ms: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rooms (name, last_seq, private, created) VALUES (?, 0, 1, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (room, now_ms),
            )
            db.executemany(
                "INSERT INTO members (room, nick_key, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(room, key, now_ms) for key in keys],
            )

    async def add_members(self, rows: Sequence[tuple[str, str]], *, now_ms: int) -> None:
        if rows:
            await self._in_writer(self._add_members, list(rows), now_ms)

    def _add_members(self, rows: list[tuple[str, str]], now_ms: int) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO rooms (name, last_seq, created) VALUES (?, 0, ?) ON CONFLICT DO NOTHING",
                [(room, now_ms) for room in {room for room, _ in rows}],
            )
            # Only into public rooms: a private room's members are chosen by its owner.
            db.executemany(
                "INSERT INTO members (room, nick_key, since) SELECT ?1, ?2, ?3"
                " WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE name = ?1 AND private = 1)"
                " ON CONFLICT DO NOTHING",
                [(room, key, now_ms) for room, key in rows],
            )

    async def set_member(self, room: str, key: str, role: str, *, now_ms: int) -> None:
        await self._write(
            "INSERT INTO members (room, nick_key, role, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room, nick_key) DO UPDATE SET role = excluded.role, banned = 0",
            [(room, key, role, now_ms)],
        )

    async def remove_member(self, room: str, key: str) -> bool:
        return await self._in_writer(self._remove_member, room, key)

    def _remove_member(self, room: str, key: str) -> bool:
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM members WHERE room = ? AND nick_key = ? RETURNING 1", (room, key)
            ).fetchone() is not None

    async def moderate_member(
        self, room: str, key: str, *, muted_until: int | None = None, banned: bool | None = None, now_ms: int
    ) -> None:
        mute = -1 if muted_until is None else muted_until
        ban = -1 if banned is None else int(banned)
        await self._write(
            "INSERT INTO members (room, nick_key, muted_until, banned, since)"
            " VALUES (?1, ?2, max(?3, 0), max(?4, 0), ?5)"
            " ON CONFLICT (room, nick_key) DO UPDATE SET"
            " muted_until = CASE WHEN ?3 < 0 THEN muted_until ELSE ?3 END,"
            " banned = CASE WHEN ?4 < 0 THEN banned ELSE ?4 END",
            [(room, key, mute, ban, now_ms)],
        )

    async def list_rooms(self, *, query: str, after: str | None, limit: int) -> list[RoomListing]:
        async with self.db.execute(
            "SELECT r.name, r.topic,"
            " (SELECT count(*) FROM members m WHERE m.room = r.name AND m.banned = 0),"
            " coalesce((SELECT ts FROM messages m WHERE m.room = r.name AND m.seq = r.last_seq), r.created)"
            " FROM rooms r WHERE r.private = 0 AND r.name > ? AND instr(r.name, ?) > 0"
            " AND substr(r.name, 1, 1) != '_' ORDER BY r.name LIMIT ?",
            (after or "", query, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [RoomListing(name, topic, False, int(members), int(last or 0)) for name, topic, members, last in rows]

    async def dm_rooms(self, key: str, limit: int) -> list[DirectMessages]:
        async with self.db.execute(
            "SELECT r.name,"
            " coalesce((SELECT ts FROM messages m WHERE m.room = r.name AND m.seq = r.last_seq), r.created) AS last,"
            " (SELECT group_concat(u.nick, char(10)) FROM members o JOIN users u ON u.nick_key = o.nick_key"
            "  WHERE o.room = r.name AND o.nick_key != ?1)"
            " FROM members me JOIN rooms r ON r.name = me.room"
            " WHERE me.nick_key = ?1 AND me.banned = 0 AND r.private = 1 AND r.name LIKE 'dm-%'"
            " ORDER BY last DESC LIMIT ?2",
            (key, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            DirectMessages(name, tuple(sorted((others or "").split("\n"), key=nick_key)) if others else (),
                           int(last or 0))
            for name, last, others in rows if is_dm(name)
        ]

    async def mark_read(self, key: str, room: str, seq: int) -> None:
        await self._in_writer(self._mark_read, key, room, seq)

    def _mark_read(self, key: str, room: str, seq: int) -> None:
        with self._transaction() as db:
            for table in ("reads", "seen"):
                db.execute(
                    f"INSERT INTO {table} (nick_key, room, seq) VALUES (?, ?, ?)"
                    f" ON CONFLICT (nick_key, room) DO UPDATE SET seq = max(seq, excluded.seq)",
                    (key, room, seq),
                )

    async def read_markers(self, key: str, limit: int) -> dict[str, int]:
        async with self.db.execute(
            "SELECT room, seq FROM reads WHERE nick_key = ? ORDER BY room LIMIT ?", (key, limit)
        ) as cursor:
            rows = await cursor.fetchall()
        return {room: int(seq) for room, seq in rows}

    async def room_members(self, room: str, limit: int) -> list[tuple[str, str, int, bool]]:
        async with self.db.execute(
            "SELECT coalesce(u.nick, m.nick_key), m.role, m.muted_until, m.banned FROM members m"
            " LEFT JOIN users u ON u.nick_key = m.nick_key WHERE m.room = ? ORDER BY m.nick_key LIMIT ?",
            (room, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(nick, role, int(muted), bool(banned)) for nick, role, muted, banned in rows]

    async def find_users(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(set(keys))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        async with self.db.execute(
            f"SELECT nick_key, nick FROM users WHERE nick_key IN ({marks})", wanted
        ) as cursor:
            rows = await cursor.fetchall()
        return {key: nick for key, nick in rows}
