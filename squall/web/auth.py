"""Session tokens: the nick, signed by the server with Tornado's signed values.

A token is ``create_signed_value(secret, "squall-session", nick)``: it carries
the nick and a timestamp under an HMAC-SHA256 signature, so a forged or altered
token fails :func:`nick_from_token` and expires after ``max_age_days``.
Password accounts can add a second token kind beside this one later.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tornado.web import create_signed_value, decode_signed_value

__all__ = ["make_token", "nick_from_token", "TokenCache", "load_or_create_secret", "TOKEN_NAME"]

TOKEN_NAME = "squall-session"


def make_token(secret: str, nick: str) -> str:
    return create_signed_value(secret, TOKEN_NAME, nick).decode("ascii")


def nick_from_token(secret: str, token: str | None, *, max_age_days: float) -> str | None:
    """The nick a valid token names, or None for a missing, forged or expired one."""
    if not token or len(token) > 512:
        return None
    value = decode_signed_value(secret, TOKEN_NAME, token, max_age_days=max_age_days)
    if value is None:
        return None
    try:
        nick = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return nick or None  # a session always names someone


class TokenCache:
    """Remembers checked tokens for ``ttl`` seconds.

    A long-poller presents the same token on every request; checking its HMAC
    each time is most of what a poll costs the web node besides HTTP itself.
    Only valid tokens are cached, and each for at most ``ttl``, so an expiry
    takes effect at most ``ttl`` late. Holds at most ``size`` tokens.
    """

    def __init__(self, secret: str, *, max_age_days: float, ttl: float = 60.0, size: int = 10_000) -> None:
        self.secret = secret
        self.max_age_days = max_age_days
        self.ttl = ttl
        self.size = size
        self._checked: dict[str, tuple[str, float]] = {}

    def nick(self, token: str | None, *, now: float) -> str | None:
        if not token:
            return None
        hit = self._checked.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        nick = nick_from_token(self.secret, token, max_age_days=self.max_age_days)
        if nick is not None:
            if len(self._checked) >= self.size:
                self._checked.clear()
            self._checked[token] = (nick, now + self.ttl)
        return nick


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
