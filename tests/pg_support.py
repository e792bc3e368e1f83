"""PostgreSQL for the tests: the machine's server, a database of each test's own.

Tests marked ``postgres`` use :func:`temporary_database` (through the
``postgres_url`` fixture in conftest.py): it creates ``squall_test_<random>``
on the server at :data:`ADMIN_URL` and drops it afterwards, so nothing else on
the server is touched. Without a server there, the test is skipped with
:data:`SKIP_HINT` (and fails under ``SQUALL_REQUIRE_ALL_TESTS``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = [
    "ADMIN_URL", "SKIP_HINT", "unavailable", "temporary_database", "query", "sql", "terminate_backends",
    "backends_waiting_for_a_lock", "lock_waiters",
]

# The maintenance database of the server the tests use; its user must be allowed to create databases.
ADMIN_URL = os.environ.get("SQUALL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SKIP_HINT = (
    "install and start PostgreSQL on 127.0.0.1:5432 with user postgres allowed in"
    " (Debian: `apt-get install postgresql`, then trust or a password in SQUALL_TEST_POSTGRES),"
    " or point SQUALL_TEST_POSTGRES at another server, to run the postgres tests"
)
CONNECT_TIMEOUT = 5.0


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


async def query(url: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on a connection of its own; its rows."""
    import asyncpg

    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


def sql(url: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on its own connection (outside any event loop); its rows."""
    return asyncio.run(query(url, statement, *args))


@functools.cache
def unavailable() -> str | None:
    """Why the tests cannot have a PostgreSQL database here, or None."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[test]')"
    try:
        sql(ADMIN_URL, "SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {ADMIN_URL} cannot be used ({type(exc).__name__}: {exc}): {SKIP_HINT}"
    return None


@contextmanager
def temporary_database(prefix: str = "squall_test") -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit (its connections ended)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"{prefix}_{secrets.token_hex(6)}"
    sql(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        sql(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def terminate_backends(url: str, *, pids: list[int] | None = None, application_name: str = "squall") -> int:
    """End the server processes of ``url``'s database that ``application_name`` opened
    (only ``pids`` among them, if given); how many were ended."""
    database = urlsplit(url).path.lstrip("/")
    rows = await query(
        ADMIN_URL,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()"
        " AND ($3::int[] IS NULL OR pid = ANY($3::int[]))",
        database, application_name, pids,
    )
    return sum(1 for row in rows if row[0])


async def backends_waiting_for_a_lock(url: str, application_name: str = "squall") -> list[int]:
    """Server processes of ``url``'s database, opened by ``application_name``, waiting for a lock."""
    database = urlsplit(url).path.lstrip("/")
    rows = await query(
        ADMIN_URL,
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
        " AND wait_event_type = 'Lock'",
        database, application_name,
    )
    return [row[0] for row in rows]


async def lock_waiters(url: str, count: int, *, excluded: Collection[int] = (), timeout: float = 15.0) -> list[int]:
    """Wait until ``count`` server processes of ``url``'s database (other than
    ``excluded``) wait for a lock; their pids. There is no event to wait on:
    this looks at pg_stat_activity every 10 ms, up to ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        waiting = [pid for pid in await backends_waiting_for_a_lock(url) if pid not in excluded]
        if len(waiting) >= count:
            return waiting
        if loop.time() > deadline:
            raise AssertionError(f"{len(waiting)} server processes wait for a lock after {timeout} s, not {count}")
        await asyncio.sleep(0.01)
