"""The PostgreSQL store where it differs from one SQLite file: several real
``squall processor`` processes on one database, notifiers racing for the same
mentions, server processes terminated under the store's feet, and a whole
``squall run`` on PostgreSQL. Each test has a database of its own
(``postgres_url``); what every store does is in test_store.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from pg_support import ADMIN_URL, lock_waiters, query, terminate_backends, unavailable
from pipeline_support import Mail, smtp_server
from support import TIMEOUT, ChatClient, LineClient, SquallProcess, run_async, squall_server

from squall.message import Draft
from squall.store.postgres import SAVE_BATCH_SQL, PostgresStore

pytestmark = pytest.mark.postgres

SECRET = "a-secret-shared-by-every-test-process-here"
TS = 1_700_000_000_000
_refs = itertools.count(1)


def env(url: str, **extra: str) -> dict[str, str]:
    return {"SQUALL_DATABASE": url, "SQUALL_SECRET": SECRET, "SQUALL_DATABASE_POOL_SIZE": "4", **extra}


@contextmanager
def processors(tmp_path: Path, count: int, environment: dict[str, str]) -> Iterator[list[SquallProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(squall_server(tmp_path / f"processor-{n}", "processor", env=environment))
            for n in range(count)
        ]


class Link:
    """An authenticated processor link whose answers are matched to requests by ``ref``."""

    def __init__(self, client: LineClient) -> None:
        self.client = client
        self.waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, processor: SquallProcess) -> Link:
        client = await LineClient.connect(processor.processor_port)
        await client.authenticate(processor.link_key())
        return cls(client)

    async def _read(self) -> None:
        while True:
            answer = await self.client.recv(timeout=10 * TIMEOUT)
            future = self.waiting.pop(answer.get("ref"), None)
            if future is not None and not future.done():
                future.set_result(answer)

    async def process(self, room: str, nick: str, cid: str, body: str | None = None) -> dict[str, Any]:
        """Send one message; its answer (``processed`` or ``rejected``)."""
        ref = next(_refs)
        future = self.waiting[ref] = asyncio.get_running_loop().create_future()
        self.client.send({"op": "process", "ref": ref, "room": room, "nick": nick, "id": cid,
                          "body": body or f"message {cid}", "ts": TS})
        return await asyncio.wait_for(future, TIMEOUT)

    async def close(self) -> None:
        self.reader.cancel()
        await self.client.close()


async def stored(url: str, room: str) -> list[tuple[int, str, str]]:
    rows = await query(url, "SELECT seq, nick_key, cid FROM messages WHERE room = $1 ORDER BY seq", room)
    return [(row[0], row[1], row[2]) for row in rows]


def test_two_processors_number_one_room_without_gap_or_duplicate(postgres_url: str, tmp_path: Path) -> None:
    """Both commit to the same room at once, each many batches; and the same
    message sent through both at the same moment is stored once."""
    per_processor = 150

    async def scenario(links: list[Link]) -> list[dict[str, Any]]:
        sends = []
        for n in range(per_processor):
            for k, link in enumerate(links):
                sends.append(link.process("shared", f"user{k}", f"own-{n}"))
                sends.append(link.process("shared", "twin", f"both-{n}"))  # through each of them
        return list(await asyncio.gather(*sends))

    with processors(tmp_path, 2, env(postgres_url)) as (first, second):
        async def run() -> list[dict[str, Any]]:
            links = [await Link.open(first), await Link.open(second)]
            try:
                return await scenario(links)
            finally:
                for link in links:
                    await link.close()

        answers = run_async(run())

    assert Counter(a["op"] for a in answers) == {"processed": 4 * per_processor}, answers[:3]
    by_message: dict[tuple[str, str], set[int]] = {}
    for answer in answers:
        message = answer["message"]
        by_message.setdefault((message["nick"], message["id"]), set()).add(message["seq"])
    assert len(by_message) == 3 * per_processor
    assert all(len(seqs) == 1 for seqs in by_message.values()), "one message, two seqs"
    twins = [a for a in answers if a["message"]["nick"] == "twin"]
    assert sum(1 for a in twins if not a.get("duplicate")) == per_processor  # one copy stored, one found
    seqs = sorted(next(iter(seqs)) for seqs in by_message.values())
    assert seqs == list(range(1, 3 * per_processor + 1))
    rows = run_async(stored(postgres_url, "shared"))
    assert [row[0] for row in rows] == seqs
    assert len({(nick, cid) for _, nick, cid in rows}) == len(rows)
    [(last,)] = run_async(query(postgres_url, "SELECT last_seq FROM rooms WHERE name = 'shared'"))
    assert last == 3 * per_processor


def test_a_copy_stored_meanwhile_by_another_processor_is_found_not_stored_again(postgres_url: str) -> None:
    """Two stores (two processors) take the same message at the same moment:
    the room's counter row, locked by the test, holds both back until each has
    looked for earlier copies and found none. The one that goes second runs
    into the first one's copy, runs again and answers with it."""

    async def scenario() -> None:
        import asyncpg

        stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
        for store in stores:
            await store.open()
        holder = await asyncpg.connect(postgres_url)
        try:
            await stores[0].save_messages([Draft(room="x", nick="ann", id="before", body="1", ts=TS)])
            block = holder.transaction()
            await block.start()
            await holder.execute("SELECT FROM rooms WHERE name = 'x' FOR UPDATE")
            same = Draft(room="x", nick="Ann", id="same", body="2", ts=TS)
            saving = [asyncio.ensure_future(store.save_messages([same])) for store in stores]
            await lock_waiters(postgres_url, 2, timeout=TIMEOUT)
            await block.rollback()
            [one], [other] = [await task for task in saving]
            assert (one.seq, other.seq) == (2, 2)
            assert sorted([one.duplicate, other.duplicate]) == [False, True]
            [after] = await stores[1].save_messages([Draft(room="x", nick="ann", id="after", body="3", ts=TS)])
            assert after.seq == 3
        finally:
            await holder.close()
            for store in stores:
                await store.close()

    run_async(scenario())
    assert run_async(stored(postgres_url, "x")) == [(1, "ann", "before"), (2, "ann", "same"), (3, "ann", "after")]


MENTIONED = 12
MESSAGES = 36
MENTION_LINK = re.compile(r"#lobby/(\d+)")


def _mentions_mailed(mails: list[Mail]) -> list[tuple[str, int]]:
    return [(mail.rcpt[0], int(seq)) for mail in mails for seq in MENTION_LINK.findall(mail.text)]


def test_two_processors_notifiers_never_mail_one_mention_twice(postgres_url: str, tmp_path: Path) -> None:
    """Messages go through both processors, so both notifiers wake for the same
    due mentions at the same moment and race to claim them; a real SMTP server
    counts what each user receives."""

    async def make_users() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            await store.save_user("alice")
            for n in range(MENTIONED):
                await store.save_user(f"u{n}")
                await store.set_email(f"u{n}", f"u{n}@example.org")
        finally:
            await store.close()

    run_async(make_users())
    expected: set[tuple[str, int]] = set()
    with smtp_server() as (smtp, port):
        settings = env(postgres_url, SQUALL_SMTP=f"smtp://127.0.0.1:{port}", SQUALL_NOTIFY_DELAY="1.0",
                       SQUALL_MAIL_RETRY_MIN="0.2")
        with processors(tmp_path, 2, settings) as (first, second):

            async def send_all() -> None:
                links = [await Link.open(first), await Link.open(second)]
                try:
                    sends = []
                    for n in range(MESSAGES):
                        a, b = n % MENTIONED, (n * 5 + 1) % MENTIONED
                        body = f"@u{a} and @u{b}, see this" if a != b else f"@u{a}, see this"
                        sends.append(links[n % 2].process("lobby", "alice", f"m{n}", body))
                    for answer in await asyncio.gather(*sends):
                        assert answer["op"] == "processed", answer
                        for nick in answer["message"]["mentions"]:
                            expected.add((f"{nick}@example.org", answer["message"]["seq"]))
                finally:
                    for link in links:
                        await link.close()

            run_async(send_all())
            smtp.wait_until(lambda mails: len(_mentions_mailed(mails)) >= len(expected))
        # Both processors have stopped: a delivery either of them had begun has ended.
        mailed = _mentions_mailed(smtp.mails)
    duplicates = [item for item, count in Counter(mailed).items() if count > 1]
    assert not duplicates, f"mailed twice: {duplicates}"
    assert set(mailed) == expected
    assert len(expected) > MESSAGES  # most messages mention two users
    rows = run_async(query(postgres_url, "SELECT state, count(*) FROM notifications GROUP BY state"))
    assert [tuple(row) for row in rows] == [("sent", len(expected))]


def test_a_terminated_connection_fails_over_then_answers_unavailable_and_a_resend_stores_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """The processor's transaction is made to wait on a lock the test holds, so
    the server process is terminated in the middle of it, for certain: once
    (the store goes on, on a fresh connection) and twice (the sender gets
    ``unavailable``; the same id sent again is stored once)."""

    async def terminate_the_waiting_backend(excluded: set[int]) -> int:
        waiting = await lock_waiters(postgres_url, 1, excluded=excluded, timeout=TIMEOUT)
        assert await terminate_backends(postgres_url, pids=waiting) == len(waiting)
        return waiting[0]

    async def with_rooms_locked(link: Link, cid: str, kills: int) -> dict[str, Any]:
        import asyncpg

        holder = await asyncpg.connect(postgres_url)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("LOCK TABLE rooms IN EXCLUSIVE MODE")
            answer = asyncio.ensure_future(link.process("room", "ann", cid))
            killed: set[int] = set()
            for _ in range(kills):
                killed.add(await terminate_the_waiting_backend(killed))
            await transaction.rollback()
            return await answer
        finally:
            await holder.close()

    with processors(tmp_path, 1, env(postgres_url)) as [processor]:

        async def scenario() -> None:
            link = await Link.open(processor)
            try:
                assert (await link.process("room", "ann", "before"))["message"]["seq"] == 1
                once = await with_rooms_locked(link, "once", kills=1)
                assert once["op"] == "processed" and once["message"]["seq"] == 2, once
                twice = await with_rooms_locked(link, "twice", kills=2)
                assert twice["op"] == "rejected" and twice["code"] == "unavailable", twice
                again = await link.process("room", "ann", "twice")
                assert again["op"] == "processed" and again["message"]["seq"] == 3, again
                assert not again.get("duplicate")
                assert (await link.process("room", "ann", "after"))["message"]["seq"] == 4
            finally:
                await link.close()

        run_async(scenario())
        processor.wait_for_line("lost the database connection")
        processor.wait_for_line("the database is unavailable")
    rows = run_async(stored(postgres_url, "room"))
    assert rows == [(1, "ann", "before"), (2, "ann", "once"), (3, "ann", "twice"), (4, "ann", "after")]


def test_connections_terminated_mid_traffic_lose_nothing_and_duplicate_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    """Rounds of 40 messages in flight, the processor's server processes
    terminated while they are; whatever was answered ``unavailable`` is sent
    again with its id, until everything is stored."""
    total, window = 200, 40

    with processors(tmp_path, 1, env(postgres_url)) as [processor]:

        async def scenario() -> tuple[dict[str, int], Counter[str], int]:
            link = await Link.open(processor)
            seqs: dict[str, int] = {}
            codes: Counter[str] = Counter()
            killed = 0
            todo = [f"m{n}" for n in range(total)]
            try:
                for _ in range(50):  # rounds; each stores at least one message
                    if not todo:
                        break
                    batch, todo = todo[:window], todo[window:]
                    sending = asyncio.gather(*(link.process("busy", "ann", cid) for cid in batch))
                    await asyncio.sleep(0)  # let the requests go out, then pull the connections from under them
                    killed += await terminate_backends(postgres_url)
                    for cid, answer in zip(batch, await sending):
                        if answer["op"] == "processed":
                            codes["processed"] += 1
                            assert seqs.setdefault(cid, answer["message"]["seq"]) == answer["message"]["seq"]
                        else:
                            codes[answer["code"]] += 1
                            todo.append(cid)
                return seqs, codes, killed
            finally:
                await link.close()

        seqs, codes, killed = run_async(scenario())
    assert killed > 0
    assert set(codes) <= {"processed", "unavailable"}, codes
    assert sorted(seqs) == sorted(f"m{n}" for n in range(total))
    rows = run_async(stored(postgres_url, "busy"))
    assert [row[0] for row in rows] == list(range(1, total + 1))
    assert {cid: seq for seq, _, cid in rows} == seqs


def test_squall_run_on_postgresql_sends_resumes_and_keeps_history_across_data_folders(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = env(postgres_url)

    with squall_server(tmp_path / "first", env=settings) as server:
        alice, bob = server.session("alice"), server.session("bob")

        async def chat() -> None:
            sender = await ChatClient.connect(server.address, alice)
            reader = await ChatClient.connect(server.address, bob)
            try:
                await sender.join("lobby")
                await reader.join("lobby")
                for n in range(1, 4):
                    await sender.send_json({"type": "send", "room": "lobby", "id": f"a{n}", "body": f"hi {n}"})
                    assert (await sender.recv_type("ack"))["seq"] == n
                got = [(await reader.recv_type("message"))["seq"] for _ in range(3)]
                assert got == [1, 2, 3]
                await reader.close()
                # Every server process of both Squall processes ends; the pools reconnect.
                assert await terminate_backends(postgres_url) > 0
                for n in range(4, 6):
                    await sender.send_json({"type": "send", "room": "lobby", "id": f"a{n}", "body": f"hi {n}"})
                    assert (await sender.recv_type("ack"))["seq"] == n
                back = await ChatClient.connect(server.address, bob)
                try:
                    await back.join("lobby", since=3)
                    resumed = [await back.recv_type("message") for _ in range(2)]
                    assert [(m["seq"], m["body"]) for m in resumed] == [(4, "hi 4"), (5, "hi 5")]
                finally:
                    await back.close()
            finally:
                await sender.close()

        run_async(chat())

    assert not (tmp_path / "first" / "squall.db").exists()  # nothing went to SQLite
    with squall_server(tmp_path / "second", env=settings) as server:
        history = server.history("lobby", server.session("carol"))
        assert [(m["seq"], m["nick"], m["body"]) for m in history] == [
            (n, "alice", f"hi {n}") for n in range(1, 6)
        ]


def test_storing_keeps_using_the_index_after_the_history_has_grown(postgres_url: str) -> None:
    """The store's connection prepares its statement while the room is empty;
    20,000 messages later, a batch still looks for earlier copies through the
    unique index rather than reading every stored message. (PostgreSQL would
    keep a plan made for the empty table: SERVER_SETTINGS.)"""

    async def scenario() -> tuple[str, str]:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            for n in range(10):  # enough calls for PostgreSQL to settle on a plan
                await store.save_messages([Draft(room="r1", nick="n1", id=f"early{n}", body="x", ts=TS)])
            for start in range(0, 20_000, 500):
                await store.save_messages([
                    Draft(room=f"r{n % 4}", nick=f"n{n % 50}", id=f"c{n}", body="x", ts=TS)
                    for n in range(start, start + 500)
                ])
            async with store.pool.acquire() as db:
                mode = await db.fetchval("SHOW plan_cache_mode")
                name = await db.fetchval(
                    "SELECT name FROM pg_prepared_statements WHERE statement = $1", SAVE_BATCH_SQL
                )
                assert name is not None, "the store's connection has not prepared its statement"
                async with db.transaction():
                    rows = await db.fetch(
                        f"EXPLAIN ANALYZE EXECUTE {name}(ARRAY['r1'], ARRAY['n1'], ARRAY['n1'], ARRAY['new'],"
                        " ARRAY['x'], ARRAY['x'], ARRAY['[]'], ARRAY['[]'], ARRAY[1], ARRAY[]::bigint[],"
                        " ARRAY[]::text[], 0, ARRAY['[]'])"
                    )
                    raise _RollBack("\n".join(row[0] for row in rows))
        except _RollBack as plan:
            return mode, str(plan)
        finally:
            await store.close()

    mode, plan = run_async(scenario())
    assert "messages_by_client_id" in plan, plan
    assert "Seq Scan on messages" not in plan, plan
    assert mode == "force_custom_plan"


def test_both_stores_have_the_same_schema_at_the_same_version(postgres_url: str, tmp_path: Path) -> None:
    import sqlite3

    from squall.store import postgres, sqlite

    async def open_both() -> None:
        for store in (sqlite.SQLiteStore(str(tmp_path / "squall.db")), PostgresStore(postgres_url)):
            await store.open()
            await store.close()

    run_async(open_both())
    with sqlite3.connect(tmp_path / "squall.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        on_sqlite = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in tables if not table.startswith(("sqlite_", *sqlite.SEARCH_INDEX_TABLES))
        }
    rows = run_async(query(
        postgres_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name <> 'schema_version'",
    ))
    on_postgres: dict[str, set[str]] = {}
    for table, column in rows:
        on_postgres.setdefault(table, set()).add(column)
    assert on_postgres == on_sqlite
    # The search index is tables on SQLite (FTS5 and its shadow tables), an index on PostgreSQL.
    assert set(sqlite.SEARCH_INDEX_TABLES) <= set(tables)
    assert postgres.SCHEMA_VERSION == sqlite.SCHEMA_VERSION


class _RollBack(Exception):
    """Leaves a transaction that must change nothing, carrying what it found."""


def test_the_bench_scenario_measures_both_stores(tmp_path: Path) -> None:
    """``python -m bench --scenario processor-postgres`` runs and counts right
    (in a database of its own, not this test's); no figure is judged here: a
    shared machine's figures mean nothing."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "bench", "--scenario", "processor-postgres", "--targets", "ceiling,squall",
            "--duration", "1", "--quick", "--no-pin", "--output", str(tmp_path)]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=8 * TIMEOUT,
                          env={**os.environ, "SQUALL_BENCH_POSTGRES": ADMIN_URL})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "latest.json").read_text())["results"]["processor-postgres"]
    assert "skipped" in results["ceiling"]
    squall = results["squall"]
    assert squall["ok"] and squall["database"] == "postgresql", squall
    assert squall["processed"] == squall["messages"] > 0, squall
    assert squall["msgs_per_s"] > 0 and squall["sqlite_msgs_per_s"] > 0 and "sqlite_p99_ms" in squall, squall
