"""Session tokens: a session id and a nick, signed with Tornado's signed values.

A token is ``create_signed_value(secret, "squall-session", "<session id>:<nick>",
version=2)``: HMAC-SHA256 over the name, the value and the time it was issued.
:func:`decode_token` accepts a token only if

* its signature is good and in the current format (version 2; version-1
  values, signed with HMAC-SHA1 and no key version, are refused),
* it was issued at most ``max_age_days`` ago, and not in the future: more
  than :data:`MAX_CLOCK_SKEW` seconds ahead of our clock is refused, as only
  a node with a wrong clock or a stolen secret can make such a token,
* it names a session id and a valid nick.

A good signature is not enough: the session must also be live in the store
(not ended by ``POST /api/logout``, a password change, or the registration
of the nick by someone else). :class:`TokenCache` asks the store the first
time a node sees a token and then believes its answer for ``ttl`` seconds, so
a session revoked on another node is refused here at most ``ttl`` seconds
later; a revocation made on this node takes effect at once.
"""

from __future__ import annotations

import os
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from tornado.web import create_signed_value, decode_signed_value

from ..errors import BadRequest
from ..protocol import check_nick, nick_key

__all__ = [
    "Session", "make_token", "decode_token", "new_session_id", "TokenCache", "SessionUnchecked",
    "load_or_create_secret", "TOKEN_NAME", "MAX_CLOCK_SKEW", "MAX_TOKEN_CHARS",
]

TOKEN_NAME = "squall-session"
# Seconds a token's issue time may lie ahead of our clock: nodes whose clocks
# differ this much still accept each other's fresh tokens.
MAX_CLOCK_SKEW = 60.0
# Longer tokens are refused before any parsing (ours are about 120 characters).
MAX_TOKEN_CHARS = 512
_SIGNATURE_VERSION = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    id: str
    nick: str
    issued: float  # seconds since the epoch

    @property
    def nick_key(self) -> str:
        return nick_key(self.nick)


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def make_token(secret: str, session_id: str, nick: str, *, clock: Callable[[], float] | None = None) -> str:
    value = f"{session_id}:{nick}"
    return create_signed_value(
        secret, TOKEN_NAME, value, version=_SIGNATURE_VERSION, clock=clock
    ).decode("ascii")


def decode_token(secret: str, token: str | None, *, max_age_days: float, now: float) -> Session | None:
    """The session a well-signed, current token names, else None.

    ``now`` is the wall-clock time (seconds since the epoch). Says nothing of
    revocation: ask the store (or a :class:`TokenCache`) for that.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    value = decode_signed_value(
        secret, TOKEN_NAME, token, max_age_days=max_age_days, clock=lambda: now,
        min_version=_SIGNATURE_VERSION,
    )
    if value is None:
        return None
    issued = _issue_time(token)
    if issued is None or issued > now + MAX_CLOCK_SKEW:
        return None
    try:
        session_id, sep, nick = value.decode("utf-8").partition(":")
        check_nick(nick)
    except (UnicodeDecodeError, BadRequest):
        return None
    if not sep or not session_id:
        return None
    return Session(session_id, nick, issued)


def _issue_time(token: str) -> float | None:
    # Version 2 is "2|1:<key version>|<n>:<timestamp>|...": the signature that
    # decode_signed_value has just checked covers these fields, but Tornado
    # gives no way to read them, and checks only the past bound itself.
    fields = token.split("|", 3)
    if len(fields) < 4:
        return None
    length, _, stamp = fields[2].partition(":")
    if not length.isdigit() or int(length) != len(stamp) or not stamp.isdigit():
        return None
    return float(stamp)


class SessionUnchecked(Exception):
    """A well-signed token whose session this node has not asked the store
    about lately: ``await TokenCache.check(token)``, then try again."""

    def __init__(self, token: str) -> None:
        super().__init__("session not checked yet")
        self.token = token


SessionLookup = Callable[[str, str], Awaitable[bool]]


class TokenCache:
    """Remembers, per token, whether its session is live, for ``ttl`` seconds.

    A long-poller presents the same token on every request; checking its
    HMAC, and asking the store whether its session is live, each time would
    cost more than the poll itself. :meth:`nick` answers from memory only and
    never waits; :meth:`check` asks the store (``session_active(id, key)``)
    when memory has no answer. Both good and refused sessions are remembered,
    each for at most ``ttl``; at most ``size`` good ones (past that, the oldest
    is forgotten: the node sizes it to its connection limit, so a full node's
    clients all stay known) and ``size`` refused ones (past that, cleared).
    """

    def __init__(
        self, secret: str, *, session_active: SessionLookup, max_age_days: float,
        ttl: float = 60.0, size: int = 10_000, clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.session_active = session_active
        self.max_age_days = max_age_days
        self.ttl = ttl
        self.size = size
        self.clock = clock  # wall clock, for token ages; `now` arguments are monotonic
        self._good: dict[str, tuple[Session, float]] = {}  # token → (session, until)
        self._refused: dict[str, float] = {}  # session id → until

    def nick(self, token: str | None, *, now: float) -> str | None:
        """The nick of a token known good, None for one known bad.

        Raises :class:`SessionUnchecked` for a well-signed token this node has no
        recent answer for: the caller awaits :meth:`check` and asks again.
        """
        session = self.cached(token, now=now)
        if session is not None:
            return session.nick
        decoded = decode_token(self.secret, token, max_age_days=self.max_age_days, now=self.clock())
        if token is None or decoded is None or self._is_refused(decoded.id, now):
            return None
        raise SessionUnchecked(token)

    def cached(self, token: str | None, *, now: float) -> Session | None:
        """The session of a token known good, from memory only."""
        if not token:
            return None
        hit = self._good.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        return None

    async def check(self, token: str | None, *, now: float) -> Session | None:
        """The live session ``token`` names, or None; asks the store if need be."""
        session = self.cached(token, now=now)
        if session is not None:
            return session
        session = decode_token(self.secret, token, max_age_days=self.max_age_days, now=self.clock())
        if session is None or self._is_refused(session.id, now):
            return None
        assert token is not None
        live = await self.session_active(session.id, session.nick_key)
        # A revocation on this node while the store was read wins over its answer.
        if not live or self._is_refused(session.id, now):
            self._refuse(session.id, now)
            return None
        if len(self._good) >= self.size:
            # The oldest answer goes (dicts keep insertion order): clearing them
            # all would send every client of a full node back to the store at once.
            del self._good[next(iter(self._good))]
        self._good[token] = (session, now + self.ttl)
        return session

    def revoked(self, session_ids: Iterable[str], *, now: float) -> None:
        """These sessions have ended: refuse their tokens from now on."""
        ended = set(session_ids)
        for session_id in ended:
            self._refuse(session_id, now)
        if ended:
            for token in [t for t, (s, _) in self._good.items() if s.id in ended]:
                del self._good[token]

    def _refuse(self, session_id: str, now: float) -> None:
        if len(self._refused) >= self.size:
            self._refused.clear()
        self._refused[session_id] = now + self.ttl

    def _is_refused(self, session_id: str, now: float) -> bool:
        until = self._refused.get(session_id)
        return until is not None and until > now


def load_or_create_secret(configured: str, data_dir: str) -> str:
    """The configured secret, else one kept in ``<data_dir>/secret`` across restarts."""
    if configured:
        return configured
    path = Path(data_dir) / "secret"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(value, encoding="ascii")
    temporary.chmod(0o600)
    # A web node and a processor started together both create it: link() fails
    # for the second, which then reads the first's, so both sign and prove the
    # link with one secret (replace() would let each keep its own).
    try:
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    finally:
        temporary.unlink()
    return value
