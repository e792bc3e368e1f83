"""Limits without I/O: rates per user, per address and per connection, open
connections, outbound back-pressure, and the count of every refusal.

Theory of operation. A rate is a token bucket (:class:`TokenBucket`): ``burst``
events at once, then ``rate`` a second. Buckets keyed by a user or an address
live in a :class:`RateTable`; one rule bounds every table: a bucket that has
refilled completely says nothing a fresh bucket would not, so :meth:`RateTable.sweep`
drops it, and a table never holds more than ``max_keys`` buckets — once full,
newcomers share one *overflow* bucket until a sweep makes room. A flood of
distinct addresses or nicks therefore costs bounded memory and, at worst,
throttles the newcomers together; it never resets the bucket of someone
already being limited (an evicting cache would).

:class:`Limits` holds the node's tables and is what the transports call: each
check either passes or raises :class:`~squall.errors.RateLimited` (or
:class:`~squall.errors.TooManyConnections`) with the facts, and counts the
refusal in :class:`Counters`. An event charged to several buckets (a send: its
user's and its address's) takes a token from all or from none. Time is always
an argument, so all of this is tested without an event loop.

What is limited, and why:

* sends, per user over all connections and transports (one nick on fifty
  sockets is still one person), and per address (many nicks from one place);
* joins, per WebSocket connection and per user (each join tells the whole
  room; a new connection starts with a full bucket, so the per-user one is what
  makes reconnecting useless); an SSE stream is a join;
* new sessions and accounts, per address (each may add a row to the users table);
* typing over HTTP, per user and room, dropped quietly as over WebSocket;
* open connections, per address and in all: WebSocket, SSE and long-poll ones
  by client address, and those Tornado holds by TCP peer.
"""

from __future__ import annotations

import dataclasses
import enum

from .errors import RateLimited, TooManyConnections

__all__ = [
    "TokenBucket", "Rate", "RateTable", "ConnectionTable", "Counters", "Limits",
    "Outbound", "outbound_verdict", "low_water", "high_water", "OVERFLOW_KEY", "TYPING_INTERVAL",
]

# A user may announce typing in a room at most once per this many seconds over
# HTTP; more are dropped quietly, as over WebSocket (web/websocket.py).
TYPING_INTERVAL = 2.0

# The key of the bucket that newcomers share while a table is full.
OVERFLOW_KEY = "\x00overflow"


class Outbound(enum.Enum):
    SEND = "send"
    DROP = "drop"  # an ephemeral event the client can do without
    CUT = "cut"  # the client is too far behind: close it, it resumes with `since`


def low_water(limit: int) -> int:
    """At or below this many queued bytes a client gets backlog and ephemeral
    events again, and a client whose reading was paused is read again."""
    return limit // 2


def high_water(limit: int) -> int:
    """Above this many queued bytes a client's input is no longer read.

    Everything written to a client counts, replies to its own frames as much as
    broadcasts: a client that sends without reading its answers is paused here,
    and TCP pushes back on it. The gap up to ``limit`` leaves room for what is
    already under way (the rest of the frames of the read in progress, acks of
    sends in flight); a reply that would go past ``limit`` cuts the client off
    as a message would. Paused at ``high_water``, read again at ``low_water``:
    the gap between them keeps a client at the edge from flapping.
    """
    return limit * 3 // 4


def outbound_verdict(*, buffered: int, size: int, limit: int, ephemeral: bool) -> Outbound:
    """What to do with ``size`` more bytes for a client that has ``buffered`` queued.

    One rule for every transport: ephemeral events (presence, typing, previews)
    are dropped once the queue is over its low-water mark; a message that would
    take it past ``limit`` cuts the client off, and it resumes without loss.
    """
    if ephemeral:
        return Outbound.DROP if buffered > low_water(limit) else Outbound.SEND
    return Outbound.CUT if buffered + size > limit else Outbound.SEND


class TokenBucket:
    """Allows ``burst`` events at once and ``rate`` per second after that."""

    __slots__ = ("rate", "burst", "_tokens", "stamp")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self.stamp = now

    def refill(self, *, now: float) -> None:
        """Add what ``rate`` has earned since the last call (never more than ``burst``)."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)

    def ready(self) -> bool:
        """Whether a token is there, as of the last refill."""
        return self._tokens >= 1.0

    def spend(self) -> None:
        """Take the token :meth:`ready` said is there."""
        self._tokens -= 1.0

    def take(self, *, now: float) -> bool:
        """Spend one token if there is one; False means "refuse this event"."""
        self.refill(now=now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token, for the client's benefit."""
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def full(self, *, now: float) -> bool:
        """Whether the bucket would be full at ``now``: it then carries no information."""
        return self._tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """A named rate limit: ``burst`` ``events`` at once, then ``rate`` a second ``per`` key.

    ``name`` is how refusals and counters call it (``send_per_user`` …).
    """

    name: str
    rate: float
    burst: int
    events: str = "events"  # for the reason: "sends", "joins", "sessions"
    per: str = ""  # for the reason: "per user", "per address"

    def refusal(self, retry_after: float) -> RateLimited:
        per = f" {self.per}" if self.per else ""
        return RateLimited(
            f"more than {self.rate:g} {self.events} per second{per} (burst {self.burst});"
            f" retry in {retry_after:.2f} s",
            retry_after=retry_after, limit=self.name,
        )


class RateTable:
    """Token buckets of one :class:`Rate`, by key (a casefolded nick, an address).

    Holds at most ``max_keys`` buckets: past that, a new key is charged to the
    shared :data:`OVERFLOW_KEY` bucket until :meth:`sweep` drops refilled ones.
    """

    __slots__ = ("rate", "max_keys", "_buckets")

    def __init__(self, rate: Rate, *, max_keys: int) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, *, now: float) -> TokenBucket:
        """``key``'s bucket, refilled to ``now``; a new one (or the overflow one) if it has none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                key = OVERFLOW_KEY
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(
                    rate=self.rate.rate, burst=self.rate.burst, now=now
                )
        bucket.refill(now=now)
        return bucket

    def sweep(self, *, now: float) -> int:
        """Drop the buckets that have refilled completely; returns how many."""
        full = [key for key, bucket in self._buckets.items() if bucket.full(now=now)]
        for key in full:
            del self._buckets[key]
        return len(full)


def _spend_all(
    charges: list[tuple[RateTable, str]], *, now: float, own: tuple[Rate, TokenBucket] | None = None
) -> RateLimited | None:
    """Spend a token from each bucket (those of ``charges``, and ``own``, a
    connection's), or from none: the refusal of the one that will take longest
    to have a token (a send refused per address must not also cost its user a token)."""
    buckets = [(table.rate, table.bucket(key, now=now)) for table, key in charges]
    if own is not None:
        own[1].refill(now=now)
        buckets.append(own)
    waits = [(bucket.retry_after(), rate) for rate, bucket in buckets if not bucket.ready()]
    if waits:
        wait, rate = max(waits, key=lambda pair: pair[0])
        return rate.refusal(wait)
    for _rate, bucket in buckets:
        bucket.spend()
    return None


class ConnectionTable:
    """Open connections per address and in all; entries exist only while open."""

    __slots__ = ("per_address", "total", "_open", "count")

    def __init__(self, *, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._open: dict[str, int] = {}
        self.count = 0

    def open(self, address: str, *, per_address: bool = True, kind: str = "connections") -> TooManyConnections | None:
        """Count a new connection from ``address``, or say why it is refused.

        ``per_address=False`` holds it to the total only (a trusted proxy's).
        ``kind`` names the table in refusals: ``connections`` or ``http_connections``.
        """
        if self.count >= self.total:
            return TooManyConnections(
                f"the server has {self.count} open {kind.replace('_', ' ')}, its limit"
                f" (max_{kind}); try again later",
                limit=f"{kind}_total", status=503,
            )
        held = self._open.get(address, 0)
        if per_address and held >= self.per_address:
            return TooManyConnections(
                f"{held} {kind.replace('_', ' ')} are open from your address, the limit"
                f" (max_{kind}_per_ip); close one first",
                limit=f"{kind}_per_ip", status=429,
            )
        self._open[address] = held + 1
        self.count += 1
        return None

    def close(self, address: str) -> None:
        """Forget one connection :meth:`open` counted for ``address``."""
        held = self._open.get(address, 0)
        if held <= 0:
            return
        self.count -= 1
        if held == 1:
            del self._open[address]
        else:
            self._open[address] = held - 1

    def held(self, address: str) -> int:
        return self._open.get(address, 0)


class Counters:
    """Refusals by wire code and by limit: ``{"rate_limited": {"send_per_user": 3}}``.

    The one place the node counts what it refused, for ``/api/health`` now and
    for metrics later. Codes and limit names are a fixed vocabulary, so this
    stays small whatever the clients do.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}

    def count(self, code: str, limit: str) -> None:
        by_limit = self._counts.setdefault(code, {})
        by_limit[limit] = by_limit.get(limit, 0) + 1

    def get(self, code: str, limit: str) -> int:
        return self._counts.get(code, {}).get(limit, 0)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {code: dict(by_limit) for code, by_limit in self._counts.items()}


class Limits:
    """The node's limits per person and per address, and the count of refusals.

    Every ``check_*`` passes or raises (:class:`RateLimited`,
    :class:`TooManyConnections`) after counting the refusal. ``user`` is a
    casefolded nick (:func:`squall.protocol.nick_key`); ``address`` is a client
    address as :func:`squall.address.rate_key` keys it. Call :meth:`sweep`
    periodically (the node does, every second) to keep the tables small.
    """

    def __init__(
        self, *, send_per_user: Rate, send_per_address: Rate, session_per_address: Rate,
        join_per_connection: Rate, join_per_user: Rate, max_keys: int, max_connections: int,
        max_connections_per_address: int, max_http_connections: int = 10_000,
        max_http_connections_per_address: int = 256, counters: Counters | None = None,
        search_per_user: Rate | None = None,
    ) -> None:
        self.sends_by_user = RateTable(send_per_user, max_keys=max_keys)
        self.sends_by_address = RateTable(send_per_address, max_keys=max_keys)
        self.sessions_by_address = RateTable(session_per_address, max_keys=max_keys)
        self.join_rate = join_per_connection
        # A new connection has a full bucket: per user too, or reconnecting resets the limit.
        self.joins_by_user = RateTable(join_per_user, max_keys=max_keys)
        self.typing_by_user_room = RateTable(
            Rate("typing_per_user_room", 1.0 / TYPING_INTERVAL, 1), max_keys=max_keys
        )
        # WebSocket, SSE and long-poll connections, by client address.
        self.connections = ConnectionTable(per_address=max_connections_per_address, total=max_connections)
        # Connections Tornado's HTTP server owns, by TCP peer (web/connections.py).
        self.http_connections = ConnectionTable(
            per_address=max_http_connections_per_address, total=max_http_connections
        )
        self.searches_by_user = RateTable(
            search_per_user or Rate("search_per_user", 2.0, 20, "searches", "per user"), max_keys=max_keys
        )
        self.counters = counters or Counters()

    def _refuse(self, refusal: RateLimited | TooManyConnections) -> None:
        self.counters.count(refusal.code, refusal.limit)
        raise refusal

    def check_send(self, user: str, address: str, *, now: float) -> None:
        """One chat message from ``user`` at ``address``, whatever the transport."""
        refusal = _spend_all(
            [(self.sends_by_user, user), (self.sends_by_address, address)], now=now
        )
        if refusal is not None:
            self._refuse(refusal)

    def check_search(self, user: str, *, now: float) -> None:
        """One ``GET /api/search`` by ``user``."""
        refusal = _spend_all([(self.searches_by_user, user)], now=now)
        if refusal is not None:
            self._refuse(refusal)

    def check_session(self, address: str, *, now: float) -> None:
        """A new session or account (``POST /api/session``, ``POST /api/account``) from ``address``."""
        refusal = _spend_all([(self.sessions_by_address, address)], now=now)
        if refusal is not None:
            self._refuse(refusal)

    def allow_typing(self, user: str, room: str, *, now: float) -> bool:
        """Whether to pass on ``user``'s typing in ``room`` (no refusal: a typing
        event is ephemeral, and those over the rate are dropped quietly)."""
        return self.typing_by_user_room.bucket(f"{user}\x00{room}", now=now).take(now=now)

    def join_bucket(self, *, now: float) -> TokenBucket:
        """A fresh bucket for one connection's joins; charge it with :meth:`check_join`."""
        return TokenBucket(rate=self.join_rate.rate, burst=self.join_rate.burst, now=now)

    def check_join(self, user: str, bucket: TokenBucket | None, *, now: float) -> None:
        """One join by ``user`` on the connection that owns ``bucket`` (None for an
        SSE stream, which is one join for its whole life)."""
        own = (self.join_rate, bucket) if bucket is not None else None
        refusal = _spend_all([(self.joins_by_user, user)], now=now, own=own)
        if refusal is not None:
            self._refuse(refusal)

    def open_connection(self, address: str) -> None:
        """Count an open connection from ``address``; pair with :meth:`close_connection`."""
        refusal = self.connections.open(address)
        if refusal is not None:
            self._refuse(refusal)

    def close_connection(self, address: str) -> None:
        self.connections.close(address)

    def open_http_connection(self, peer: str, *, per_peer: bool = True) -> None:
        """Count a raw HTTP connection from TCP ``peer``; pair with :meth:`close_http_connection`."""
        refusal = self.http_connections.open(peer, per_address=per_peer, kind="http_connections")
        if refusal is not None:
            self._refuse(refusal)

    def close_http_connection(self, peer: str) -> None:
        self.http_connections.close(peer)

    def count(self, code: str, limit: str) -> None:
        """Count a refusal made elsewhere (a foreign ``Host``, say)."""
        self.counters.count(code, limit)

    def sweep(self, *, now: float) -> None:
        for table in (
            self.sends_by_user, self.sends_by_address, self.sessions_by_address, self.joins_by_user,
            self.typing_by_user_room, self.searches_by_user,
        ):
            table.sweep(now=now)

    def tracked(self) -> dict[str, int]:
        """How many keys each table holds (for ``/api/health``)."""
        return {
            "send_per_user": len(self.sends_by_user),
            "send_per_ip": len(self.sends_by_address),
            "session_per_ip": len(self.sessions_by_address),
            "join_per_user": len(self.joins_by_user),
            "search_per_user": len(self.searches_by_user),
            "connections": self.connections.count,
            "http_connections": self.http_connections.count,
        }
