"""Capped exponential back-off with jitter, without a clock or a random source.

Used wherever Squall retries: the processor link reconnecting, the supervisor
restarting a crashed processor, the notifier retrying an e-mail.
"""

from __future__ import annotations

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, *, low: float, high: float, rand: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first).

    The ceiling doubles from ``low`` with each attempt up to ``high``; the delay
    is drawn between ``low`` and that ceiling by ``rand``, a uniform draw in
    [0, 1) (``random.random()``), so that many clients retrying at once spread
    out instead of arriving together.
    """
    ceiling: float = min(high, low * 2.0 ** min(attempt, 30))
    return low + (max(ceiling, low) - low) * min(max(rand, 0.0), 1.0)
