"""Shared fixtures. The helpers they use live in ``tests/support.py``.

``server`` is one ``squall run`` per test module. A module tunes it with a
module-level ``SQUALL_ENV`` dict of ``SQUALL_*`` variables; tests in a module
share the server, so each uses rooms of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from support import SquallProcess, squall_server

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    env = getattr(request.module, "SQUALL_ENV", {})
    with squall_server(tmp_path_factory.mktemp("squall"), env=env) as instance:
        yield instance


@pytest.fixture
def room() -> str:
    """A room name no other test in this session uses."""
    return f"room-{next(_names)}"
