"""``search-1m``: full-text search over a million stored messages (SQLite).

The database is filled straight through sqlite3 (``executemany`` into
``messages``, in the schema ``squall`` itself creates, so the search index's
triggers index each row as the processor's inserts would), then a ``squall
run`` serves it and one client asks ``GET /api/search`` for a fixed set of
realistic queries, one request at a time, several rounds; the figure is the
p95 of those round trips (HTTP included), the goal p95 < 100 ms.

The text: chat-like English from a vocabulary with a long tail (a few words in
a third of the messages, most in very few), one message in ten in Chinese
without spaces, in 50 rooms of unequal size, over a year. The queries mix a
rare word, common words, a two-word query, a phrase, Chinese of three and of
two characters (the short path), and searches in one room.

Filling a million takes a few minutes, so the file is kept in
``bench/results/`` (``search-<count>-v<N>.db``, not committed; or in ``SQUALL_BENCH_SEARCH_CACHE``) and copied for
each run: the server writes its sessions into the copy, never into the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .loadgen import HTTPClient
from .report import Goal
from .scenarios import Options, Scenario, _percentiles
from .targets import SquallTarget, Target

__all__ = ["SCENARIOS", "GOALS", "register", "build_database", "QUERIES"]

# Where the filled databases are kept: SQUALL_BENCH_SEARCH_CACHE, else bench/results/.
CACHE_DIR = Path(os.environ.get("SQUALL_BENCH_SEARCH_CACHE") or Path(__file__).resolve().parent / "results")
GENERATOR_VERSION = 1  # bump when the text changes: the cached file's name carries it
ROOMS = 50
USERS = 300
BATCH = 20_000  # rows per transaction while filling
ROUNDS = 10  # times each query is asked (after one warm-up round)
GOAL_P95_MS = 100.0

_COMMON = (
    "the a to and is it of in that for on you this we i be with have not are but just so can do was "
    "what if at all there about it's get like no up out my one now think know don't go time need yes "
    "ok okay thanks sure yeah good will would could should maybe today tomorrow later soon"
).split()
_TOPICS = (
    "deploy release build test tests failing server database backup migration index query cache "
    "latency timeout error errors logs metrics dashboard alert pager incident outage rollback "
    "branch merge review commit ticket bug fix patch config kubernetes docker cluster node redis "
    "postgres sqlite nginx certificate dns network firewall meeting standup lunch coffee holiday "
    "weekend vacation design mockup frontend backend api endpoint websocket browser mobile "
    "customer invoice budget roadmap sprint planning retro demo slides docs"
).split()
_CHINESE = (
    "数据库 部署 服务器 测试 发布 会议 明天 今天 午饭 问题 错误 日志 监控 告警 回滚 分支 代码 审查 "
    "用户 客户 需求 设计 文档 上线 下线 故障 性能 缓存 网络 证书 我们 大家 你好 谢谢 好的 没问题 "
    "看一下 帮忙 已经 还是 可以 需要 现在 马上"
).split()
_TAIL_LETTERS = "abcdefghijklmnopqrstuvwxyz"

# (query, room or None): what people type into a chat's search box.
QUERIES: list[tuple[str, str | None]] = [
    ("deploy", None), ("database backup", None), ("timeout", None), ("kubernetes cluster", None),
    ("rollback", None), ('"the release"', None), ("invoice", None), ("certificate", None),
    ("the", None), ("meeting tomorrow", None), ("websocket latency", None), ("zqvx", None),
    ("数据库", None), ("部署失败", None), ("服务器", None), ("你好", None),
    ("deploy", "room-0"), ("error", "room-7"), ("数据库", "room-3"), ("lunch", "room-42"),
]


def _vocabulary(rng: random.Random) -> list[str]:
    tail = {"".join(rng.choices(_TAIL_LETTERS, k=rng.randint(4, 10))) for _ in range(20_000)}
    return sorted(tail)


def _messages(count: int, rng: random.Random) -> Any:
    tail = _vocabulary(rng)
    rooms = [f"room-{n}" for n in range(ROOMS)]
    # Unequal rooms: room-0 busiest, as in any team's chat.
    room_weights = [1.0 / (n + 1) ** 0.8 for n in range(ROOMS)]
    nicks = [f"user{n}" for n in range(USERS)]
    start_ms = 1_700_000_000_000
    step_ms = 365 * 24 * 3600 * 1000 // count
    seqs = dict.fromkeys(rooms, 0)
    chosen_rooms = rng.choices(rooms, room_weights, k=count)
    for n in range(count):
        room = chosen_rooms[n]
        seqs[room] += 1
        if rng.random() < 0.1:
            body = "".join(rng.choices(_CHINESE, k=rng.randint(3, 12)))
            if rng.random() < 0.3:
                body += rng.choice(["，", "。", "？", " "]) + rng.choice(_TOPICS)
        else:
            words = []
            for _ in range(rng.randint(3, 25)):
                pick = rng.random()
                if pick < 0.6:
                    words.append(rng.choice(_COMMON))
                elif pick < 0.9:
                    words.append(rng.choice(_TOPICS))
                else:
                    words.append(rng.choice(tail))
            words[0] = words[0].capitalize()
            body = " ".join(words) + rng.choice([".", "", "?", "!", " :)"])
        nick = rng.choice(nicks)
        yield (room, seqs[room], nick, nick, f"b{n}", body, "", "[]", "[]", start_ms + n * step_ms)


def build_database(count: int, directory: Path = CACHE_DIR) -> Path:
    """The cached database of ``count`` messages, built first if it is not there."""
    path = directory / f"search-{count}-v{GENERATOR_VERSION}.db"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    from squall.store.sqlite import SQLiteStore

    async def create_schema() -> None:
        store = SQLiteStore(str(partial))
        await store.open()
        await store.close()

    asyncio.run(create_schema())  # called in a worker thread: no loop of its own there
    rng = random.Random(12)
    with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-200000")
        rows = _messages(count, rng)
        last: dict[str, int] = {}
        while True:
            batch = [row for _, row in zip(range(BATCH), rows)]
            if not batch:
                break
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages (room, seq, nick, nick_key, cid, body, html, mentions, links, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            db.execute("COMMIT")
            for row in batch:
                last[row[0]] = row[1]
        db.executemany("INSERT INTO rooms (name, last_seq) VALUES (?, ?)", list(last.items()))
        db.execute("INSERT INTO message_search (message_search) VALUES ('optimize')")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")  # one file to keep and copy, no -wal beside it
    partial.rename(path)
    return path


async def search_1m(target: Target, options: Options) -> dict[str, Any]:
    if target.name != "squall":
        return {"skipped": "search is Squall's own: nothing to compare", "ok": True}
    count = options.search_messages
    building = time.perf_counter()
    cached = (CACHE_DIR / f"search-{count}-v{GENERATOR_VERSION}.db").exists()
    source = await asyncio.get_running_loop().run_in_executor(None, build_database, count)
    build_s = time.perf_counter() - building
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        copy = workdir / "squall.db"
        await asyncio.get_running_loop().run_in_executor(None, shutil.copyfile, source, copy)
        server = await SquallTarget(pin=target.pin, loop=target.loop).start(
            "ws", env={"SQUALL_DATABASE": f"sqlite:///{copy}"}
        )
        try:
            token = (await target.tokens(server, ["searcher"]))[0]
            client = await HTTPClient.connect(server.host, server.port)
            latencies: list[float] = []
            by_query: dict[str, list[float]] = {}
            results = 0
            failures: list[str] = []
            cpu_before = 0.0
            try:
                for round_ in range(ROUNDS + 1):
                    if round_ == 1:
                        cpu_before = server.cpu_seconds()
                    for q, room in QUERIES:
                        params = {"q": q, "limit": 20, **({"room": room} if room else {})}
                        path = "/api/search?" + urllib.parse.urlencode(params)
                        started = time.perf_counter()
                        status, answer = await client.request("GET", path, token=token)
                        elapsed = time.perf_counter() - started
                        if status != 200:
                            failures.append(f"{q!r}: {status} {answer}")
                            continue
                        if round_ == 0:
                            results += len(answer["results"])
                            continue  # warm-up: the copy's pages come into the cache
                        latencies.append(elapsed)
                        by_query.setdefault(f"{q}@{room or '*'}", []).append(elapsed)
            finally:
                await client.close()
            cpu_s = server.cpu_seconds() - cpu_before
        finally:
            await server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = _percentiles(latencies)
    slowest = sorted(((sorted(v)[len(v) // 2] * 1000, k) for k, v in by_query.items()), reverse=True)[:3]
    return {
        "ok": not failures and bool(latencies) and results > 0,
        "messages": count,
        "queries": len(latencies),
        "results_first_round": results,
        "p50_ms": figures.get("p50_ms", 0.0),
        "p95_ms": round(_p95(latencies) * 1000, 3),
        "p99_ms": figures.get("p99_ms", 0.0),
        "max_ms": figures.get("max_ms", 0.0),
        # What the server spent per search, whatever else the machine ran meanwhile.
        "server_cpu_ms_per_query": round(cpu_s * 1000 / max(len(latencies), 1), 2),
        "slowest_p50_ms": {k: round(v, 2) for v, k in slowest},
        "database_cached": cached,
        "database_s": round(build_s, 1),
        "database_mib": round(source.stat().st_size / 2**20, 1),
        "failures": failures[:5],
        "setup_s": round(build_s, 1),
    }


def _p95(values: list[float]) -> float:
    """As bench.scenarios._percentiles picks its p50 and p99."""
    if not values:
        return 0.0
    ordered = sorted(values)
    last = len(ordered) - 1
    return ordered[min(last, int(last * 95 / 100 + 0.5))]


def _search_goal(rows: dict[str, dict[str, Any]]) -> tuple[bool, str] | None:
    squall = rows.get("squall", {})
    p95 = squall.get("p95_ms")
    if not isinstance(p95, (int, float)) or not squall.get("ok"):
        return None
    return p95 < GOAL_P95_MS, f"p95 {p95:.1f} ms over {squall.get('messages'):,} messages"


SCENARIOS: dict[str, Scenario] = {
    "search-1m": Scenario(
        "search-1m", "local", search_1m, "p95_ms", "ms p95", False,
        "GET /api/search over 1,000,000 stored messages (SQLite, FTS5 trigram): 20 realistic queries x 10",
        (("p50_ms", "p50 ms"), ("max_ms", "max ms"), ("server_cpu_ms_per_query", "server CPU ms/query"),
         ("messages", "messages"), ("database_s", "fill s")),
        figure="p95 of one search's round trip over HTTP, one at a time",
    ),
}
GOALS: dict[str, Goal] = {"search-1m": Goal(f"p95 < {GOAL_P95_MS:g} ms over 1,000,000 messages", _search_goal)}


def register(scenarios: dict[str, Scenario], goals: dict[str, Goal]) -> None:
    """Add the search scenario and its goal to the bench's tables."""
    scenarios.update(SCENARIOS)
    goals.update(GOALS)
