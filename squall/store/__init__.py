"""Where messages live: the :class:`Store` interface and :func:`open_store`.

Everything above the store (hub, web node, processor) talks to this interface
only, so SQLite (the embedded default, :mod:`.sqlite`) and PostgreSQL
(:mod:`.postgres`, for several processors and web nodes) are interchangeable.
The store is the source of truth: it assigns each room's ``seq`` — 1, 2, 3…
with no gap and no duplicate, however many processors commit to the room at
once — and refuses to store the same ``(room, nick, id)`` twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol

from ..config import redacted_url
from ..errors import ConfigError
from ..files import FileRecord
from ..message import ChangeRules, Draft
from ..rooms import Membership, RoomInfo
from ..search import Candidate, SearchQuery

__all__ = [
    "Store", "open_store", "redacted_url", "Notification", "User", "GuestSession", "Registration",
    "NOTIFICATION_CLAIM_MS", "SearchWindow", "like_escape", "fts_query", "RoomListing", "DirectMessages",
]

# How long a notifier owns the notifications it claimed (ms): another notifier
# takes them over only after this, if the first died before it finished them.
# Far longer than the notifier lets one delivery take (half of it).
NOTIFICATION_CLAIM_MS = 10 * 60 * 1000


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    nick: str
    email: str | None
    password_hash: str | None = None  # argon2id; None for a guest

    @property
    def registered(self) -> bool:
        return self.password_hash is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """What :meth:`Store.register` did: ``taken_by`` names the registered nick
    that blocked it (nothing changed then); else ``revoked`` lists the guest
    sessions of that nick that ended."""

    taken_by: str | None
    revoked: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class GuestSession:
    """A guest session the store opened: the nick's canonical spelling, and the
    sessions of earlier holders of that nick that it revoked."""

    nick: str
    revoked: tuple[str, ...]


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


@dataclasses.dataclass(frozen=True, slots=True)
class SearchWindow:
    """What :meth:`Store.search` found: the matches, newest first; ``pin``,
    where the store stood, to give back for the next page; ``share``, the
    store's estimate of the fraction of messages holding each term, if it has one."""

    candidates: list[Candidate]
    pin: int
    share: dict[str, float] | None = None


def like_escape(term: str) -> str:
    """``term`` for ``LIKE '%…%' ESCAPE '\\'``: its wildcards taken literally."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def fts_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression finding every one of ``terms`` as a substring
    (trigram tokenizer): each a quoted string, so no user text is syntax."""
    return " AND ".join('"' + term.replace('"', '""') + '"' for term in terms)


@dataclasses.dataclass(frozen=True, slots=True)
class RoomListing:
    """A room as the directory shows it. Times are ms since the epoch."""

    name: str
    topic: str
    private: bool
    members: int  # membership rows that are not bans
    last_activity: int  # the newest message's ts, else when the room was created (0: unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "topic": self.topic, "private": self.private,
                "members": self.members, "last_activity": self.last_activity}


@dataclasses.dataclass(frozen=True, slots=True)
class DirectMessages:
    """A direct-message room of one user: who else is in it (canonical nicks)."""

    room: str
    others: tuple[str, ...]
    last_activity: int


class Store(Protocol):
    async def open(self) -> None:
        """Connect, and create or migrate the schema. Call once before anything else."""

    async def close(self) -> None: ...

    async def save_messages(
        self, drafts: Sequence[Draft], *, notify_delay_ms: int | None = None,
        rules: ChangeRules = ChangeRules(),
    ) -> list[Draft]:
        """Store a batch in one transaction and return it with ``seq`` filled in.

        Changes (edits, deletes, reactions) and replies are checked against
        their target inside the transaction (:func:`squall.changes.apply_change`,
        under ``rules``): a refused one comes back with ``refusal`` set and no
        seq, and nothing of it is stored; an accepted change comes back with
        ``state``, its target as it is now, and the target row holds that state.

        A draft whose ``(room, nick, id)`` is already stored comes back as the
        stored original, with ``duplicate=True``. With ``notify_delay_ms``, each
        new mention of a user who has an e-mail address is queued as a pending
        notification in the same transaction. Returns only after the commit.
        """

    async def last_seq(self, room: str) -> int:
        """The room's newest seq, 0 for a room with no messages."""

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        """Up to ``limit`` messages and changes with seq > ``since``, oldest
        first; each change with ``state``, its target's current state."""

    async def messages_before(self, room: str, before: int | None, limit: int) -> list[Draft]:
        """The ``limit`` newest messages with seq < ``before`` (all when None),
        oldest first, each in its current state; change rows are left out."""

    async def search(
        self, query: SearchQuery, *, room: str | None, pin: int | None, window: int
    ) -> SearchWindow:
        """Messages with every term of ``query`` (docs/store.md, "Search"), in
        ``room`` or in any room but the canary's: the newest ``window`` matches,
        newest first (for a query of only short terms, among the newest
        ``SHORT_QUERY_WINDOW`` messages). ``pin`` (from an earlier answer; None
        for a first page) keeps out messages stored since. Rank them with
        :func:`squall.search.rank`; read :meth:`messages_at` for a page."""

    async def messages_at(self, keys: Sequence[tuple[str, int]]) -> list[Draft]:
        """The messages at ``(room, seq)`` ``keys``, in that order (missing ones left out)."""

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

    # -- accounts and sessions (docs/protocol.md, "Accounts and sessions") --
    #
    # A session is a row (id, nick_key, created, revoked). A token names its
    # session id; a token is good while its row exists and is not revoked.
    # Times are seconds since the epoch.

    async def registered_lookalike(self, skeletons: Collection[str]) -> str | None:
        """The nick of a registered user whose confusable skeleton is one of ``skeletons``."""

    async def register(
        self, nick: str, *, password_hash: str, skeleton: str, lookalikes: Collection[str],
        session_id: str, now: int,
    ) -> Registration:
        """Make ``nick`` an account and open its first session, in one transaction.

        ``skeleton`` is stored with it (unique among registered users). Refused
        (``taken_by``) if a registered user has the same nick or a skeleton in
        ``lookalikes``. A guest user of that nick becomes the account: its
        e-mail address is cleared and every guest session of it is revoked.
        """

    async def open_guest_session(
        self, nick: str, session_id: str, *, now: int, takeover: bool
    ) -> GuestSession | None:
        """Remember a guest and open a session for it; None if ``nick`` is registered.

        With ``takeover``, the nick changes hands: the other sessions of that
        nick are revoked (and listed in the answer).
        """

    async def open_session(self, key: str, session_id: str, *, now: int) -> None:
        """Open another session for the (registered) user ``key``."""

    async def session_active(self, session_id: str, key: str) -> bool:
        """Whether the session exists, belongs to ``key`` and is not revoked."""

    async def revoke_session(self, session_id: str, *, now: int) -> None: ...

    async def change_password(
        self, key: str, *, password_hash: str, session_id: str, now: int
    ) -> tuple[str, ...]:
        """Set a new password hash, revoke every session of ``key`` and open
        ``session_id``, in one transaction; returns the revoked session ids."""

    async def update_password_hash(self, key: str, password_hash: str) -> None:
        """Store a re-hash of the same password (stronger parameters); sessions stay."""

    async def forget_sessions(self, created_before: int) -> None:
        """Delete session rows older than any token could be (they are expired)."""

    async def set_email(self, key: str, email: str | None) -> None: ...

    # Uploads (squall/files.py).
    async def save_file(self, record: FileRecord) -> FileRecord:
        """Keep ``record``; if its owner already has this content, the row
        they have (with the new name) is kept and returned instead."""

    async def files_of(self, owner: str, ids: Sequence[str]) -> list[FileRecord]:
        """Those of the files ``ids`` that ``owner`` (a nick key) uploaded, in no order."""

    async def upload_bytes(self, owner: str) -> int:
        """Bytes of the files ``owner`` keeps (their quota's use)."""

    async def file_access(self, sha256: str) -> tuple[list[str], list[str]]:
        """Who uploaded content ``sha256`` (nick keys), and the rooms it was posted to."""

    async def share_files(self, room: str, sha256s: Sequence[str]) -> None:
        """Content ``sha256s`` is posted to ``room``: its readers may fetch it."""

    async def room_posters(self, room: str, limit: int) -> list[str]:
        """Canonical nicks of users who have posted in ``room`` (for ``@room``)."""

    async def save_previews(self, room: str, seq: int, previews: Sequence[dict[str, Any]]) -> None: ...

    async def mark_seen(self, marks: Sequence[tuple[str, str, int]]) -> None:
        """Raise users' read markers: ``(nick_key, room, seq)``; never lowers one."""

    # -- rooms and memberships (squall/rooms.py has the rules) --
    #
    # A room row exists once a room is created, joined or posted to; one
    # nobody created is public with no owner. Times are ms since the epoch.

    async def room_info(self, room: str) -> RoomInfo:
        """The room's row (``exists=False`` when it has none)."""

    async def room_restrictions(self, room: str, *, now_ms: int, limit: int) -> list[tuple[str, int, bool]]:
        """``(key, muted_until, banned)`` of the room's bans and running mutes (at most ``limit``)."""

    async def membership(self, room: str, key: str) -> Membership:
        """User ``key``'s standing in ``room`` (``NO_MEMBERSHIP`` when no row)."""

    async def create_room(self, room: str, *, topic: str, private: bool, owner: str, now_ms: int) -> bool:
        """Create a room owned by ``owner`` (who becomes its member, role owner);
        False, and nothing changed, if a room of that name exists."""

    async def create_dm(self, room: str, keys: Collection[str], *, now_ms: int) -> None:
        """Create (or keep) the private room ``room`` with exactly these members."""

    async def add_members(self, rows: Sequence[tuple[str, str]], *, now_ms: int) -> None:
        """``(room, key)``: make each user a member of a public room it joined,
        creating the room's row if need be; existing rows (bans too) stay."""

    async def set_member(self, room: str, key: str, role: str, *, now_ms: int) -> None:
        """Make ``key`` a member of ``room`` with ``role`` (lifting any ban)."""

    async def remove_member(self, room: str, key: str) -> bool:
        """Delete ``key``'s membership row (a ban too); whether there was one."""

    async def moderate_member(
        self, room: str, key: str, *, muted_until: int | None = None, banned: bool | None = None, now_ms: int
    ) -> None:
        """Set a user's mute end or ban flag, making a row if need be."""

    async def list_rooms(self, *, query: str, after: str | None, limit: int) -> list[RoomListing]:
        """Public rooms whose name holds ``query`` ("" for all), by name, after ``after``."""

    async def dm_rooms(self, key: str, limit: int) -> list[DirectMessages]:
        """The direct-message rooms ``key`` belongs to, newest activity first."""

    async def room_members(self, room: str, limit: int) -> list[tuple[str, str, int, bool]]:
        """``(nick, role, muted_until, banned)`` of a room's membership rows, by casefolded nick."""

    async def mark_read(self, key: str, room: str, seq: int) -> None:
        """User ``key`` read ``room`` up to ``seq`` on some device: raise their read
        position (never lowers it), and the mail marker with it (no mail for what was read)."""

    async def read_markers(self, key: str, limit: int) -> dict[str, int]:
        """User ``key``'s read positions, room → seq (at most ``limit`` rooms)."""

    # -- the mention-mail queue (squall/processor/notifier.py) --
    #
    # Several notifiers (one per processor) may share the queue. A notifier
    # claims a user's pending notifications before it mails them: a claim
    # holds until ``claimed_until`` (ms), and no other notifier sees or claims
    # them meanwhile. Finishing or postponing them ends the claim; a notifier
    # that dies holding one loses it when it runs out.

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]:
        """Pending notifications due by ``now_ms`` that nobody has claimed, oldest due first."""

    async def claim_notifications(self, key: str, *, now_ms: int, until_ms: int) -> list[Notification]:
        """Claim every pending notification of user ``key`` (due or not) that
        nobody has claimed, until ``until_ms``; returns them oldest first, or
        nothing if another notifier is claiming this user's right now."""

    async def next_notification_due(self) -> int | None:
        """When the earliest pending notification may be claimed (its due time,
        or its claim's end), in ms; None when none is pending."""

    async def finish_notifications(self, ids: Sequence[int], state: str) -> None:
        """Mark notifications ``sent`` or ``skipped``."""

    async def postpone_notifications(self, ids: Sequence[int], due_ms: int) -> None:
        """Try again at ``due_ms`` (after a delivery failure); ends the claim."""


def open_store(url: str, *, pool_size: int = 10, timeout: float = 10.0, writes_in_loop: bool = False) -> Store:
    """A store for ``url``: ``sqlite:///path`` or ``postgresql://…``. Call :meth:`Store.open` next.

    ``pool_size`` and ``timeout`` (seconds) bound PostgreSQL's connection pool
    and each operation (``database_pool_size``, ``database_timeout``); SQLite
    has no use for them. ``writes_in_loop`` is for the processor, whose event
    loop may block: a store that would hand its writes to a thread runs them on
    the loop instead (see :mod:`squall.store.sqlite`).
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), writes_in_loop=writes_in_loop)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"database = postgresql://… needs the asyncpg package ({exc}): pip install 'squall[postgres]'"
            ) from None
        return PostgresStore(url, pool_size=pool_size, timeout=timeout)
    raise ConfigError(f"unsupported database URL {redacted_url(url)!r}; use sqlite:///PATH or postgresql://…")
