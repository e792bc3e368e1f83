"""Limits without I/O: send rates (time passed in) and outbound back-pressure."""

from __future__ import annotations

import enum

from .errors import RateLimited

__all__ = ["TokenBucket", "Outbound", "outbound_verdict", "low_water", "high_water"]


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

    def take(self, *, now: float) -> bool:
        """Spend one token if there is one; False means "refuse this event"."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token, for the client's benefit."""
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def check_send(self, *, now: float) -> None:
        """Spend a token for a message, or raise :class:`RateLimited` saying when to retry."""
        if not self.take(now=now):
            raise RateLimited(
                f"more than {self.rate:g} messages per second; retry in {self.retry_after():.2f} s"
            )
