"""Shared fixtures. The helpers they use live in ``tests/support.py``.

With ``SQUALL_REQUIRE_ALL_TESTS`` set (``.ci/run`` sets it), a skipped test
fails instead: CI must not pass because Chromium or a server was missing.

``server`` is one ``squall run`` per test module. A module tunes it with a
module-level ``SQUALL_ENV`` dict of ``SQUALL_*`` variables; tests in a module
share the server, so each uses rooms of its own.

``postgres_url`` is a PostgreSQL database of the test's own (tests/pg_support.py),
skipped with a hint where there is no server; ``store_url`` runs a test once on
SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from collections.abc import Generator, Iterator

import pytest
from hypothesis import settings

from pg_support import temporary_database
from support import REDIS_SERVER_SKIP, REDIS_SKIP, REDIS_URL, RedisServer, SquallProcess, redis_reachable, squall_server

# Hypothesis fails an example that takes over 200 ms by default: a speed test in
# disguise, which a loaded two-core machine fails at random. Correctness only here.
settings.register_profile("squall", deadline=None)
settings.load_profile("squall")

_names = itertools.count(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SQUALL_REQUIRE_ALL_TESTS"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but SQUALL_REQUIRE_ALL_TESTS is set: {reason}"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    env = getattr(request.module, "SQUALL_ENV", {})
    with squall_server(tmp_path_factory.mktemp("squall"), env=env) as instance:
        yield instance


@pytest.fixture
def room() -> str:
    """A room name no other test in this session uses."""
    return f"room-{next(_names)}"


@pytest.fixture
def redis_url() -> str:
    """The machine's shared Redis; the test is skipped (with how to get it) if it is absent."""
    if not redis_reachable(REDIS_URL):
        pytest.skip(REDIS_SKIP)
    return REDIS_URL


@pytest.fixture
def bus_prefix() -> str:
    """A channel prefix no other test (or test run) uses."""
    return f"test-{os.getpid()}-{next(_names)}:"


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start again."""
    if shutil.which("redis-server") is None:
        pytest.skip(REDIS_SERVER_SKIP)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own on the shared server; its keys are deleted after.

    Skips (fails under ``SQUALL_REQUIRE_ALL_TESTS``) when Redis is not running.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        client.close()
        pytest.skip(REDIS_SKIP)
    prefix = f"squall-test-{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new PostgreSQL database, dropped after the test; mark the test ``postgres``."""
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database URL for each store: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'squall.db'}"
        return
    with temporary_database() as url:
        yield url
