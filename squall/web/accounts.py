"""Accounts and sessions over HTTP: sign-up, sign-in, guests, sign-out, passwords.

* ``POST /api/account {nick, password}`` registers the nick and signs in (201).
* ``POST /api/session {nick, password}`` signs in to an account (200); a wrong
  password and an unknown nick get the same 401 ``bad_credentials``, after the
  same work (a dummy hash is verified for an unknown nick).
* ``POST /api/session {nick}`` opens a guest session (200), unless the nick is
  registered, online right now, or looks like (confusable skeleton) a
  registered or online nick: 409 ``nick_taken``. A request that carries a live
  token for the same nick is its holder coming back (a reload, a second tab):
  it may have its own online nick, and keeps its other sessions. Anyone else
  who takes a guest nick takes it over: its earlier holder's sessions end.
* ``POST /api/logout`` ends the caller's session (204).
* ``POST /api/account/password {password, new_password}`` sets a new password,
  ends every session of the account and opens a new one (200).

Every successful sign-in answers ``{"nick", "token", "registered"}`` and sets
the session cookie and the ``_xsrf`` cookie. Ending sessions also closes the
WebSocket (4001) and SSE connections that run on them, on this node at once and
on the others as soon as the bus brings the news; a node that missed it (the
bus was down) refuses their tokens within the token cache's TTL (see :mod:`.auth`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, Conflict, Forbidden, Unauthorized
from ..identity import MAX_PASSWORD_CHARS, check_password, nick_skeleton, nick_skeletons
from ..protocol import check_nick, nick_key
from .auth import make_token, new_session_id
from .base import COOKIE_NAME, BaseHandler

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["AccountHandler", "SessionHandler", "LogoutHandler", "PasswordHandler", "end_sessions"]


def end_sessions(node: WebNode, session_ids: Iterable[str]) -> None:
    """Refuse these sessions' tokens from now on and close the connections that
    run on them, on every node (:meth:`WebNode.end_sessions`)."""
    node.end_sessions(session_ids)


def _nick_taken(reason: str) -> Conflict:
    return Conflict(reason, code="nick_taken")


class _SignIn(BaseHandler):
    """What the handlers that open a session share."""

    def start_session(self, nick: str, session_id: str, *, registered: bool, status: int = 200) -> None:
        token = make_token(self.node.secret, session_id, nick)
        self.set_cookie(
            COOKIE_NAME, token, httponly=True, samesite="Lax",
            expires_days=self.node.settings.token_max_age_days,
        )
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie a cookie-authenticated page needs
        self.write_json({"nick": nick, "token": token, "registered": registered}, status=status)

    def holds(self, key: str) -> bool:
        """Whether the request carries a live session for the user ``key``."""
        return self.session is not None and self.session.nick_key == key

    async def check_nick_free(self, nick: str, *, own: bool) -> None:
        """409 ``nick_taken`` if ``nick`` is registered, online (unless ``own``),
        or looks like a registered or online nick."""
        node = self.node
        key = nick_key(nick)
        user = await node.store.get_user(key)
        if user is not None and user.registered:
            raise _nick_taken(f"nick {user.nick!r} is registered; sign in with its password")
        online = await node.room_presence.online(key)
        if online is not None and not own:
            raise _nick_taken(f"nick {online!r} is in use by someone online right now")
        skeletons = nick_skeletons(nick)
        registered = await node.store.registered_lookalike(skeletons)
        if registered is not None:
            raise _nick_taken(f"nick {nick!r} looks like the registered nick {registered!r}")
        lookalike = await node.room_presence.lookalike(nick, besides=key)
        if lookalike is not None:
            raise _nick_taken(f"nick {nick!r} looks like {lookalike!r}, who is online right now")


class AccountHandler(_SignIn):
    """``POST /api/account {"nick": N, "password": P}``: register and sign in."""

    async def post(self) -> None:
        self.check_session_rate()  # before any work: hashing a password is costly
        node = self.node
        data = self.json_body()
        nick = check_nick(data.get("nick"))
        password = check_password(
            data.get("password"), nick=nick, min_length=node.settings.password_min_length
        )
        key = nick_key(nick)
        # A guest may register the nick it holds, even while online with it.
        await self.check_nick_free(nick, own=self.holds(key))
        password_hash = await node.passwords.hash(password)
        session_id = new_session_id()
        outcome = await node.store.register(
            nick, password_hash=password_hash, skeleton=nick_skeleton(nick),
            lookalikes=nick_skeletons(nick), session_id=session_id, now=int(time.time()),
        )
        if outcome.taken_by is not None:  # registered by someone else meanwhile
            raise _nick_taken(f"nick {nick!r} is taken by the registered nick {outcome.taken_by!r}")
        end_sessions(node, outcome.revoked)
        self.start_session(nick, session_id, registered=True, status=201)


class SessionHandler(_SignIn):
    """``POST /api/session``: ``{"nick", "password"}`` signs in, ``{"nick"}`` is a guest."""

    async def post(self) -> None:
        # Sign-ins are charged too: each costs an argon2 hash, and guessing passwords is a flood.
        self.check_session_rate()
        data = self.json_body()
        if "password" in data:
            await self._sign_in(data)
        else:
            await self._guest(data)

    async def _sign_in(self, data: dict[str, Any]) -> None:
        node = self.node
        nick = check_nick(data.get("nick"))
        password = data["password"]
        if not isinstance(password, str):
            raise BadRequest("password must be a string", code="bad_field")
        key = nick_key(nick)
        user = await node.store.get_user(key)
        stored = user.password_hash if user is not None else None
        # Same work and the same answer for an unknown nick as for a wrong password.
        if len(password) > MAX_PASSWORD_CHARS or not await node.passwords.verify(stored, password):
            raise Unauthorized("nick or password is wrong", code="bad_credentials")
        assert user is not None and stored is not None
        if node.passwords.needs_rehash(stored):
            await node.store.update_password_hash(key, await node.passwords.hash(password))
        session_id = new_session_id()
        await node.store.open_session(key, session_id, now=int(time.time()))
        self.start_session(user.nick, session_id, registered=True)

    async def _guest(self, data: dict[str, Any]) -> None:
        node = self.node
        if not node.settings.guests:
            raise Forbidden(
                "guest sessions are turned off on this server: sign in with a password,"
                " or create an account with POST /api/account",
                code="guests_disabled",
            )
        nick = check_nick(data.get("nick"))
        own = self.holds(nick_key(nick))
        await self.check_nick_free(nick, own=own)
        session_id = new_session_id()
        granted = await node.store.open_guest_session(
            nick, session_id, now=int(time.time()), takeover=not own
        )
        if granted is None:  # registered meanwhile
            raise _nick_taken(f"nick {nick!r} is registered; sign in with its password")
        end_sessions(node, granted.revoked)
        self.start_session(granted.nick, session_id, registered=False)


class LogoutHandler(BaseHandler):
    """``POST /api/logout``: end the caller's session (204)."""

    async def post(self) -> None:
        self.current_nick()
        assert self.session is not None
        await self.node.store.revoke_session(self.session.id, now=int(time.time()))
        end_sessions(self.node, [self.session.id])
        self.clear_cookie(COOKIE_NAME)
        self.set_status(204)
        self.finish()


class PasswordHandler(_SignIn):
    """``POST /api/account/password {"password": OLD, "new_password": NEW}``."""

    async def post(self) -> None:
        node = self.node
        nick = self.current_nick()
        key = nick_key(nick)
        data = self.json_body()
        user = await node.store.get_user(key)
        if user is None or user.password_hash is None:
            raise Forbidden(
                f"nick {nick!r} is a guest and has no password; register it with POST /api/account",
                code="not_registered",
            )
        current = data.get("password")
        if not isinstance(current, str) or len(current) > MAX_PASSWORD_CHARS \
                or not await node.passwords.verify(user.password_hash, current):
            raise Forbidden("the current password is wrong", code="bad_credentials")
        new = check_password(
            data.get("new_password"), nick=user.nick, min_length=node.settings.password_min_length
        )
        password_hash = await node.passwords.hash(new)
        session_id = new_session_id()
        revoked = await node.store.change_password(
            key, password_hash=password_hash, session_id=session_id, now=int(time.time())
        )
        end_sessions(node, revoked)
        self.start_session(user.nick, session_id, registered=True)
