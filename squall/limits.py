"""Rate limits without a clock: the caller passes ``now``."""

from __future__ import annotations

__all__ = ["TokenBucket"]


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
