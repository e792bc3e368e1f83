"""The processor on the PostgreSQL store, with the SQLite figures beside it.

``processor-postgres`` runs the ``processor`` scenario twice against Squall in
one go: once with ``--database postgresql://…`` (a database of its own,
created on the server at :data:`ADMIN_URL` and dropped afterwards), once on
SQLite as ``processor`` does. The headline is PostgreSQL's; the ``sqlite_*``
figures are the same measurement on SQLite, taken right before. Goals (issue
11): at least 5,000 messages/s stored and acknowledged by one processor (group
commit), and send → ack p99 under 10 ms at 100 messages/s, one at a time.

PostgreSQL itself is not pinned: it runs on whichever core is free, and its
CPU shows in ``other_cpu``. ``pg_commit_p50_ms`` and ``pg_commit_p99_ms`` are
the floor under the latency figures: a one-row ``INSERT`` committed on its own,
at the same rate, straight from the bench (so the server's fsync, and how busy
the machine is). Without a server the scenario is skipped, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

from .scenarios import Options, processor
from .targets import Running, Target

__all__ = ["ADMIN_URL", "processor_postgres"]

# A maintenance database on the server to measure; its user must be allowed to create databases.
ADMIN_URL = os.environ.get("SQUALL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CONNECT_TIMEOUT = 5.0


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _OnDatabase(Target):
    """``target`` with its processor started on ``url`` (through ``SQUALL_DATABASE``)."""

    def __init__(self, target: Target, url: str) -> None:
        super().__init__(pin=target.pin, loop=target.loop)
        self.name = target.name
        self.target = target
        self.url = url

    async def start(self, kind: str) -> Running:
        with _environment(SQUALL_DATABASE=self.url):
            return await self.target.start(kind)


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[str]:
    import asyncpg

    admin = await asyncpg.connect(ADMIN_URL, timeout=CONNECT_TIMEOUT)
    name = f"squall_bench_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _unavailable() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    try:
        connection = await asyncpg.connect(ADMIN_URL, timeout=CONNECT_TIMEOUT)
    except Exception as exc:
        return f"no PostgreSQL at {ADMIN_URL} ({type(exc).__name__}: {exc}); set SQUALL_BENCH_POSTGRES"
    await connection.close()
    return None


async def _bare_commits(url: str, *, rate: float, count: int) -> dict[str, float]:
    """p50 and p99 of a one-row INSERT, each its own transaction, ``rate`` a second."""
    import asyncpg

    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        await connection.execute("CREATE TABLE bench_commits (n integer)")
        latencies = []
        start = time.perf_counter()
        for k in range(count):
            await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
            sent = time.perf_counter()
            await connection.execute("INSERT INTO bench_commits VALUES ($1)", k)
            latencies.append(time.perf_counter() - sent)
    finally:
        await connection.close()
    latencies.sort()
    last = len(latencies) - 1
    return {f"pg_commit_p{p}_ms": round(latencies[int(last * p / 100 + 0.5)] * 1000, 3) for p in (50, 99)}


async def processor_postgres(target: Target, options: Options) -> dict[str, Any]:
    if target.name != "squall":
        return {"skipped": "measures Squall's store only", "ok": True}
    reason = await _unavailable()
    if reason is not None:
        return {"skipped": reason, "ok": True}
    on_sqlite = await processor(target, options)
    async with _database() as url:
        result = await processor(_OnDatabase(target, url), options)
        result.update(await _bare_commits(url, rate=result["latency_rate"], count=result["latency_messages"]))
    result["database"] = "postgresql"
    for key in ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu", "ok"):
        if key in on_sqlite:
            result[f"sqlite_{key}"] = on_sqlite[key]
    result["ok"] = bool(result.get("ok")) and bool(on_sqlite.get("ok"))
    return result
