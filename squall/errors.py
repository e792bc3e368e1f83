"""Squall's exceptions, in one hierarchy.

.. code-block:: text

    SquallError
    ├── ClientError            a peer sent something we refuse; carries a wire ``code``
    │   ├── BadRequest         malformed or out-of-range input (HTTP 400)
    │   ├── Unauthorized       missing, forged or expired token (HTTP 401, close 4001)
    │   ├── Forbidden          refused on principle: a foreign Origin, WebSocket off (HTTP 403)
    │   ├── NotFound           unknown route or resource (HTTP 404)
    │   ├── Conflict           a nick someone else holds or looks like (HTTP 409)
    │   ├── TooLarge           a request body over its limit (HTTP 413)
    │   ├── UpgradeRequired    a WebSocket version other than 13 (HTTP 426)
    │   ├── Rejected           the processor's pipeline refused a message (HTTP 422)
    │   ├── RateLimited        too many sends too fast (HTTP 429)
    │   ├── Unavailable        the processor could not be reached in time (HTTP 503)
    │   └── Internal           a server fault, told without details (HTTP 500)
    ├── LineTooLong            a processor-link line went over ``max_line`` bytes
    ├── FilterFileError        a keyword-filter file that cannot be used; names the line
    └── ConfigError            settings that cannot work; raised at start-up

A :class:`ClientError` is the only kind whose text reaches a peer. Anything else
that escapes a handler is logged and answered with code ``internal`` and no detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "SquallError",
    "ClientError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "UpgradeRequired",
    "Rejected",
    "RateLimited",
    "Unavailable",
    "Internal",
    "LineTooLong",
    "FilterFileError",
    "ConfigError",
]


class SquallError(Exception):
    """Base class of every exception Squall raises on purpose."""


class ClientError(SquallError):
    """Input from a peer that Squall refuses.

    ``code`` is the stable machine-readable name sent on the wire; ``reason`` is a
    sentence for a person, built from the facts of this input.
    """

    status = 400
    default_code = "bad_request"
    headers: Mapping[str, str] = MappingProxyType({})  # sent with the HTTP error answer

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code or self.default_code
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


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


class RateLimited(ClientError):
    status = 429
    default_code = "rate_limited"


class Unavailable(ClientError):
    status = 503
    default_code = "unavailable"


class Internal(ClientError):
    """A fault on our side; the reason never carries details (they are logged)."""

    status = 500
    default_code = "internal"


class LineTooLong(SquallError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"line with at least {size} bytes exceeds limit of {limit} bytes")
        self.size = size
        self.limit = limit


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
