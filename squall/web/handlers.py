"""Routes, and the small HTTP handlers: me, members, typing, the page.

Sign-up, sign-in and sign-out live in :mod:`.accounts`; ``/healthz``,
``/readyz`` and ``/metrics`` in :mod:`.operations`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tornado.web import HTTPError

from ..errors import BadRequest
from ..pipeline.mail import validate_email
from ..presence import members_fields
from ..protocol import check_room, int_param, member_cursor, nick_key
from .base import BaseHandler, query_argument
from .rooms import RoomMemberHandler

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["routes"]

_ROOM = r"/api/rooms/([^/]+)"


def routes(node: WebNode) -> list[Any]:
    from .accounts import AccountHandler, LogoutHandler, PasswordHandler, SessionHandler
    from .files import FileHandler, UploadHandler
    from .longpoll import MessagesHandler
    from .operations import HealthzHandler, MetricsHandler, ReadyzHandler
    from .rooms import (
        DMsHandler, ModerationHandler, ReadHandler, ReadMarkersHandler, RoomHandler, RoomMemberHandler, RoomsHandler,
    )
    from .search import SearchHandler
    from .sse import EventsHandler
    from .websocket import WebSocketEndpoint

    args = {"node": node}
    return [
        (r"/", PageHandler, args),
        (r"/api/session", SessionHandler, args),
        (r"/api/account", AccountHandler, args),
        (r"/api/account/password", PasswordHandler, args),
        (r"/api/logout", LogoutHandler, args),
        (r"/api/me", MeHandler, args),
        (r"/api/search", SearchHandler, args),
        (r"/ws", WebSocketEndpoint, args),
        (r"/api/rooms", RoomsHandler, args),
        (r"/api/dms", DMsHandler, args),
        (r"/api/seen", ReadMarkersHandler, args),
        (_ROOM + r"/seen", ReadHandler, args),
        (_ROOM, RoomHandler, args),
        (_ROOM + r"/members/([^/]+)", RoomMemberHandler, args),
        (_ROOM + r"/moderation", ModerationHandler, args),
        (_ROOM + r"/messages", MessagesHandler, args),
        (_ROOM + r"/events", EventsHandler, args),
        (_ROOM + r"/members", MembersHandler, args),
        (_ROOM + r"/typing", TypingHandler, args),
        (r"/api/files", UploadHandler, args),
        (r"/files/((?:thumbs/)?[0-9a-f]{64}(?:\.[a-z0-9]{1,5})?)", FileHandler, args),
        (r"/api/health", HealthHandler, args),
        (r"/healthz", HealthzHandler, args),
        (r"/readyz", ReadyzHandler, args),
        (r"/metrics", MetricsHandler, args),
    ]


class MeHandler(BaseHandler):
    """``GET /api/me`` and ``PATCH /api/me {"email": E}`` (``null`` removes it)."""

    async def get(self) -> None:
        key = nick_key(self.current_nick())
        user = await self.node.store.get_user(key)
        self.write_json({"nick": user.nick if user else self.current_nick(),
                         "email": user.email if user else None,
                         "registered": user.registered if user else False,
                         "default_room": self.node.settings.default_room,
                         "admin": self.node.access.is_admin(key)})

    async def patch(self) -> None:
        nick = self.current_nick()
        data = self.json_body()
        if "email" not in data:
            raise BadRequest("send {\"email\": ADDRESS} (or null to remove it)", code="bad_field")
        email = data["email"]
        if email is not None:
            if not isinstance(email, str):
                raise BadRequest("email must be a string or null", code="bad_field")
            email = validate_email(email)
        key = nick_key(nick)
        await self.node.store.save_user(nick)
        await self.node.store.set_email(key, email)
        self.write_json({"nick": nick, "email": email})


class MembersHandler(RoomMemberHandler):
    """``GET /api/rooms/R/members?cursor=C&limit=L``: a page of who is online,
    sorted by casefolded nick; ``next`` is the cursor of the page after it.
    ``POST`` adds a member (:class:`~squall.web.rooms.RoomMemberHandler`)."""

    async def delete(self, room: str, who: str | None = None) -> None:
        if who is None:
            raise HTTPError(405, "DELETE /api/rooms/R/members/NICK removes one member")
        await super().delete(room, who)

    async def get(self, room: str) -> None:
        nick = self.current_nick()
        room = check_room(room)
        await self.node.access.may_read(room, nick_key(nick))
        settings = self.node.settings
        cursor = member_cursor(query_argument(self.request, "cursor"))
        limit = int_param(
            query_argument(self.request, "limit"), "limit",
            default=settings.members_page, low=1, high=settings.members_limit_max,
        )
        assert limit is not None
        page = await self.node.room_presence.page(room, after=cursor, limit=limit)
        self.write_json({"room": room, **members_fields(page)})


class TypingHandler(BaseHandler):
    async def post(self, room: str) -> None:
        nick = self.current_nick()
        room = check_room(room)
        await self.node.access.may_read(room, nick_key(nick))
        if self.node.limits.allow_typing(nick_key(nick), room, now=time.monotonic()):
            self.node.typing(room, nick)
        self.set_status(204)
        self.finish()


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({
            "ok": True,
            "processor": "connected" if self.node.link.connected.is_set() else "unreachable",
            "processors": self.node.link.states(),
            "pending_sends": self.node.link.pending,
            "websocket": self.node.settings.websocket,
            "connections": {
                "websocket": len(self.node.websockets),
                "sse": len(self.node.event_streams),
                "long_poll": len(self.node.poll_connections),
            },
            "waiting_polls": self.node.hub.waiting_polls(),
            "bus": self.node.bus.status(),
            "presence": self.node.room_presence.status(),
            "rejections": self.node.counters.snapshot(),
            "limits": self.node.limits.tracked(),
        })


class PageHandler(BaseHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:;"
            " connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")

    def get(self) -> None:
        self.xsrf_token  # noqa: B018 - sets the _xsrf cookie for cookie-authenticated POSTs
        settings = self.node.settings
        self.render("index.html", websocket=settings.websocket, max_body_chars=settings.max_body_chars)
