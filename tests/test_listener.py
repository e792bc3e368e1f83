"""squall/listener.py: the accept back-off, with time as an argument (no loop)."""

from __future__ import annotations

from squall.listener import AcceptBackoff, Pause


def test_pauses_double_up_to_the_most_and_reset_on_success() -> None:
    backoff = AcceptBackoff(first=0.05, most=0.3, report_every=10.0)
    pauses = [backoff.failed(now=float(t)).seconds for t in range(5)]
    assert pauses == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.succeeded()
    assert backoff.failed(now=5.0).seconds == 0.05


def test_failures_are_reported_once_per_interval_with_their_count() -> None:
    backoff = AcceptBackoff(first=0.05, most=2.0, report_every=10.0)
    assert backoff.failed(now=100.0) == Pause(0.05, 1)  # the first is reported at once
    assert [backoff.failed(now=100.0 + t).report for t in (1, 2, 9.9)] == [None, None, None]
    assert backoff.failed(now=110.0).report == 4  # three held back, and this one
    backoff.succeeded()
    assert backoff.failed(now=111.0).report is None  # still within the interval
    assert backoff.failed(now=120.0).report == 2
