"""Who is asking, and under which name: the client address behind proxies,
and the ``Host`` names this server answers to. No I/O.

Client address. The TCP peer is the client unless it is one of
``trusted_proxies``; then ``X-Forwarded-For`` is read from the right — each
trusted proxy appends the address it received from — skipping addresses of
trusted proxies, and the first untrusted one is the client. Anything left of
it was written by the client itself and proves nothing. An entry that is not
an address stops the walk at the proxy that passed it on. Every transport
asks :func:`client_address`; rate limits key it with :func:`rate_key`, which
treats an IPv6 /64 (what one subscriber usually gets) as one address.

Metrics. ``/metrics`` is for the operator's scraper, never for strangers:
:func:`metrics_refusal` admits a client whose address is in ``metrics_allow``
(loopback by default), found as for everything else. A request that a proxy
carried, by its headers, from a peer that is not a trusted proxy is refused
whatever the peer's address: a proxy on this machine would otherwise hand
every stranger's request to /metrics from 127.0.0.1.

Hosts. A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS
rebinding) talks to Squall as a same-origin page: its ``Origin`` equals its
``Host``, so only the ``Host`` name gives it away. :class:`HostPolicy` allows
the configured names, and always IP literals, which no rebinding page can
have as its own origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = [
    "Network", "parse_networks", "parse_ip", "client_address", "forwarded_https", "rate_key",
    "HostPolicy", "default_allowed_hosts", "host_name", "metrics_refusal", "PROXY_HEADERS",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("", "0.0.0.0", "::")


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """``("10.0.0.0/8", "::1")`` → networks; ValueError naming the first bad entry."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or a header entry (``1.2.3.4``, ``1.2.3.4:80``,
    ``::1``, ``[::1]:80``), IPv4-mapped IPv6 as IPv4; None if it is none."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port, as some proxies write it
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address, given the TCP ``peer``, the ``X-Forwarded-For``
    header (repeated headers joined by commas) and the trusted proxies."""
    if not trusted:
        return peer
    hop = parse_ip(peer)
    if hop is None or not _trusted(hop, trusted):
        return str(hop) if hop is not None else peer
    for entry in reversed((forwarded_for or "").split(",")):
        if not entry.strip():
            continue
        address = parse_ip(entry)
        if address is None:
            break  # garbage: the last proxy we trust is all we know
        hop = address
        if not _trusted(address, trusted):
            break
    return str(hop)


def forwarded_https(peer: str, forwarded_proto: str | None, trusted: tuple[Network, ...]) -> bool:
    """Whether a trusted proxy says the client spoke HTTPS to it
    (``X-Forwarded-Proto``: the rightmost value, written by the proxy next to us)."""
    if not trusted or not forwarded_proto:
        return False
    hop = parse_ip(peer)
    if hop is None or not _trusted(hop, trusted):
        return False
    return forwarded_proto.rsplit(",", 1)[-1].strip().lower() == "https"


# Headers by which a proxy says whom it forwards for; their presence alone
# shows that a request came through one.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def metrics_refusal(
    peer: str, headers: Mapping[str, str], *, allow: tuple[Network, ...], trusted: tuple[Network, ...]
) -> str | None:
    """Why the client behind TCP ``peer`` may not read ``/metrics``, or None if it may.

    ``headers`` are the request's (any mapping with case-insensitive names).
    """
    hop = parse_ip(peer)
    if hop is None:
        return "metrics are served to IP clients only"
    if not _trusted(hop, trusted):
        for name in PROXY_HEADERS:
            if headers.get(name) is not None:
                return (
                    f"this request came through a proxy ({name}) at {hop}, which is not in"
                    " trusted_proxies: its client is unknown"
                )
    client = parse_ip(client_address(peer, headers.get("X-Forwarded-For"), trusted))
    if client is None or not _trusted(client, allow):
        return f"{client or peer} is not in metrics_allow"
    return None


def rate_key(address: str) -> str:
    """The key limits count ``address`` under: itself, or its /64 for IPv6."""
    if ":" not in address:
        return address
    parsed = parse_ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address


def host_name(host: str) -> str:
    """The name of a ``Host`` header value: no port, no brackets, lower case, no final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def default_allowed_hosts(host: str, public_url: str) -> tuple[str, ...]:
    """The names allowed when ``allowed_hosts`` is empty: the host of
    ``public_url``, the listening ``host`` if it is a name, and ``localhost``
    when listening on loopback or on every interface."""
    names: list[str] = []
    if public_url:
        public = urlsplit(public_url).hostname
        if public:
            names.append(public)
    bound = host_name(host)
    if bound in _WILDCARD_BINDS or bound in _LOOPBACK_NAMES or bound.startswith("127."):
        names.append("localhost")
    elif bound:
        names.append(bound)
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names))


class HostPolicy:
    """Which ``Host`` names a request may carry.

    ``names`` are host names, ``*.example.com`` for every subdomain of
    example.com, or ``*`` for any. IP literals are always allowed (see the
    module's docstring); so is a request without ``Host`` (HTTP/1.0), which no
    browser sends.
    """

    __slots__ = ("names", "suffixes", "any", "_verdicts")

    # Verdicts on names seen are cached up to this many; then the cache starts over.
    CACHE_SIZE = 1024

    def __init__(self, names: Iterable[str]) -> None:
        cleaned = [name.strip().lower().rstrip(".") for name in names if name.strip()]
        self.any = "*" in cleaned
        self.suffixes = tuple(name[1:] for name in cleaned if name.startswith("*."))
        self.names = frozenset(name for name in cleaned if not name.startswith("*"))
        self._verdicts: dict[str, bool] = {}

    def allows(self, host: str | None) -> bool:
        if not host or self.any:
            return True
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._judge(host_name(host))
            if len(self._verdicts) >= self.CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _judge(self, name: str) -> bool:
        if name in self.names or any(name.endswith(suffix) for suffix in self.suffixes):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def refusal_reason(self, host: str) -> str:
        listed = ", ".join(sorted(self.names) + [f"*{s}" for s in self.suffixes]) or "none"
        return (
            f"this server does not answer to the host name {host_name(host)[:100]!r}"
            f" (allowed: {listed}, and IP addresses; see allowed_hosts)"
        )
