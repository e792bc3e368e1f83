"""What every HTTP handler shares: JSON errors, authentication, the XSRF rule."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from tornado.httputil import HTTPServerRequest, parse_cookie
from tornado.web import HTTPError, RequestHandler

from ..errors import BadRequest, ClientError, TooLarge, Unauthorized
from .auth import Session

if TYPE_CHECKING:
    from .node import WebNode

__all__ = [
    "BaseHandler", "NotFoundHandler", "COOKIE_NAME", "find_token", "token_from_request", "query_argument",
]

log = logging.getLogger("squall.web")

COOKIE_NAME = "squall_token"

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "rate_limited",
}


def query_argument(request: HTTPServerRequest, name: str) -> str | None:
    """The last value of query parameter ``name``, or None."""
    values = request.query_arguments.get(name)
    return values[-1].decode("utf-8", "replace") if values else None


def token_from_request(request: HTTPServerRequest) -> tuple[str | None, bool]:
    """The token of a Tornado request; see :func:`find_token`."""
    return find_token(
        request.headers.get("Authorization", ""), query_argument(request, "token"),
        request.headers.get("Cookie"),
    )


def find_token(authorization: str, query_token: str | None, cookie: str | None) -> tuple[str | None, bool]:
    """The token from ``Authorization: Bearer``, ``?token=`` or the cookie.

    The flag says whether it came from the cookie, which a browser sends by
    itself and which therefore needs the XSRF check on writes.
    """
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip(), False
    if query_token:
        return query_token, False
    if not cookie:
        return None, False
    token = parse_cookie(cookie).get(COOKIE_NAME)
    return (token, True) if token else (None, False)


class BaseHandler(RequestHandler):
    node: WebNode

    def initialize(self, node: WebNode) -> None:
        self.node = node
        self._token: str | None = None
        self._by_cookie = False
        self.session: Session | None = None  # the caller's live session, if it sent one
        self._xsrf_checked = False

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    # -- authentication -------------------------------------------------

    async def prepare(self) -> None:
        length = self.request.headers.get("Content-Length")
        limit = self.node.settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooLarge(f"request body has {length} bytes, more than the limit of {limit}")
        # Whether the session is live may take a store read (the first time this
        # node sees the token); handlers then ask current_nick() without waiting.
        self._token, self._by_cookie = token_from_request(self.request)
        if self._token:
            self.session = await self.node.tokens.check(self._token, now=time.monotonic())

    def current_nick(self) -> str:
        """The caller's nick, or :class:`Unauthorized`."""
        if self.session is None:
            if not self._token:
                raise Unauthorized(
                    "no session token: send 'Authorization: Bearer <token>' from POST /api/session"
                )
            raise Unauthorized(
                "session token is invalid, expired or ended; create a new one with POST /api/session"
            )
        if self._by_cookie and not self._xsrf_checked and self.request.method not in ("GET", "HEAD", "OPTIONS"):
            super().check_xsrf_cookie()
            self._xsrf_checked = True
        return self.session.nick

    def check_xsrf_cookie(self) -> None:
        # Tornado would check every POST here; we check only cookie-authenticated
        # ones, in current_nick(), because a bearer token cannot be forged by a page.
        pass

    def json_body(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.request.body or b"null")
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="bad_json") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object", code="bad_json")
        return data

    # -- answers --------------------------------------------------------

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(value if isinstance(value, bytes) else orjson.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            body = exc.to_dict()
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, HTTPError) and status_code < 500:
            body = {"code": _HTTP_CODES.get(status_code, "bad_request"),
                    "reason": exc.log_message or self._reason}
        else:
            body = {"code": "internal", "reason": "the server failed to handle this request"}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(body))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ClientError):
            log.debug("%s %s: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise HTTPError(404, f"no route for {self.request.method} {self.request.path}")
