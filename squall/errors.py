"""Squall's exceptions, in one hierarchy.

.. code-block:: text

    SquallError
    ├── ClientError            a peer sent something we refuse; carries a wire ``code``
    │   ├── BadRequest         malformed or out-of-range input (HTTP 400)
    │   ├── Unauthorized       missing, forged or expired token (HTTP 401, close 4001)
    │   ├── Forbidden          refused on principle: a foreign Origin, WebSocket off (HTTP 403)
    │   ├── NotFound           unknown route or resource (HTTP 404)
    │   ├── Misdirected        a ``Host`` this server does not answer to (HTTP 421)
    │   ├── Conflict           a nick someone else holds or looks like (HTTP 409)
    │   ├── TooLarge           a request body over its limit (HTTP 413)
    │   ├── UpgradeRequired    a WebSocket version other than 13 (HTTP 426)
    │   ├── Rejected           the processor's pipeline refused a message (HTTP 422)
    │   ├── RateLimited        too many sends, joins or sessions too fast (HTTP 429)
    │   │   └── TooManyConnections  too many open connections, per address or in all (429/503)
    │   ├── Unavailable        the processor could not be reached in time (HTTP 503)
    │   │   └── StoreUnavailable  the database could not be reached, even on a fresh connection
    │   └── Internal           a server fault, told without details (HTTP 500)
    ├── LineTooLong            a processor-link line went over ``max_line`` bytes
    ├── HandshakeFailed        a processor-link peer that did not authenticate; carries a ``code``
    ├── FilterFileError        a keyword-filter file that cannot be used; names the line
    └── ConfigError            settings that cannot work; raised at start-up

A :class:`ClientError` is the only kind whose text reaches a peer. Anything else
that escapes a handler is logged and answered with code ``internal`` and no detail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "SquallError",
    "ClientError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Misdirected",
    "Conflict",
    "TooLarge",
    "UpgradeRequired",
    "Rejected",
    "RateLimited",
    "TooManyConnections",
    "retry_after_header",
    "Unavailable",
    "StoreUnavailable",
    "Internal",
    "LineTooLong",
    "HandshakeFailed",
    "FilterFileError",
    "ConfigError",
]


class SquallError(Exception):
    """Base class of every exception Squall raises on purpose."""


class ClientError(SquallError):
    """Input from a peer that Squall refuses.

    ``code`` is the stable machine-readable name sent on the wire; ``reason`` is a
    sentence for a person, built from the facts of this input. ``id`` is the
    client message id of the send it refuses, whenever that could be read, so
    that a client can tell which of its sends failed.
    """

    status = 400
    default_code = "bad_request"
    headers: Mapping[str, str] = MappingProxyType({})  # sent with the HTTP error answer

    def __init__(self, reason: str, *, code: str | None = None, id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code or self.default_code
        self.reason = reason
        self.id = id

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"code": self.code, "reason": self.reason}
        if self.id is not None:
            answer["id"] = self.id
        return answer


class BadRequest(ClientError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ClientError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    default_code = "forbidden"


class NotFound(ClientError):
    status = 404
    default_code = "not_found"


class Misdirected(ClientError):
    """RFC 9110 §15.5.20: the ``Host`` names a site this server does not serve
    (a DNS-rebinding page, or a proxy sending the wrong name)."""

    status = 421
    default_code = "bad_host"


class Conflict(ClientError):
    status = 409
    default_code = "conflict"


class TooLarge(ClientError):
    status = 413
    default_code = "too_large"


class UpgradeRequired(ClientError):
    status = 426
    default_code = "bad_request"
    # RFC 6455 §4.4: name the version we speak.
    headers = MappingProxyType({"Sec-WebSocket-Version": "13"})


class Rejected(ClientError):
    """A pipeline stage refused the message (``filtered``, ``body_too_long`` …)."""

    status = 422
    default_code = "rejected"


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds (RFC 9110 §10.2.3): round up, never 0."""
    return str(max(1, math.ceil(seconds)))


class RateLimited(ClientError):
    """Too many events too fast. ``retry_after`` (seconds) is when the limit
    named ``limit`` will have a token again; both go on the wire."""

    status = 429
    default_code = "rate_limited"

    def __init__(self, reason: str, *, retry_after: float = 1.0, limit: str = "", code: str | None = None) -> None:
        super().__init__(reason, code=code)
        # Rounded up to the millisecond: retrying at that moment succeeds.
        self.retry_after = math.ceil(max(0.0, retry_after) * 1000) / 1000
        self.limit = limit
        self.headers = MappingProxyType({"Retry-After": retry_after_header(self.retry_after)})

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "limit": self.limit, "retry_after": self.retry_after}


class TooManyConnections(RateLimited):
    """A connection over ``max_connections_per_ip`` (429) or ``max_connections``
    (503), refused before any upgrade. When a slot frees is unknown, so
    ``retry_after`` is a fixed hint."""

    default_code = "too_many_connections"
    RETRY_SECONDS = 5.0

    def __init__(self, reason: str, *, limit: str, status: int) -> None:
        super().__init__(reason, retry_after=self.RETRY_SECONDS, limit=limit)
        self.status = status


class Unavailable(ClientError):
    status = 503
    default_code = "unavailable"


class StoreUnavailable(Unavailable):
    """The store lost its database connection and could not do the operation on
    a fresh one either (PostgreSQL restarted, its backends terminated, the
    network down, ``database_timeout`` passed). The peer may retry: a send with
    the same id is stored once, whatever the first try did. The cause is
    logged; the reason sent is always the same."""

    REASON = "the database is unavailable; retry (a send with the same id)"

    def __init__(self) -> None:
        super().__init__(self.REASON)


class Internal(ClientError):
    """A fault on our side; the reason never carries details (they are logged)."""

    status = 500
    default_code = "internal"


class LineTooLong(SquallError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"line with at least {size} bytes exceeds limit of {limit} bytes")
        self.size = size
        self.limit = limit


class HandshakeFailed(SquallError):
    """A processor-link peer that did not prove the shared key (docs/protocol.md §6).

    ``code`` is the wire code of the error line sent before closing
    (``hello_expected``, ``bad_version``, ``bad_hello``, ``bad_proof``, ``hello_timeout``).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FilterFileError(SquallError):
    """A keyword-filter file that cannot be read or parsed.

    ``lineno`` is 1-based, or ``None`` when the whole file is at fault (missing,
    unreadable). The old list stays in force when a reload meets this error.
    """

    def __init__(self, path: str, lineno: int | None, reason: str) -> None:
        where = f"{path}:{lineno}" if lineno is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.lineno = lineno
        self.reason = reason


class ConfigError(SquallError):
    """A setting that cannot work, found at start-up."""

    exit_status = 2  # what `squall` exits with; `squall run` does not retry a child that did
