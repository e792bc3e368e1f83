"""Link previews: fetch a page's title and Open Graph fields, carefully.

Theory of operation
-------------------

A preview fetch is the one place where a chat user makes the server open a
connection of the user's choosing, so every step has a bound:

* **Where:** only ``http``/``https`` URLs. The host is resolved by
  :class:`_GuardedResolver`, which the HTTP client itself uses to connect: it
  resolves through Tornado's default resolver (the loop's ``getaddrinfo``), and
  refuses the whole host if *any* address is loopback, private, link-local,
  multicast, reserved, unspecified or otherwise not global (IPv4-mapped IPv6 is
  checked as IPv4). The client connects only to the addresses that passed, in the
  same step, so there is no second lookup for a DNS-rebinding attacker to
  answer differently. Refusal happens before any connection is attempted.
* **Allow-list:** entries are CIDRs (``10.1.0.0/16``, ``::1/128``) or hosts
  (``intranet.example``, ``127.0.0.1:8080``). A host entry lets that host (and
  port, if given) through whatever it resolves to; a CIDR lets addresses inside
  it through.
* **Redirects:** followed by hand, at most ``max_redirects`` (3) hops, and each
  new URL goes through every check again.
* **How long:** ``timeout`` (5 s) for the whole fetch, redirects included; each
  hop gets what is left.
* **How much:** at most ``max_bytes`` (1 MiB) of body, counted *after*
  decompression: the body is taken chunk by chunk as the client decompresses it
  (:class:`_BoundedBody`), and the fetch fails at the first byte past the limit, so
  a gzip bomb (300 KiB that inflate to gigabytes) costs one chunk past 1 MiB, not
  the gigabytes. The client's own ``max_body_size`` bounds the compressed bytes, and
  since Tornado 6.5.6 the decompressed ones too (CVE-2026-49855; earlier releases
  inflated without limit, hence ``tornado>=6.5.6`` in the requirements). Bodies that
  are not ``text/html`` or ``application/xhtml+xml`` are not kept.
* **How many:** at most ``max_concurrent`` (4) fetches at once; the rest wait.
* **How often:** results, failures included, are cached per URL in a bounded LRU
  (``cache_size`` entries; ``cache_ttl`` seconds for previews, ``failure_ttl`` for
  failures), with the clock passed in.

Remote failures never raise: :meth:`PreviewFetcher.fetch` returns None and logs
at debug level. The page is parsed with :class:`html.parser.HTMLParser` after
decoding with the charset of the Content-Type header, else of a ``<meta>`` near
the top, else UTF-8 with replacement.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from squall.message import LinkPreview

__all__ = ["PreviewFetcher", "AllowList", "parse_preview", "PreviewRefused"]

log = logging.getLogger(__name__)

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
# Longest title/description kept; a preview is a line or two, not the page.
MAX_FIELD = 300
MAX_URL = 2048
USER_AGENT = "SquallPreview/0.1 (+link previews for chat)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PreviewRefused(Exception):
    """A URL or address the fetcher will not touch; never leaves this module."""


class BodyTooLarge(Exception):
    """A response body past ``max_bytes`` once decompressed; never leaves this module."""


class _BoundedBody:
    """Collects a response body as the client hands it over, decompressed, up to
    ``limit`` bytes; one more byte raises :class:`BodyTooLarge`, which makes the
    client fail the fetch and close the connection."""

    __slots__ = ("limit", "size", "chunks")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def receive(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks.clear()
            raise BodyTooLarge(f"response body exceeds limit of {self.limit} bytes once decompressed")
        self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


@dataclasses.dataclass(frozen=True, slots=True)
class AllowList:
    """Exceptions to the address rules, from configuration.

    Build it with :meth:`parse` from strings such as ``"10.0.0.0/8"``,
    ``"::1"``, ``"wiki.internal"`` or ``"127.0.0.1:8080"``.
    """

    networks: tuple[Network, ...] = ()
    hosts: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        networks: list[Network] = []
        hosts: set[tuple[str, int | None]] = set()
        for raw in entries:
            entry = raw.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            parts = urlsplit("//" + entry)
            try:
                port = parts.port
            except ValueError:
                raise ValueError(f"bad allow-list entry {raw!r}") from None
            if not parts.hostname or parts.path or parts.query:
                raise ValueError(f"bad allow-list entry {raw!r}")
            hosts.add((parts.hostname.lower().rstrip("."), port))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".").strip("[]")
        return (host, port) in self.hosts or (host, None) in self.hosts

    def allows_address(self, address: Address) -> bool:
        return any(address in net for net in self.networks)


def _refused(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


class _GuardedResolver(Resolver):
    """Resolves, then drops the host unless every address passes the rules."""

    def initialize(self, *, allow: AllowList, inner: Resolver) -> None:
        self.allow = allow
        self.inner = inner

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        results = await self.inner.resolve(host, port, family)
        if self.allow.allows_host(host, port):
            return results
        for _family, sockaddr in results:
            address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if _refused(address) and not self.allow.allows_address(address):
                raise PreviewRefused(f"{host} resolves to refused address {address}")
        return results

    def close(self) -> None:
        self.inner.close()


def _check_url(url: str, allow: AllowList) -> None:
    if len(url) > MAX_URL:
        raise PreviewRefused("URL too long")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PreviewRefused(f"not an http(s) URL: {url[:100]!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # Literal addresses are refused without even asking the resolver.
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if allow.allows_host(parts.hostname, port) or allow.allows_address(address):
        return
    if _refused(address):
        raise PreviewRefused(f"refused address {address}")


class _Meta(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: dict[str, str] = {}
        self.title: list[str] | None = None
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and "title" not in self.fields and self.title is None:
            self.title = []
        elif tag == "meta":
            a = {k.lower(): v or "" for k, v in attrs}
            key = (a.get("property") or a.get("name") or "").strip().lower()
            if key and "content" in a:
                self.fields.setdefault(key, a["content"])
        elif tag == "body":
            self.done = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.title is not None:
            self.fields.setdefault("title", "".join(self.title))
            self.title = None

    def handle_data(self, data: str) -> None:
        if self.title is not None:
            self.title.append(data)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    if len(value) > MAX_FIELD:
        value = value[: MAX_FIELD - 1].rstrip() + "…"
    return value or None


def _decode(body: bytes, charset: str | None) -> str:
    for candidate in (charset, _sniff_charset(body)):
        if candidate:
            try:
                return body.decode(codecs.lookup(candidate).name, errors="replace")
            except LookupError:
                continue
    return body.decode("utf-8", errors="replace")


def _sniff_charset(body: bytes) -> str | None:
    m = _META_CHARSET.search(body[:2048])
    return m.group(1).decode("ascii") if m else None


def parse_preview(url: str, body: bytes, *, charset: str | None = None) -> LinkPreview | None:
    """Build a preview of ``url`` from its HTML; None if the page says nothing useful.

    ``url`` is the page's final URL, used to resolve a relative ``og:image``.
    """
    parser = _Meta()
    text = _decode(body, charset)
    # The head is all we need; stop feeding at <body> to keep big pages cheap.
    for i in range(0, len(text), 8192):
        parser.feed(text[i : i + 8192])
        if parser.done:
            break
    if parser.title is not None:
        parser.fields.setdefault("title", "".join(parser.title))
    f = parser.fields
    title = _clean(f.get("og:title") or f.get("twitter:title") or f.get("title"))
    description = _clean(
        f.get("og:description") or f.get("twitter:description") or f.get("description")
    )
    image = f.get("og:image") or f.get("twitter:image")
    if image:
        image = urljoin(url, image.strip())
        if urlsplit(image).scheme not in ("http", "https") or len(image) > MAX_URL:
            image = None
    site_name = _clean(f.get("og:site_name"))
    if title is None and description is None:
        return None
    return LinkPreview(url, title, description, image or None, site_name)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: collections.OrderedDict[str, tuple[float, LinkPreview | None]] = (
            collections.OrderedDict()
        )

    def get(self, key: str, now: float) -> tuple[bool, LinkPreview | None]:
        entry = self.items.get(key)
        if entry is None:
            return False, None
        if entry[0] <= now:
            del self.items[key]
            return False, None
        self.items.move_to_end(key)
        return True, entry[1]

    def put(self, key: str, value: LinkPreview | None, expires: float) -> None:
        self.items[key] = (expires, value)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class PreviewFetcher:
    """Fetches link previews with the limits in the module docstring.

    Create it inside the running event loop, call ``await fetch(url)`` for each
    link of a new message (skip drafts marked ``duplicate``), and :meth:`close`
    it at shutdown.

    :param allow: exceptions to the address rules (``AllowList.parse([...])``).
    :param timeout: seconds for a whole fetch including redirects; default 5.0.
    :param max_bytes: largest body read, in bytes; default 1 MiB.
    :param max_redirects: redirect hops followed; default 3.
    :param max_concurrent: fetches in flight at once; default 4.
    :param cache_size: URLs remembered; default 1024.
    :param cache_ttl: seconds a preview is reused; default 3600.
    :param failure_ttl: seconds a failure is remembered; default 300.
    :param clock: monotonic seconds; default :func:`time.monotonic`.
    """

    def __init__(
        self,
        *,
        allow: AllowList = AllowList(),
        timeout: float = 5.0,
        max_bytes: int = 1 << 20,
        max_redirects: int = 3,
        max_concurrent: int = 4,
        cache_size: int = 1024,
        cache_ttl: float = 3600.0,
        failure_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver | None = None,
        user_agent: str = USER_AGENT,
        logger: logging.Logger | None = None,
    ) -> None:
        self.allow = allow
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.cache_ttl = cache_ttl
        self.failure_ttl = failure_ttl
        self.clock = clock
        self.user_agent = user_agent
        self.logger = logger or log
        self._cache = _LRU(cache_size)
        self._slots = asyncio.Semaphore(max_concurrent)
        self.active = 0
        self._max_concurrent = max_concurrent
        self._resolver = _GuardedResolver(allow=allow, inner=resolver or DefaultLoopResolver())
        self._client: SimpleAsyncHTTPClient | None = None

    def _http(self) -> SimpleAsyncHTTPClient:
        # Made on first use so that the client binds to the loop that runs fetches.
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(
                force_instance=True,
                max_clients=self._max_concurrent,
                resolver=self._resolver,
                max_body_size=self.max_bytes,
                max_header_size=64 * 1024,
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP client; fetches in flight fail (and return None)."""
        if self._client is not None:
            self._client.close()
        self._resolver.close()

    async def fetch(self, url: str) -> LinkPreview | None:
        """Return a preview of ``url``, or None for anything that went wrong."""
        hit, cached = self._cache.get(url, self.clock())
        if hit:
            return cached
        async with self._slots:
            self.active += 1
            try:
                result = await self._fetch(url)
            except Exception as exc:  # remote failures of every kind end here
                self.logger.debug("no preview for %s: %s", url, exc)
                result = None
            finally:
                self.active -= 1
        ttl = self.cache_ttl if result is not None else self.failure_ttl
        self._cache.put(url, result, self.clock() + ttl)
        return result

    async def _fetch(self, url: str) -> LinkPreview | None:
        deadline = time.monotonic() + self.timeout
        current = url
        for _hop in range(self.max_redirects + 1):
            _check_url(current, self.allow)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("preview deadline passed")
            body = _BoundedBody(self.max_bytes)
            response = await self._http().fetch(
                self._request(current, remaining, body), raise_error=False
            )
            if response.code in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    return None
                current = urljoin(current, location.strip())
                continue
            return self._preview(url, response, body.value())
        self.logger.debug("no preview for %s: more than %d redirects", url, self.max_redirects)
        return None

    def _request(self, url: str, timeout: float, body: _BoundedBody) -> HTTPRequest:
        return HTTPRequest(
            url,
            follow_redirects=False,
            connect_timeout=timeout,
            request_timeout=timeout,
            decompress_response=True,
            streaming_callback=body.receive,
            user_agent=self.user_agent,
            headers=HTTPHeaders({"Accept": "text/html,application/xhtml+xml;q=0.9"}),
        )

    def _preview(self, url: str, response: HTTPResponse, body: bytes) -> LinkPreview | None:
        if response.error is not None and response.code >= 599:
            raise response.error
        if response.code != 200:
            self.logger.debug("no preview for %s: HTTP %d", url, response.code)
            return None
        ctype, params = _content_type(response.headers.get("Content-Type", ""))
        if ctype not in _HTML_TYPES:
            self.logger.debug("no preview for %s: content type %r", url, ctype)
            return None
        preview = parse_preview(response.effective_url, body, charset=params)
        return dataclasses.replace(preview, url=url) if preview else None


def _content_type(value: str) -> tuple[str, str | None]:
    main, _, rest = value.partition(";")
    charset = None
    for param in rest.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return main.strip().lower(), charset
