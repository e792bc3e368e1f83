"""HTTP/1.1 for the long-poll fast path: request heads in, responses out, no I/O.

Long-poll GETs are the web node's busiest requests — one per message per
poller — so once a connection has made one, the node serves it itself
(``web/polling.py``) instead of through Tornado's per-request machinery. This
module reads those requests' heads and writes their answers.

It is deliberately narrow. :func:`parse_simple_get` accepts a ``GET`` with an
origin-form target, well-formed header lines and no body, and nothing else:
another method, a body, obsolete line folding, two different
``Content-Length`` values, a stray control character — anything it does not
fully understand — comes back as ``None``, and the connection is handed back to
Tornado, whose complete parser reads it (a poll with a body is then served
once Tornado has read and dropped the body; see ``web/longpoll.py``).

Some heads are understood well enough to refuse (:attr:`RequestHead.refusal`):
two ``Host`` headers (RFC 9112 §3.2: answer 400) and two ``Authorization``
headers that differ. Of two different credentials neither is safe to pick: a
proxy that adds its own, or a client tricked into sending a second one, would
let whoever controls the one picked act as that user, and another parser on the
way (a proxy, Tornado's own ``HTTPHeaders.get`` that joins them with a comma)
may pick the other. Identical copies are one credential and are served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

__all__ = [
    "MAX_HEAD_BYTES", "RequestHead", "head_end", "parse_simple_get", "query_params", "response",
]

# As Tornado's default max_header_size: a longer head goes to Tornado, which refuses it.
MAX_HEAD_BYTES = 64 * 1024

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    421: "Misdirected Request", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}

_REQUEST_LINE = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.([01])\r\n")
# RFC 9110 field-name tokens; values of visible ASCII, tabs, spaces and obs-text.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
# Headers that must not appear twice with different values (see the module docstring).
_SINGLE = frozenset({"host", "content-length", "authorization"})


class RequestHead:
    """What the fast path needs of a request: target, headers, keep-alive.

    ``has_body``: the head announces a body (``Content-Length`` other than 0,
    or ``Transfer-Encoding``), which this module does not read. ``refusal``: why
    the request must be answered 400, or None.
    """

    __slots__ = ("target", "headers", "keep_alive", "has_body", "refusal")

    def __init__(
        self, target: str, headers: dict[str, str], keep_alive: bool, *,
        has_body: bool = False, refusal: str | None = None,
    ) -> None:
        self.target = target
        self.headers = headers  # lower-case names
        self.keep_alive = keep_alive
        self.has_body = has_body
        self.refusal = refusal

    @classmethod
    def from_fields(cls, target: str, minor_version: int, fields: list[tuple[str, str]]) -> RequestHead | None:
        """A GET's head from its target, HTTP minor version and header fields;
        None if its framing is for Tornado to judge (two different lengths)."""
        headers: dict[str, str] = {}
        refusal = None
        for name, value in fields:
            name = name.lower()
            if name in headers:
                if name in _SINGLE:
                    if name == "host":
                        refusal = "the request has more than one Host header"
                    elif value != headers[name]:
                        if name == "content-length":
                            return None
                        refusal = f"the request has {name.title()} headers with different values"
                    continue  # an identical copy says nothing new
                # Cookie lines join with "; " (RFC 6265), every other field with ", ".
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
        # A GET's body means nothing to a poll (RFC 9110 §9.3.1), but it is
        # there, and must be read past; `Expect: 100-continue` only asks for
        # the go-ahead to send it, which whoever reads the body gives.
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep_alive = "close" not in connection if minor_version == 1 else "keep-alive" in connection
        return cls(target, headers, keep_alive, has_body=has_body, refusal=refusal)


def head_end(buffer: bytes | bytearray) -> int:
    """The index just past the blank line ending the first request head in
    ``buffer``, or -1 if it is not all there yet."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_simple_get(head: bytes) -> RequestHead | None:
    """Parse one request head (``head`` ends with its blank line), or return
    None if it is anything but a plain, body-less ``GET``. Check
    :attr:`RequestHead.refusal` before serving it."""
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    fields_end = len(head) - 2
    if _HEADER_LINES.fullmatch(head, line.end(), fields_end) is None:
        return None
    fields = []
    for field in head[line.end() : fields_end - 2].split(b"\r\n") if fields_end > line.end() else ():
        name, _, value = field.partition(b":")
        fields.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    parsed = RequestHead.from_fields(line.group(1).decode("ascii"), int(line.group(2)), fields)
    return None if parsed is None or parsed.has_body else parsed


def query_params(query: str) -> dict[str, str]:
    """``a=1&b=x+y`` → ``{"a": "1", "b": "x y"}``; the last of a repeated name wins."""
    params: dict[str, str] = {}
    if not query:
        return params
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        if name:
            params[name] = value
    return params


def response(
    status: int, body: bytes, *, keep_alive: bool, headers: Mapping[str, str] | None = None
) -> bytes:
    """A complete JSON response: status line, headers (``headers`` besides ours) and ``body``."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()).encode("latin-1")
    return b"HTTP/1.1 %d %s\r\n%s%sContent-Type: application/json; charset=utf-8\r\n" \
        b"Content-Length: %d\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n%s" % (
            status, REASONS.get(status, "Error").encode(), b"" if keep_alive else b"Connection: close\r\n",
            extra, len(body), body,
        )
