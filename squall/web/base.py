"""What every HTTP handler shares: JSON errors, authentication, the XSRF rule."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson
from tornado.httputil import HTTPServerRequest, parse_cookie
from tornado.log import app_log
from tornado.web import HTTPError, RequestHandler

from ..address import rate_key
from ..errors import BadRequest, ClientError, TooLarge, Unauthorized
from .auth import Session

if TYPE_CHECKING:
    from .node import WebNode

__all__ = [
    "BaseHandler", "JSONErrors", "NotFoundHandler", "COOKIE_NAME", "find_token", "token_from_request",
    "query_argument", "redact_uri",
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


def redact_uri(uri: str) -> str:
    """``uri`` with the value of every ``token`` query parameter replaced, for logs.

    A session token is a bearer credential: whoever reads it in a log can be
    that user until it expires. The name is compared decoded, as the server
    reads it (``%74oken=`` is a token too).
    """
    path, mark, query = uri.partition("?")
    if not mark or "oken" not in query and "%" not in query:
        return uri
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        name, equals, _value = pair.partition("=")
        if equals and unquote_plus(name) == "token":
            pairs[index] = f"{name}=[redacted]"
    return f"{path}?{'&'.join(pairs)}"


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


def _message(exc: HTTPError) -> str | None:
    """An HTTPError's message with its arguments filled in (Tornado keeps them apart)."""
    if exc.log_message and exc.args:
        try:
            return exc.log_message % exc.args
        except (TypeError, ValueError):
            pass
    return exc.log_message


class JSONErrors(RequestHandler):
    """Errors as ``{"code", "reason"}`` JSON, and request logs without tokens."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            body = exc.to_dict()
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, HTTPError) and status_code < 500:
            body = {"code": _HTTP_CODES.get(status_code, "bad_request"), "reason": _message(exc) or self._reason}
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
        elif isinstance(value, HTTPError):
            super().log_exception(typ, value, tb)
        else:
            # Tornado's own line adds repr(request), whose URI holds any ?token=.
            app_log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact_uri(self.request.uri or '')} ({self.request.remote_ip})"


class BaseHandler(JSONErrors):
    node: WebNode

    def initialize(self, node: WebNode) -> None:
        self.node = node
        self._token: str | None = None
        self._by_cookie = False
        self._client_ip: str | None = None
        self.session: Session | None = None  # the caller's live session, if it sent one
        self._xsrf_checked = False

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    # -- authentication -------------------------------------------------

    async def prepare(self) -> None:
        self.node.check_host(self.request.headers.get("Host"))
        length = self.request.headers.get("Content-Length")
        limit = self.body_limit()
        if length is not None and length.isdigit() and int(length) > limit:
            raise TooLarge(f"request body has {length} bytes, more than the limit of {limit}")
        # Whether the session is live may take a store read (the first time this
        # node sees the token); handlers then ask current_nick() without waiting.
        self._token, self._by_cookie = token_from_request(self.request)
        if self._token:
            self.session = await self.node.tokens.check(self._token, now=time.monotonic())

    def body_limit(self) -> int:
        """The largest request body this handler takes, in bytes (``max_body_bytes``)."""
        return self.node.settings.max_body_bytes

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

    # -- who is asking ---------------------------------------------------

    @property
    def client_ip(self) -> str:
        """The client's address: the peer, or what trusted proxies say (``--trusted-proxies``)."""
        if self._client_ip is None:
            self._client_ip = self.node.client_address(
                self.request.remote_ip or "", self.request.headers.get("X-Forwarded-For")
            )
        return self._client_ip

    @property
    def address_key(self) -> str:
        """:attr:`client_ip` as per-address limits count it (an IPv6 /64 is one address)."""
        return rate_key(self.client_ip)

    @property
    def via_https(self) -> bool:
        """Whether the client reached us over HTTPS: set ``secure`` on cookies then."""
        return self.node.via_https(self.request.remote_ip or "", self.request.headers.get("X-Forwarded-Proto"))

    def set_cookie(self, name: str, value: str | bytes, *args: Any, **kwargs: Any) -> None:
        # Every cookie of ours (the _xsrf one Tornado sets too) is Secure when the client came over HTTPS.
        kwargs.setdefault("secure", self.via_https)
        super().set_cookie(name, value, *args, **kwargs)

    def check_session_rate(self) -> None:
        """Charge a new session or account to the client's address, or raise ``RateLimited``."""
        self.node.limits.check_session(self.address_key, now=time.monotonic())

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


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        self.node.check_host(self.request.headers.get("Host"))
        raise HTTPError(404, f"no route for {self.request.method} {self.request.path}")
