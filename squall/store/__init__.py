"""Where messages live: the :class:`Store` interface and :func:`open_store`.

Everything above the store (hub, web node, processor) talks to this interface
only, so SQLite today and PostgreSQL later are interchangeable. The store is the
source of truth: it assigns each room's ``seq`` and refuses to store the same
``(room, nick, id)`` twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from ..message import Draft

__all__ = ["Store", "open_store", "Notification", "User"]


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    nick: str
    email: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """A mention waiting to be e-mailed. Times are ms since the epoch."""

    id: int
    nick_key: str
    nick: str
    email: str | None
    room: str
    seq: int
    sender: str
    body: str
    ts: int
    due: int
    attempts: int
    seen_seq: int | None  # the user's read marker in that room


class Store(Protocol):
    async def open(self) -> None:
        """Connect, and create or migrate the schema. Call once before anything else."""

    async def close(self) -> None: ...

    async def save_messages(
        self, drafts: Sequence[Draft], *, notify_delay_ms: int | None = None
    ) -> list[Draft]:
        """Store a batch in one transaction and return it with ``seq`` filled in.

        A draft whose ``(room, nick, id)`` is already stored comes back as the
        stored original, with ``duplicate=True``. With ``notify_delay_ms``, each
        new mention of a user who has an e-mail address is queued as a pending
        notification in the same transaction. Returns only after the commit.
        """

    async def last_seq(self, room: str) -> int:
        """The room's newest seq, 0 for a room with no messages."""

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        """Up to ``limit`` messages with seq > ``since``, oldest first."""

    async def messages_before(self, room: str, before: int | None, limit: int) -> list[Draft]:
        """The ``limit`` newest messages with seq < ``before`` (all when None), oldest first."""

    async def save_user(self, nick: str) -> str:
        """Remember a user (for a guest: that it has a new session now); returns
        the canonical spelling if the nick is known."""

    async def forget_guests(self, last_session_before: int) -> int:
        """Delete guests — users without password or e-mail — whose newest session
        began before ``last_session_before`` (Unix seconds), with their read
        markers; returns how many. Past ``token_max_age_days`` no token names
        them any more, and this keeps the users table bounded (see
        docs/configuration.md, ``session_rate_per_ip``)."""

    async def find_users(self, keys: Iterable[str]) -> dict[str, str]:
        """Map casefolded nicks to canonical nicks, for the ones that exist."""

    async def get_user(self, key: str) -> User | None: ...

    async def set_email(self, key: str, email: str | None) -> None: ...

    async def room_posters(self, room: str, limit: int) -> list[str]:
        """Canonical nicks of users who have posted in ``room`` (for ``@room``)."""

    async def save_previews(self, room: str, seq: int, previews: Sequence[dict[str, Any]]) -> None: ...

    async def mark_seen(self, marks: Sequence[tuple[str, str, int]]) -> None:
        """Raise users' read markers: ``(nick_key, room, seq)``; never lowers one."""

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]: ...

    async def pending_notifications(self, key: str) -> list[Notification]: ...

    async def next_notification_due(self) -> int | None: ...

    async def finish_notifications(self, ids: Sequence[int], state: str) -> None:
        """Mark notifications ``sent`` or ``skipped``."""

    async def postpone_notifications(self, ids: Sequence[int], due_ms: int) -> None:
        """Try again at ``due_ms`` (after a delivery failure)."""


def open_store(url: str) -> Store:
    """A store for ``url``: ``sqlite:///path``. Call :meth:`Store.open` next."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ConfigError(f"unsupported database URL {url!r}; use sqlite:///PATH")
