"""The PostgreSQL store, for several processors and web nodes sharing one database.

Theory of operation. Every operation takes a connection from an asyncpg pool
(``database_pool_size`` per process), runs in one transaction at READ
COMMITTED, and gives the connection back. Writes come in batches from the
processor (group commit), as with SQLite: one transaction stores everything
that arrived while the previous one ran.

*Seq allocation.* Each room has a counter row, ``rooms.last_seq``. A batch is
one statement (:data:`SAVE_BATCH_SQL`), so one transaction and one round
trip. It looks for earlier copies of its client ids; adds the number of its
new messages to the counter rows of its rooms — an upsert that creates a
missing row, taking the rows' locks in room-name order so that two batches
never wait on each other in a circle — and numbers the new messages from the
old value up; and inserts them. A second processor committing to the same room
waits at the counter row until the first has committed, then adds to the
value the first one left (READ COMMITTED: an update that waited for a row
works on its newest version), so seqs have no duplicate; and since the
counter moves only in the statement that inserts the messages, a rollback
takes both back, so they have no gap. What the waiting statement cannot see is
a copy of one of its own messages that the first one stored meanwhile (its
snapshot is older): its insert runs into the unique index on ``(room,
nick_key, cid)``, the statement fails whole, and it is run again, finding the
copy this time. Not a PostgreSQL sequence: sequences are not transactional (a
rollback leaves a gap) and would be one per room. Not ``max(seq) + 1`` under
the primary key: two processors would read the same max and one would fail
and retry, over and over under load. Not an advisory lock: the counter row is
a lock already, taken by the statement that moves it, and it needs no hash of
the room name. The cost: commits to *one* room are one at a time, each holding
the row's lock until it has committed; group commit makes each of them carry
many messages. docs/store.md tells the same at more length.

*The mention-mail queue.* A notifier claims one user's pending notifications at
a time: it locks the user's row with ``FOR UPDATE SKIP LOCKED`` (another
notifier claiming the same user skips it rather than waiting, and does not take
half of the user's mentions into a second e-mail), then sets ``claimed_until``
on every pending notification of the user nobody else holds. See
:class:`~squall.store.Store` for the claim's life.

*Failures.* A connection that breaks (PostgreSQL restarted, the backend
terminated, the network gone) fails the operation on it; the operation is run
once more on a fresh connection, if it broke before the commit was asked for
(the server rolled it back) or if the operation is idempotent — storing
messages is: a batch whose commit went through though its answer was lost
finds its own messages the second time and reports them as already stored. If
that fails too, or an operation runs past ``database_timeout``, the caller gets
:class:`~squall.errors.StoreUnavailable` (``unavailable`` to a client, who may
retry with the same id). Deadlocks and serialization failures, which
PostgreSQL resolves by aborting one transaction, are retried a few times.

*Schema.* Migrations are numbered as SQLite's are (a version means the same
tables and columns in both) and kept in ``schema_version``. Every process
migrates at start-up under an advisory lock, so the first one does it and the
others find it done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
import orjson

from ..errors import ConfigError, StoreUnavailable
from ..changes import apply_change, reply_snippet
from ..files import FileRecord
from ..message import MESSAGE, ChangeRules, Draft, reactions_from_json
from ..protocol import CANARY_ROOM, nick_key
from ..rooms import NO_MEMBERSHIP, Membership, Role, RoomInfo, is_dm
from ..search import SHORT_QUERY_WINDOW, Candidate, SearchQuery
from . import (
    DirectMessages, GuestSession, Notification, Registration, RoomListing, SearchWindow, User, like_escape,
    redacted_url,
)

__all__ = ["PostgresStore", "SCHEMA_VERSION", "SAVE_BATCH_SQL"]

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _DB: TypeAlias = PoolConnectionProxy[asyncpg.Record]  # one operation's connection

log = logging.getLogger("squall.store")

# The same numbered steps as SQLite's _MIGRATIONS, in PostgreSQL's dialect.
_MIGRATIONS: list[str] = [
    # 1: rooms, messages, users.
    """
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL
    );
    CREATE TABLE messages (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        nick TEXT NOT NULL,
        nick_key TEXT NOT NULL,
        cid TEXT NOT NULL,
        body TEXT NOT NULL,
        html TEXT NOT NULL,
        mentions TEXT NOT NULL,
        links TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (room, seq)
    );
    CREATE UNIQUE INDEX messages_by_client_id ON messages (room, nick_key, cid);
    CREATE TABLE users (
        nick_key TEXT PRIMARY KEY,
        nick TEXT NOT NULL,
        email TEXT,
        password_hash TEXT,
        created BIGINT NOT NULL
    );
    """,
    # 2: link previews, read markers, pending e-mail notifications.
    """
    ALTER TABLE messages ADD COLUMN previews TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE seen (
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (nick_key, room)
    );
    CREATE TABLE notifications (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        ts BIGINT NOT NULL,
        due BIGINT NOT NULL,
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
        created BIGINT NOT NULL,
        revoked BIGINT
    );
    CREATE INDEX sessions_by_user ON sessions (nick_key);
    CREATE INDEX sessions_by_age ON sessions (created);
    """,
    # 4: a notifier claims a user's notifications before mailing them (ms; 0: free).
    """
    ALTER TABLE notifications ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
    """,
    # 5: full-text search (docs/store.md, "Search"): a trigram index of the
    # bodies, which `ILIKE '%term%'` uses for terms of three characters or
    # more in any script; PostgreSQL keeps it in step with every write and
    # builds it over the existing messages here. By time, for the newest
    # matches and the pin of a search's pages. The canary room is left out.
    """
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX messages_search ON messages USING gin (body gin_trgm_ops) WHERE room <> '_canary';
    CREATE INDEX messages_by_ts ON messages (ts);
    """,
    # 6: uploads: as SQLite's (files, file_rooms, messages.attachments).
    """
    ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        ext TEXT NOT NULL,
        size BIGINT NOT NULL,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        thumb TEXT,
        created BIGINT NOT NULL,
        UNIQUE (owner_key, sha256)
    );
    CREATE INDEX files_by_sha256 ON files (sha256);
    CREATE TABLE file_rooms (
        sha256 TEXT NOT NULL,
        room TEXT NOT NULL,
        PRIMARY KEY (sha256, room)
    );
    """,
    # 7: message events (squall/changes.py): edits, deletes and reactions are rows
    # of their own (kind, target, emoji) in the room's seq order; the target row
    # holds the message's current state (edited, deleted, reactions). Replies
    # carry the seq they answer and a snippet of it (JSON [nick, body] or NULL).
    """
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
    ALTER TABLE messages ADD COLUMN target BIGINT;
    ALTER TABLE messages ADD COLUMN emoji TEXT;
    ALTER TABLE messages ADD COLUMN reply_to BIGINT;
    ALTER TABLE messages ADD COLUMN reply_snippet TEXT;
    ALTER TABLE messages ADD COLUMN edited BIGINT;
    ALTER TABLE messages ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE messages ADD COLUMN reactions TEXT NOT NULL DEFAULT '{}';
    CREATE INDEX messages_by_target ON messages (room, target) WHERE target IS NOT NULL;
    CREATE INDEX messages_by_reply ON messages (room, reply_to) WHERE reply_to IS NOT NULL;
    """,
    # 8: rooms: topic, owner, private, created (ms); memberships with roles, mutes, bans.
    """
    ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN owner TEXT;
    ALTER TABLE rooms ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE rooms ADD COLUMN created BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE members (
        room TEXT NOT NULL,
        nick_key TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'member',
        muted_until BIGINT NOT NULL DEFAULT 0,
        banned BOOLEAN NOT NULL DEFAULT FALSE,
        since BIGINT NOT NULL,
        PRIMARY KEY (room, nick_key)
    );
    CREATE INDEX members_by_user ON members (nick_key);
    -- The directory pages public rooms by name in byte order (GET /api/rooms).
    CREATE INDEX rooms_public_by_name ON rooms (name COLLATE "C") WHERE NOT private;
    CREATE TABLE reads (
        nick_key TEXT NOT NULL,
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (nick_key, room)
    );
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

# Advisory lock keys (any 64-bit number no other program uses): one migration
# at a time; one registration at a time (it checks lookalike nicks among all
# registered users, which no row lock covers).
_MIGRATION_LOCK = int.from_bytes(b"squall/m", "big")
_REGISTRATION_LOCK = int.from_bytes(b"squall/r", "big")

# A connection that broke, or a server that is going away or not there yet:
# the operation may succeed on a fresh connection. (So may any error on a
# connection that is closed afterwards; but not asyncpg's InterfaceError in
# general, which also means a bug such as a wrong argument.)
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08; also "closed in the middle of operation"
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, crash, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,  # refused, reset
)
# PostgreSQL aborted one transaction to let another go on (deadlock,
# serialization failure), or another processor stored a copy of a message
# since the statement began: run it again.
CONFLICT_RETRIES = 5


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):
        return True
    return isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == _CLIENT_ID_INDEX

_T = TypeVar("_T")

_COLUMNS = (
    "room, seq, nick, cid, body, html, mentions, links, ts, previews,"
    " kind, target, emoji, reply_to, reply_snippet, edited, deleted, reactions, attachments"
)
_NUM_COLUMNS = len(_COLUMNS.split(","))
_M_COLUMNS = ", ".join(f"m.{name.strip()}" for name in _COLUMNS.split(","))
_T_COLUMNS = ", ".join(f"t.{name.strip()}" for name in _COLUMNS.split(","))
# A row and, for a change, its target's current state (history reads, resumes).
_WITH_TARGET = (
    f"SELECT {_M_COLUMNS}, {_T_COLUMNS} FROM messages AS m"
    " LEFT JOIN messages AS t ON t.room = m.room AND t.seq = m.target"
)
_FILE_COLUMNS = "id, owner_key, sha256, ext, size, type, name, created, width, height, thumb"
_NOTIFICATION_COLUMNS = (
    "n.id, n.nick_key, u.nick, u.email, n.room, n.seq, n.sender, n.body, n.ts, n.due, n.attempts, s.seq"
)

# A batch in one statement, so in one transaction and one round trip: the
# module's "Seq allocation". $1–$9: the batch's distinct messages, one array
# per column ($13: attachments, added later); $10, $11: (position in the batch, 1-based; mentioned nick_key)
# pairs for the notifications to queue; $12: their delay in ms. Answers one
# row per message: its position, then room and seq; room is NULL for a message
# stored now, and set, with the other columns, for one stored before.
SAVE_BATCH_SQL = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::bigint[], $13::text[]) WITH ORDINALITY
        AS b(room, nick, nick_key, cid, body, html, mentions, links, ts, attachments, n)
), earlier AS (
    SELECT b.n, m.room, m.seq, m.nick, m.cid, m.body, m.html, m.mentions, m.links, m.ts, m.previews,
           m.attachments
    FROM batch b JOIN messages m ON m.room = b.room AND m.nick_key = b.nick_key AND m.cid = b.cid
), fresh AS (
    SELECT b.*, row_number() OVER (PARTITION BY b.room ORDER BY b.n) AS k,
           count(*) OVER (PARTITION BY b.room) AS total
    FROM batch b WHERE NOT EXISTS (SELECT FROM earlier e WHERE e.n = b.n)
), counters AS (
    -- Locks each room's counter row in name order (creating it), then moves it on.
    INSERT INTO rooms AS r (name, last_seq)
    SELECT room, count(*) FROM fresh GROUP BY room ORDER BY room
    ON CONFLICT (name) DO UPDATE SET last_seq = r.last_seq + excluded.last_seq
    RETURNING name, last_seq
), numbered AS (
    SELECT f.*, c.last_seq - f.total + f.k AS seq FROM fresh f JOIN counters c ON c.name = f.room
), stored AS (
    INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts, attachments)
    SELECT room, seq, nick, nick_key, cid, body, html, mentions, links, ts, attachments FROM numbered
), queued AS (
    INSERT INTO notifications (nick_key, room, seq, sender, body, ts, due)
    SELECT u.nick_key, x.room, x.seq, x.nick, x.body, x.ts, x.ts + $12::bigint
    FROM unnest($10::bigint[], $11::text[]) AS mention(n, nick_key)
    JOIN numbered x ON x.n = mention.n
    JOIN users u ON u.nick_key = mention.nick_key
    WHERE u.nick_key <> x.nick_key AND u.email IS NOT NULL
      -- A private room's mentions are mailed to its members only.
      AND (NOT EXISTS (SELECT FROM rooms pr WHERE pr.name = x.room AND pr.private)
           OR EXISTS (SELECT FROM members pm WHERE pm.room = x.room AND pm.nick_key = u.nick_key
                      AND NOT pm.banned))
    ON CONFLICT (nick_key, room, seq) DO NOTHING
)
SELECT n, NULL::text AS room, seq, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
       NULL::text, NULL::bigint, NULL::text, NULL::text
FROM numbered
UNION ALL
SELECT n, room, seq, nick, cid, body, html, mentions, links, ts, previews, attachments FROM earlier
"""
# The unique index a copy stored meanwhile by another processor runs into.
_CLIENT_ID_INDEX = "messages_by_client_id"

# Every connection's settings. asyncpg prepares each statement once per
# connection; PostgreSQL would soon plan it once for any arguments (a "generic"
# plan) and keep that plan until the table is next analysed. A plan made while
# `messages` was empty scans the whole table from then on: 50 ms a batch at
# 40,000 messages, measured. Planned for each call, with the arguments and the
# tables' sizes of the moment, a batch costs a fraction of a millisecond more.
SERVER_SETTINGS = {"application_name": "squall", "plan_cache_mode": "force_custom_plan"}

# Guest rows deleted per transaction by forget_guests.
_FORGET_SLICE = 1000


def _check_author(nick: str, what: str) -> None:
    """The store's own last line behind authentication: nothing is stored without an author."""
    if not nick.strip():
        raise ValueError(f"{what} has no nick ({nick!r}); the store keeps nothing without an author")


def _row_to_draft(row: Any) -> Draft:
    """A row of :data:`_COLUMNS`; or of its first 10 and attachments (a batch's
    earlier copy); followed (for a change read with :data:`_WITH_TARGET`) by its target's."""
    room, seq, nick, cid, body, html, mentions, links, ts, previews = (row[i] for i in range(10))
    attachments = row[10] if len(row) == 11 else row[_NUM_COLUMNS - 1] if len(row) >= _NUM_COLUMNS else "[]"
    draft = Draft(
        room=room, seq=seq, nick=nick, id=cid, body=body, html=html,
        mentions=tuple(orjson.loads(mentions)), links=tuple(orjson.loads(links)), ts=ts,
        previews=tuple(orjson.loads(previews)), attachments=tuple(orjson.loads(attachments)),
    )
    if len(row) < _NUM_COLUMNS:
        return draft
    kind, target, emoji, reply_to, snippet, edited, deleted, reactions = (
        row[i] for i in range(10, _NUM_COLUMNS - 1)
    )
    state = None
    if kind != MESSAGE and len(row) >= 2 * _NUM_COLUMNS and row[_NUM_COLUMNS + 1] is not None:
        state = _row_to_draft(tuple(row[i] for i in range(_NUM_COLUMNS, 2 * _NUM_COLUMNS)))
    return dataclasses.replace(
        draft, kind=kind, target=target, emoji=emoji, reply_to=reply_to,
        reply_snippet=tuple(orjson.loads(snippet)) if snippet else None,
        edited=edited, deleted=bool(deleted), reactions=reactions_from_json(orjson.loads(reactions)),
        state=state,
    )


def _row_to_file(row: Any) -> FileRecord:
    return FileRecord(*(row[i] for i in range(11)))


async def _keep_session(db: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, after rolling back any
    open transaction: nothing. asyncpg's default (``RESET ALL``, ``UNLISTEN *``,
    …) is one more round trip per operation, and Squall changes no session
    state: its advisory locks end with their transactions."""


def _is_closed(db: _DB) -> bool:
    try:
        return db.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back when it closed
        return True


def _json(values: Iterable[Any]) -> str:
    return orjson.dumps(list(values)).decode()


class PostgresStore:
    """The :class:`~squall.store.Store` on PostgreSQL, through an asyncpg pool.

    :param url: ``postgresql://user[:password]@host[:port]/database`` (libpq's
        URL form, query parameters included).
    :param pool_size: most connections this process holds at once; default 10.
    :param timeout: seconds for a connection to be had from the pool (or
        made), and for each statement; default 10. Past it the operation fails
        with :class:`~squall.errors.StoreUnavailable`.
    """

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 10.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore used before open()")
        return self._pool

    async def open(self) -> None:
        """Connect and migrate; a database that cannot be reached or used is a :class:`ConfigError`."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout,
                command_timeout=self.timeout, server_settings=SERVER_SETTINGS, reset=_keep_session,
            )
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"database = {redacted_url(self.url)!r}: cannot connect: {type(exc).__name__}: {exc}"
            ) from None
        try:
            await self._run("migrating the schema", self._migrate, idempotent=True)
        except StoreUnavailable:
            await self.close()
            raise ConfigError(f"database = {redacted_url(self.url)!r}: lost while migrating its schema") from None
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, db: _DB) -> None:
        await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = await db.fetchval("SELECT max(version) FROM schema_version") or 0
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"database = {redacted_url(self.url)!r} has schema version {version}, newer than"
                f" this Squall's {SCHEMA_VERSION}; upgrade Squall"
            )
        for number in range(version, SCHEMA_VERSION):
            await db.execute(_MIGRATIONS[number])
        if version < SCHEMA_VERSION:
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
            log.info("database schema migrated from version %d to %d", version, SCHEMA_VERSION)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except Exception:  # a pool that cannot close cleanly is cut
                pool.terminate()

    async def _run(
        self,
        what: str,
        work: Callable[[_DB], Awaitable[_T]],
        *,
        idempotent: bool = False,
        transaction: bool = True,
    ) -> _T:
        """``work(connection)`` in one transaction (or, for one statement, none);
        once more on a fresh connection if the first broke before the commit,
        or at any point for ``idempotent`` work. See the module's "Failures"."""
        conflicts = losses = 0
        while True:
            # A single statement commits as it runs: if it breaks, it may have.
            committing = not transaction
            closed = False
            try:
                async with self.pool.acquire(timeout=self.timeout) as db:
                    try:
                        if not transaction:
                            return await work(db)
                        block = db.transaction()
                        await block.start()
                        try:
                            result = await work(db)
                        except BaseException:
                            if not _is_closed(db):
                                await block.rollback()
                            raise
                        committing = True
                        await block.commit()
                        return result
                    except Exception:
                        closed = _is_closed(db)
                        raise
            except asyncio.TimeoutError as exc:
                log.error("%s: the database did not answer within %g s", what, self.timeout)
                raise StoreUnavailable() from exc
            except Exception as exc:
                if _is_conflict(exc):
                    conflicts += 1
                    if conflicts > CONFLICT_RETRIES:
                        log.error("%s: still conflicting after %d tries (%s)", what, conflicts, exc)
                        raise StoreUnavailable() from exc
                    log.info("%s: %s; trying again", what, type(exc).__name__)
                    continue
                if not (closed or isinstance(exc, _CONNECTION_LOST)):
                    raise
                losses += 1
                if losses > 1 or (committing and not idempotent):
                    log.error("%s failed, the database is unavailable: %s: %s", what, type(exc).__name__, exc)
                    raise StoreUnavailable() from exc
                log.warning("%s: lost the database connection (%s: %s); trying a fresh one",
                            what, type(exc).__name__, exc)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement's rows; run again on a fresh connection if the first broke."""
        async def work(db: _DB) -> list[asyncpg.Record]:
            return list(await db.fetch(sql, *args))

        return await self._run(what, work, idempotent=True, transaction=False)

    async def _execute(self, what: str, sql: str, *args: Any, idempotent: bool = True) -> None:
        """One statement, which commits as it runs."""
        async def work(db: _DB) -> None:
            await db.execute(sql, *args)

        await self._run(what, work, idempotent=idempotent, transaction=False)

    # -- messages ---------------------------------------------------------

    async def save_messages(
        self, drafts: Sequence[Draft], *, notify_delay_ms: int | None = None,
        rules: ChangeRules = ChangeRules(),
    ) -> list[Draft]:
        if not drafts:
            return []
        for draft in drafts:
            _check_author(draft.nick, f"message {draft.room}/{draft.id}")
        batch = list(drafts)
        if any(d.is_change or d.reply_to is not None for d in batch):
            async def one_by_one(db: _DB) -> list[Draft]:
                return await self._save_with_changes(db, batch, notify_delay_ms, rules)

            return await self._run(f"storing {len(batch)} messages and changes", one_by_one, idempotent=True)

        async def work(db: _DB) -> list[Draft]:
            return await self._save_batch(db, batch, notify_delay_ms)

        # Idempotent: a retry after a commit whose answer was lost finds the
        # batch stored and answers with it (marked duplicate).
        return await self._run(f"storing {len(batch)} messages", work, idempotent=True, transaction=False)

    @staticmethod
    async def _save_batch(db: _DB, drafts: Sequence[Draft], notify_delay_ms: int | None) -> list[Draft]:
        keys = [(d.room, nick_key(d.nick), d.id) for d in drafts]
        position: dict[tuple[str, str, str], int] = {}  # a key's first draft among the distinct ones
        distinct: list[Draft] = []
        for draft, key in zip(drafts, keys, strict=True):
            if key not in position:
                position[key] = len(distinct)
                distinct.append(draft)
        mentioned: tuple[list[int], list[str]] = ([], [])
        if notify_delay_ms is not None:
            for n, draft in enumerate(distinct, 1):
                for nick in draft.mentions:
                    mentioned[0].append(n)
                    mentioned[1].append(nick_key(nick))
        rows = await db.fetch(
            SAVE_BATCH_SQL,
            [d.room for d in distinct], [d.nick for d in distinct], [k[1] for k in position],
            [d.id for d in distinct], [d.body for d in distinct], [d.html for d in distinct],
            [_json(d.mentions) for d in distinct], [_json(d.links) for d in distinct],
            [d.ts for d in distinct], *mentioned, notify_delay_ms or 0,
            [_json(d.attachments) for d in distinct],
        )
        saved: list[Draft] = list(distinct)
        for row in rows:
            n = row[0] - 1
            if row[1] is None:  # stored now
                saved[n] = dataclasses.replace(distinct[n], seq=row[2])
            else:
                saved[n] = dataclasses.replace(_row_to_draft(tuple(row)[1:]), duplicate=True)
        result: list[Draft] = []
        answered: set[tuple[str, str, str]] = set()
        for key in keys:  # a key's second draft in one batch is a duplicate of its first
            draft = saved[position[key]]
            result.append(draft if key not in answered else dataclasses.replace(draft, duplicate=True))
            answered.add(key)
        return result

    @staticmethod
    async def _save_with_changes(
        db: _DB, drafts: Sequence[Draft], notify_delay_ms: int | None, rules: ChangeRules
    ) -> list[Draft]:
        """A batch holding changes or replies, one draft at a time in one
        transaction (a change reads what came before it). Each room's counter
        row is locked before its target is read, so changes to one message
        take turns, and a refused change takes no seq."""
        result: list[Draft] = []
        stored: dict[tuple[str, str, str], Draft] = {}
        for draft in drafts:
            key = (draft.room, nick_key(draft.nick), draft.id)
            earlier = stored.get(key)
            if earlier is None:
                row = await db.fetchrow(
                    f"{_WITH_TARGET} WHERE m.room = $1 AND m.nick_key = $2 AND m.cid = $3", *key
                )
                earlier = _row_to_draft(tuple(row)) if row is not None else None
            if earlier is not None:
                result.append(dataclasses.replace(earlier, duplicate=True))
                continue
            # Locks the room's counter (creating it): changes to one room take turns.
            last = await db.fetchval(
                "INSERT INTO rooms AS r (name, last_seq) VALUES ($1, 0)"
                " ON CONFLICT (name) DO UPDATE SET last_seq = r.last_seq RETURNING last_seq", draft.room,
            )
            if draft.is_change or draft.reply_to is not None:
                wanted = draft.target if draft.is_change else draft.reply_to
                row = await db.fetchrow(
                    f"SELECT {_COLUMNS} FROM messages WHERE room = $1 AND seq = $2", draft.room, wanted
                )
                target = _row_to_draft(tuple(row)) if row is not None else None
                if draft.is_change:
                    applied = apply_change(target, draft, rules)
                    if applied.refusal is not None or applied.state is None:
                        result.append(dataclasses.replace(draft, refusal=applied.refusal))
                        continue
                    draft = dataclasses.replace(draft, state=applied.state, mentions=applied.added_mentions)
                else:
                    snippet, refusal = reply_snippet(draft, target)
                    if refusal is not None:
                        result.append(dataclasses.replace(draft, refusal=refusal))
                        continue
                    draft = dataclasses.replace(draft, reply_snippet=snippet)
            seq = (last or 0) + 1
            await db.execute(
                "INSERT INTO rooms (name, last_seq) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq", draft.room, seq,
            )
            saved = dataclasses.replace(draft, seq=seq)
            await db.execute(
                "INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts,"
                " kind, target, emoji, reply_to, reply_snippet, attachments)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                saved.room, seq, saved.nick, key[1], saved.id,
                "" if saved.is_change else saved.body, "" if saved.is_change else saved.html,
                _json(saved.mentions), _json(() if saved.is_change else saved.links), saved.ts,
                saved.kind, saved.target, saved.emoji, saved.reply_to,
                _json(saved.reply_snippet) if saved.reply_snippet else None,
                _json(() if saved.is_change else saved.attachments),
            )
            if saved.state is not None:
                await PostgresStore._write_state(db, saved)
            if notify_delay_ms is not None and saved.mentions:
                await db.execute(
                    "INSERT INTO notifications (nick_key, room, seq, sender, body, ts, due)"
                    " SELECT nick_key, $1, $2, $3, $4, $5, $6 FROM users"
                    " WHERE nick_key = ANY($7::text[]) AND nick_key <> $8 AND email IS NOT NULL"
                    " ON CONFLICT (nick_key, room, seq) DO NOTHING",
                    saved.room, seq, saved.nick, saved.body, saved.ts, saved.ts + notify_delay_ms,
                    [nick_key(n) for n in saved.mentions], key[1],
                )
            stored[key] = saved
            result.append(saved)
        return result

    @staticmethod
    async def _write_state(db: _DB, change: Draft) -> None:
        """The target row takes the state ``change`` left it in (see SQLite's ``_resolve``)."""
        state = change.state
        assert state is not None
        await db.execute(
            "UPDATE messages SET body = $1, html = $2, mentions = $3, links = $4, previews = $5, edited = $6,"
            " deleted = $7, reactions = $8, reply_snippet = $9 WHERE room = $10 AND seq = $11",
            state.body, state.html, _json(state.mentions), _json(state.links), _json(state.previews),
            state.edited, state.deleted, orjson.dumps({e: list(n) for e, n in state.reactions}).decode(),
            _json(state.reply_snippet) if state.reply_snippet else None, change.room, change.target,
        )
        if change.kind == "delete":
            await db.execute(
                "UPDATE messages SET reply_snippet = NULL WHERE room = $1 AND reply_to = $2",
                change.room, change.target,
            )
            await db.execute(
                "UPDATE notifications SET state = 'skipped' WHERE room = $1 AND state = 'pending' AND"
                " (seq = $2 OR seq IN (SELECT seq FROM messages WHERE room = $1 AND target = $2 AND kind = 'edit'))",
                change.room, change.target,
            )

    async def last_seq(self, room: str) -> int:
        rows = await self._fetch("reading a room's last seq", "SELECT last_seq FROM rooms WHERE name = $1", room)
        return int(rows[0][0]) if rows else 0

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        rows = await self._fetch(
            "reading history",
            f"{_WITH_TARGET} WHERE m.room = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
            room, since, limit,
        )
        return [_row_to_draft(row) for row in rows]

    async def messages_before(self, room: str, before: int | None, limit: int) -> list[Draft]:
        bound = before if before is not None else 2**62
        rows = await self._fetch(
            "reading history",
            f"SELECT {_COLUMNS} FROM messages WHERE room = $1 AND seq < $2 AND kind = 'message'"
            " ORDER BY seq DESC LIMIT $3",
            room, bound, limit,
        )
        return [_row_to_draft(row) for row in reversed(rows)]

    # -- search (docs/store.md, "Search") ---------------------------------

    async def search(
        self, query: SearchQuery, *, room: str | None, pin: int | None, window: int
    ) -> SearchWindow:
        # The pin is a time (ms): a message stored later with an older time
        # (another processor's clock) may show up on a later page.
        args: list[Any] = [CANARY_ROOM, room]
        where = ["room <> $1", "($2::text IS NULL OR room = $2)"]
        for term in query.terms:
            args.append(f"%{like_escape(term)}%")
            where.append(f"body ILIKE ${len(args)}")
        if not query.indexed_terms:
            where.append(
                "ts >= coalesce((SELECT ts FROM messages ORDER BY ts DESC OFFSET"
                f" {SHORT_QUERY_WINDOW} LIMIT 1), 0)"
            )

        async def work(db: _DB) -> SearchWindow:
            newest = await db.fetchval("SELECT max(ts) FROM messages") or 0
            bound = newest if pin is None else min(pin, newest)
            rows = await db.fetch(
                f"SELECT room, seq, body FROM messages WHERE {' AND '.join(where)} AND ts <= ${len(args) + 1}"
                f" ORDER BY ts DESC, room, seq DESC LIMIT ${len(args) + 2}",
                *args, bound, window,
            )
            return SearchWindow([Candidate(r[0], int(r[1]), r[2]) for r in rows], pin=int(bound))

        return await self._run("searching messages", work, idempotent=True)

    async def messages_at(self, keys: Sequence[tuple[str, int]]) -> list[Draft]:
        if not keys:
            return []
        rows = await self._fetch(
            "reading messages",
            f"SELECT {_M_COLUMNS} FROM unnest($1::text[], $2::bigint[]) AS k(room, seq)"
            " JOIN messages m ON m.room = k.room AND m.seq = k.seq",
            [k[0] for k in keys], [k[1] for k in keys],
        )
        found = {(d.room, d.seq): d for d in map(_row_to_draft, rows)}
        return [found[key] for key in keys if key in found]

    async def save_previews(self, room: str, seq: int, previews: Sequence[dict[str, Any]]) -> None:
        await self._execute(
            "storing previews", "UPDATE messages SET previews = $1 WHERE room = $2 AND seq = $3",
            _json(previews), room, seq,
        )

    async def room_posters(self, room: str, limit: int) -> list[str]:
        rows = await self._fetch(
            "reading a room's posters",
            "SELECT u.nick FROM users u WHERE u.nick_key IN"
            " (SELECT DISTINCT m.nick_key FROM messages m WHERE m.room = $1 AND m.kind = 'message') LIMIT $2",
            room, limit,
        )
        return [row[0] for row in rows]

    # -- read markers and the mention-mail queue ------------------------------

    async def mark_seen(self, marks: Sequence[tuple[str, str, int]]) -> None:
        highest: dict[tuple[str, str], int] = {}
        for key, room, seq in marks:
            highest[(key, room)] = max(seq, highest.get((key, room), seq))
        if not highest:
            return
        ordered = sorted(highest.items())  # one lock order for every writer
        await self._execute(
            "storing read markers",
            "INSERT INTO seen (nick_key, room, seq) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
            " ON CONFLICT (nick_key, room) DO UPDATE SET seq = GREATEST(seen.seq, excluded.seq)",
            [k for (k, _), _ in ordered], [r for (_, r), _ in ordered], [s for _, s in ordered],
        )

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]:
        rows = await self._fetch(
            "reading due notifications",
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications n JOIN users u USING (nick_key)"
            " LEFT JOIN seen s ON s.nick_key = n.nick_key AND s.room = n.room"
            " WHERE n.state = 'pending' AND n.due <= $1 AND n.claimed_until <= $1 ORDER BY n.due LIMIT $2",
            now_ms, limit,
        )
        return [Notification(*row) for row in rows]

    async def next_notification_due(self) -> int | None:
        rows = await self._fetch(
            "reading the next notification's time",
            "SELECT min(GREATEST(due, claimed_until)) FROM notifications WHERE state = 'pending'",
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def claim_notifications(self, key: str, *, now_ms: int, until_ms: int) -> list[Notification]:
        async def work(db: _DB) -> list[Notification]:
            # The user's row is the claim's lock: SKIP LOCKED, so a notifier
            # claiming the same user at the same moment gets nothing and moves on.
            if await db.fetchval("SELECT 1 FROM users WHERE nick_key = $1 FOR UPDATE SKIP LOCKED", key) is None:
                return []
            rows = await db.fetch(
                "WITH claimed AS (UPDATE notifications SET claimed_until = $3"
                " WHERE nick_key = $1 AND state = 'pending' AND claimed_until <= $2"
                " RETURNING id, nick_key, room, seq, sender, body, ts, due, attempts)"
                " SELECT n.id, n.nick_key, u.nick, u.email, n.room, n.seq, n.sender, n.body, n.ts,"
                " n.due, n.attempts, s.seq FROM claimed n JOIN users u USING (nick_key)"
                " LEFT JOIN seen s ON s.nick_key = n.nick_key AND s.room = n.room ORDER BY n.ts, n.id",
                key, now_ms, until_ms,
            )
            return [Notification(*row) for row in rows]

        return await self._run("claiming notifications", work)

    async def finish_notifications(self, ids: Sequence[int], state: str) -> None:
        await self._execute(
            "finishing notifications", "UPDATE notifications SET state = $1 WHERE id = ANY($2::bigint[])",
            state, sorted(ids),
        )

    async def postpone_notifications(self, ids: Sequence[int], due_ms: int) -> None:
        await self._execute(
            "postponing notifications",
            "UPDATE notifications SET due = $1, attempts = attempts + 1, claimed_until = 0"
            " WHERE id = ANY($2::bigint[])",
            due_ms, sorted(ids), idempotent=False,
        )

    # -- users, accounts and sessions --------------------------------------------

    async def save_user(self, nick: str) -> str:
        _check_author(nick, "user")
        # A guest's `created` moves to its newest session: see forget_guests.
        rows = await self._fetch(
            "storing a user",
            "INSERT INTO users (nick_key, nick, created) VALUES ($1, $2, $3)"
            " ON CONFLICT (nick_key) DO UPDATE SET created = CASE"
            " WHEN users.password_hash IS NULL THEN excluded.created ELSE users.created END"
            " RETURNING nick",
            nick_key(nick), nick, int(time.time()),
        )
        return str(rows[0][0]) if rows else nick

    async def forget_guests(self, last_session_before: int) -> int:
        async def one_slice(db: _DB) -> int:
            keys = [row[0] for row in await db.fetch(
                "DELETE FROM users WHERE nick_key IN (SELECT nick_key FROM users"
                " WHERE password_hash IS NULL AND email IS NULL AND created < $1 LIMIT $2"
                " FOR UPDATE SKIP LOCKED) AND password_hash IS NULL AND email IS NULL AND created < $1"
                " RETURNING nick_key",
                last_session_before, _FORGET_SLICE,
            )]
            if keys:
                await db.execute("DELETE FROM seen WHERE nick_key = ANY($1::text[])", keys)
                await db.execute("DELETE FROM reads WHERE nick_key = ANY($1::text[])", keys)
                # The next holder of a guest nick inherits nothing from the last one.
                await db.execute("DELETE FROM members WHERE nick_key = ANY($1::text[])", keys)
            return len(keys)

        forgotten = 0
        while True:  # in slices, so that no transaction holds many rows for long
            deleted = await self._run("forgetting guests", one_slice, idempotent=True)
            forgotten += deleted
            if deleted < _FORGET_SLICE:
                return forgotten

    # -- rooms and memberships ------------------------------------------

    async def room_info(self, room: str) -> RoomInfo:
        rows = await self._fetch(
            "reading a room", "SELECT private, owner, topic FROM rooms WHERE name = $1", room
        )
        if not rows:
            return RoomInfo(room, exists=False)
        return RoomInfo(room, private=bool(rows[0][0]), owner=rows[0][1], topic=rows[0][2])

    async def room_restrictions(self, room: str, *, now_ms: int, limit: int) -> list[tuple[str, int, bool]]:
        rows = await self._fetch(
            "reading a room's bans and mutes",
            "SELECT nick_key, muted_until, banned FROM members WHERE room = $1 AND (banned OR muted_until > $2)"
            " LIMIT $3", room, now_ms, limit,
        )
        return [(r[0], int(r[1]), bool(r[2])) for r in rows]

    async def membership(self, room: str, key: str) -> Membership:
        rows = await self._fetch(
            "reading a membership",
            "SELECT role, muted_until, banned FROM members WHERE room = $1 AND nick_key = $2", room, key,
        )
        if not rows:
            return NO_MEMBERSHIP
        return Membership(Role(rows[0][0]), muted_until=int(rows[0][1]), banned=bool(rows[0][2]))

    async def create_room(self, room: str, *, topic: str, private: bool, owner: str, now_ms: int) -> bool:
        async def work(db: _DB) -> bool:
            created = await db.fetchval(
                "INSERT INTO rooms (name, last_seq, topic, owner, private, created) VALUES ($1, 0, $2, $3, $4, $5)"
                " ON CONFLICT (name) DO NOTHING RETURNING name",
                room, topic, owner, private, now_ms,
            )
            if created is None:
                return False
            await db.execute(
                "INSERT INTO members (room, nick_key, role, since) VALUES ($1, $2, 'owner', $3)"
                " ON CONFLICT (room, nick_key) DO UPDATE SET role = 'owner', banned = FALSE",
                room, owner, now_ms,
            )
            return True

        return await self._run("creating a room", work)

    async def create_dm(self, room: str, keys: Collection[str], *, now_ms: int) -> None:
        async def work(db: _DB) -> None:
            await db.execute(
                "INSERT INTO rooms (name, last_seq, private, created) VALUES ($1, 0, TRUE, $2)"
                " ON CONFLICT (name) DO NOTHING",
                room, now_ms,
            )
            await db.execute(
                "INSERT INTO members (room, nick_key, since) SELECT $1, k, $3 FROM unnest($2::text[]) AS k"
                " ON CONFLICT DO NOTHING",
                room, sorted(keys), now_ms,
            )

        await self._run("creating a direct-message room", work, idempotent=True)

    async def add_members(self, rows: Sequence[tuple[str, str]], *, now_ms: int) -> None:
        if not rows:
            return
        ordered = sorted(set(rows))  # one lock order for every writer
        rooms = sorted({room for room, _ in ordered})

        async def work(db: _DB) -> None:
            await db.execute(
                "INSERT INTO rooms (name, last_seq, created) SELECT r, 0, $2 FROM unnest($1::text[]) AS r"
                " ON CONFLICT DO NOTHING",
                rooms, now_ms,
            )
            # Only into public rooms: a private room's members are chosen by its owner.
            await db.execute(
                "INSERT INTO members (room, nick_key, since)"
                " SELECT x.room, x.key, $3 FROM unnest($1::text[], $2::text[]) AS x(room, key)"
                " JOIN rooms r ON r.name = x.room AND NOT r.private ON CONFLICT DO NOTHING",
                [room for room, _ in ordered], [key for _, key in ordered], now_ms,
            )

        await self._run("adding room members", work, idempotent=True)

    async def set_member(self, room: str, key: str, role: str, *, now_ms: int) -> None:
        await self._execute(
            "storing a membership",
            "INSERT INTO members (room, nick_key, role, since) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room, nick_key) DO UPDATE SET role = excluded.role, banned = FALSE",
            room, key, role, now_ms,
        )

    async def remove_member(self, room: str, key: str) -> bool:
        rows = await self._fetch(
            "removing a member", "DELETE FROM members WHERE room = $1 AND nick_key = $2 RETURNING 1", room, key
        )
        return bool(rows)

    async def moderate_member(
        self, room: str, key: str, *, muted_until: int | None = None, banned: bool | None = None, now_ms: int
    ) -> None:
        await self._execute(
            "moderating a member",
            "INSERT INTO members (room, nick_key, muted_until, banned, since)"
            " VALUES ($1, $2, coalesce($3::bigint, 0), coalesce($4::boolean, FALSE), $5)"
            " ON CONFLICT (room, nick_key) DO UPDATE SET"
            " muted_until = coalesce($3::bigint, members.muted_until),"
            " banned = coalesce($4::boolean, members.banned)",
            room, key, muted_until, banned, now_ms,
        )

    async def list_rooms(self, *, query: str, after: str | None, limit: int) -> list[RoomListing]:
        rows = await self._fetch(
            "listing rooms",
            "SELECT r.name, r.topic,"
            " (SELECT count(*) FROM members m WHERE m.room = r.name AND NOT m.banned),"
            " coalesce((SELECT ts FROM messages m WHERE m.room = r.name AND m.seq = r.last_seq), r.created)"
            " FROM rooms r WHERE NOT r.private AND r.name COLLATE \"C\" > $1 AND strpos(r.name, $2) > 0"
            " AND left(r.name, 1) <> '_' ORDER BY r.name COLLATE \"C\" LIMIT $3",
            after or "", query, limit,
        )
        return [RoomListing(r[0], r[1], False, int(r[2]), int(r[3] or 0)) for r in rows]

    async def dm_rooms(self, key: str, limit: int) -> list[DirectMessages]:
        rows = await self._fetch(
            "listing direct messages",
            "SELECT r.name,"
            " coalesce((SELECT ts FROM messages m WHERE m.room = r.name AND m.seq = r.last_seq), r.created) AS last,"
            " (SELECT array_agg(u.nick) FROM members o JOIN users u ON u.nick_key = o.nick_key"
            "  WHERE o.room = r.name AND o.nick_key <> $1)"
            " FROM members me JOIN rooms r ON r.name = me.room"
            " WHERE me.nick_key = $1 AND NOT me.banned AND r.private AND r.name LIKE 'dm-%'"
            " ORDER BY last DESC LIMIT $2",
            key, limit,
        )
        return [
            DirectMessages(r[0], tuple(sorted(r[2] or (), key=nick_key)), int(r[1] or 0))
            for r in rows if is_dm(r[0])
        ]

    async def mark_read(self, key: str, room: str, seq: int) -> None:
        async def work(db: _DB) -> None:
            for table in ("reads", "seen"):
                await db.execute(
                    f"INSERT INTO {table} (nick_key, room, seq) VALUES ($1, $2, $3)"
                    f" ON CONFLICT (nick_key, room) DO UPDATE SET seq = GREATEST({table}.seq, excluded.seq)",
                    key, room, seq,
                )

        await self._run("storing a read position", work, idempotent=True)

    async def read_markers(self, key: str, limit: int) -> dict[str, int]:
        rows = await self._fetch(
            "reading read positions",
            "SELECT room, seq FROM reads WHERE nick_key = $1 ORDER BY room COLLATE \"C\" LIMIT $2", key, limit,
        )
        return {row[0]: int(row[1]) for row in rows}

    async def room_members(self, room: str, limit: int) -> list[tuple[str, str, int, bool]]:
        rows = await self._fetch(
            "listing room members",
            "SELECT coalesce(u.nick, m.nick_key), m.role, m.muted_until, m.banned FROM members m"
            " LEFT JOIN users u ON u.nick_key = m.nick_key WHERE m.room = $1"
            " ORDER BY m.nick_key COLLATE \"C\" LIMIT $2",
            room, limit,
        )
        return [(r[0], r[1], int(r[2]), bool(r[3])) for r in rows]

    async def find_users(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(set(keys))
        if not wanted:
            return {}
        rows = await self._fetch(
            "reading users", "SELECT nick_key, nick FROM users WHERE nick_key = ANY($1::text[])", wanted
        )
        return {key: nick for key, nick in rows}

    # -- files -------------------------------------------------------------

    async def save_file(self, record: FileRecord) -> FileRecord:
        rows = await self._fetch(
            "storing a file",
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (owner_key, sha256) DO UPDATE SET name = excluded.name"
            f" RETURNING {_FILE_COLUMNS}",
            *dataclasses.astuple(record),
        )
        return _row_to_file(rows[0])

    async def files_of(self, owner: str, ids: Sequence[str]) -> list[FileRecord]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        rows = await self._fetch(
            "reading files",
            f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_key = $1 AND id = ANY($2::text[])", owner, wanted,
        )
        return [_row_to_file(row) for row in rows]

    async def upload_bytes(self, owner: str) -> int:
        rows = await self._fetch(
            "reading a quota", "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_key = $1", owner
        )
        return int(rows[0][0])

    async def file_access(self, sha256: str) -> tuple[list[str], list[str]]:
        owners = await self._fetch("reading a file's owners", "SELECT owner_key FROM files WHERE sha256 = $1", sha256)
        rooms = await self._fetch("reading a file's rooms", "SELECT room FROM file_rooms WHERE sha256 = $1", sha256)
        return [row[0] for row in owners], [row[0] for row in rooms]

    async def share_files(self, room: str, sha256s: Sequence[str]) -> None:
        await self._execute(
            "sharing files",
            "INSERT INTO file_rooms (sha256, room) SELECT s, $2 FROM unnest($1::text[]) AS s"
            " ON CONFLICT DO NOTHING",
            list(dict.fromkeys(sha256s)), room,
        )

    async def get_user(self, key: str) -> User | None:
        rows = await self._fetch(
            "reading a user", "SELECT nick, email, password_hash FROM users WHERE nick_key = $1", key
        )
        return User(nick=rows[0][0], email=rows[0][1], password_hash=rows[0][2]) if rows else None

    async def set_email(self, key: str, email: str | None) -> None:
        await self._execute("storing an e-mail address", "UPDATE users SET email = $1 WHERE nick_key = $2", email, key)

    async def registered_lookalike(self, skeletons: Collection[str]) -> str | None:
        wanted = list(skeletons)
        if not wanted:
            return None
        rows = await self._fetch(
            "reading lookalike nicks",
            "SELECT nick FROM users WHERE skeleton = ANY($1::text[]) AND password_hash IS NOT NULL LIMIT 1",
            wanted,
        )
        return str(rows[0][0]) if rows else None

    async def register(
        self, nick: str, *, password_hash: str, skeleton: str, lookalikes: Collection[str],
        session_id: str, now: int,
    ) -> Registration:
        key = nick_key(nick)
        wanted = [skeleton, *lookalikes]

        async def work(db: _DB) -> Registration:
            # One registration at a time, as SQLite's write lock gives: the
            # lookalike check reads rows a concurrent registration may add.
            await db.execute("SELECT pg_advisory_xact_lock($1)", _REGISTRATION_LOCK)
            taken = await db.fetchval(
                "SELECT nick FROM users WHERE password_hash IS NOT NULL"
                " AND (nick_key = $1 OR skeleton = ANY($2::text[])) LIMIT 1",
                key, wanted,
            )
            if taken is not None:
                return Registration(taken_by=str(taken))
            # A guest row of this nick becomes the account; the guest's e-mail
            # address is not the registrant's.
            await db.execute(
                "INSERT INTO users (nick_key, nick, email, password_hash, skeleton, created)"
                " VALUES ($1, $2, NULL, $3, $4, $5) ON CONFLICT (nick_key) DO UPDATE SET"
                " nick = excluded.nick, email = NULL, password_hash = excluded.password_hash,"
                " skeleton = excluded.skeleton",
                key, nick, password_hash, skeleton, now,
            )
            revoked = await self._revoke_all(db, key, now)
            await db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES ($1, $2, $3)", session_id, key, now
            )
            return Registration(taken_by=None, revoked=revoked)

        return await self._run("registering an account", work)

    @staticmethod
    async def _revoke_all(db: _DB, key: str, now: int) -> tuple[str, ...]:
        return tuple(row[0] for row in await db.fetch(
            "UPDATE sessions SET revoked = $1 WHERE nick_key = $2 AND revoked IS NULL RETURNING id", now, key
        ))

    async def open_guest_session(
        self, nick: str, session_id: str, *, now: int, takeover: bool
    ) -> GuestSession | None:
        key = nick_key(nick)

        async def work(db: _DB) -> GuestSession | None:
            # The upsert locks the user's row: a registration or another
            # takeover of this nick waits for this transaction, or it for them.
            row = await db.fetchrow(
                "INSERT INTO users (nick_key, nick, created) VALUES ($1, $2, $3)"
                " ON CONFLICT (nick_key) DO UPDATE SET nick_key = excluded.nick_key"
                " RETURNING nick, password_hash",
                key, nick, now,
            )
            assert row is not None
            if row[1] is not None:
                return None  # registered meanwhile; the upsert changed nothing
            revoked = await self._revoke_all(db, key, now) if takeover else ()
            await db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES ($1, $2, $3)", session_id, key, now
            )
            return GuestSession(nick=str(row[0]), revoked=revoked)

        return await self._run("opening a guest session", work)

    async def open_session(self, key: str, session_id: str, *, now: int) -> None:
        await self._execute(
            "opening a session", "INSERT INTO sessions (id, nick_key, created) VALUES ($1, $2, $3)",
            session_id, key, now, idempotent=False,
        )

    async def session_active(self, session_id: str, key: str) -> bool:
        rows = await self._fetch(
            "reading a session",
            "SELECT 1 FROM sessions WHERE id = $1 AND nick_key = $2 AND revoked IS NULL", session_id, key,
        )
        return bool(rows)

    async def revoke_session(self, session_id: str, *, now: int) -> None:
        await self._execute(
            "revoking a session", "UPDATE sessions SET revoked = $1 WHERE id = $2 AND revoked IS NULL",
            now, session_id,
        )

    async def change_password(
        self, key: str, *, password_hash: str, session_id: str, now: int
    ) -> tuple[str, ...]:
        async def work(db: _DB) -> tuple[str, ...]:
            await db.execute("UPDATE users SET password_hash = $1 WHERE nick_key = $2", password_hash, key)
            revoked = await self._revoke_all(db, key, now)
            await db.execute(
                "INSERT INTO sessions (id, nick_key, created) VALUES ($1, $2, $3)", session_id, key, now
            )
            return revoked

        return await self._run("changing a password", work)

    async def update_password_hash(self, key: str, password_hash: str) -> None:
        await self._execute(
            "storing a password re-hash",
            "UPDATE users SET password_hash = $1 WHERE nick_key = $2 AND password_hash IS NOT NULL",
            password_hash, key,
        )

    async def forget_sessions(self, created_before: int) -> None:
        await self._execute("deleting expired sessions", "DELETE FROM sessions WHERE created < $1", created_before)
