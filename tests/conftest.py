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
from collections.abc import Generator, Iterator

import pytest

from pg_support import temporary_database
from support import SquallProcess, squall_server

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
