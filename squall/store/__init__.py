"""Where messages live: the :class:`Store` interface and :func:`open_store`.

Everything above the store (hub, web node, processor) talks to this interface
only, so SQLite today and PostgreSQL later are interchangeable. The store is the
source of truth: it assigns each room's ``seq`` and refuses to store the same
``(room, nick, id)`` twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from ..errors import ConfigError
from ..message import Draft

__all__ = ["Store", "open_store"]


class Store(Protocol):
    async def open(self) -> None:
        """Connect, and create or migrate the schema. Call once before anything else."""

    async def close(self) -> None: ...

    async def save_messages(self, drafts: Sequence[Draft]) -> list[Draft]:
        """Store a batch in one transaction and return it with ``seq`` filled in.

        A draft whose ``(room, nick, id)`` is already stored comes back as the
        stored original, with ``duplicate=True``. Returns only after the commit.
        """

    async def last_seq(self, room: str) -> int:
        """The room's newest seq, 0 for a room with no messages."""

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        """Up to ``limit`` messages with seq > ``since``, oldest first."""

    async def messages_before(self, room: str, before: int | None, limit: int) -> list[Draft]:
        """The ``limit`` newest messages with seq < ``before`` (all when None), oldest first."""

    async def save_user(self, nick: str) -> str:
        """Remember a user; returns the canonical spelling if the nick is known."""

    async def find_users(self, keys: Iterable[str]) -> dict[str, str]:
        """Map casefolded nicks to canonical nicks, for the ones that exist."""


def open_store(url: str) -> Store:
    """A store for ``url``: ``sqlite:///path``. Call :meth:`Store.open` next."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ConfigError(f"unsupported database URL {url!r}; use sqlite:///PATH")
