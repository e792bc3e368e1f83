"""The token bucket without a clock: ``now`` is an argument."""

from __future__ import annotations

import pytest

from squall.limits import TokenBucket, high_water, low_water


def test_burst_then_refused() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(now=0.0) and bucket.take(now=0.0)
    assert not bucket.take(now=0.25)  # half a token
    assert bucket.take(now=0.5)  # 0.5 + 0.5 = 1 token
    assert not bucket.take(now=0.5)


def test_never_holds_more_than_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=2, now=0.0)
    assert bucket.take(now=1000.0)
    assert bucket.take(now=1000.0)
    assert not bucket.take(now=1000.0)


def test_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(now=10.0)
    assert not bucket.take(now=5.0)  # no negative refill, no crash
    assert not bucket.take(now=5.5)
    assert bucket.take(now=6.0)  # measured from the last stamp, 5.0


def test_retry_after_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
    assert bucket.retry_after() == 0.0
    assert bucket.take(now=0.0)
    assert bucket.retry_after() == pytest.approx(0.25)
    assert not bucket.take(now=0.125)
    assert bucket.retry_after() == pytest.approx(0.125)
    assert bucket.take(now=0.25)


def test_refused_take_does_not_spend() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert bucket.take(now=0.0)
    for step in range(1, 10):
        assert not bucket.take(now=step * 0.1)
    assert bucket.take(now=1.0)


def test_sustained_rate_is_respected() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    allowed = sum(bucket.take(now=i * 0.01) for i in range(1000))  # 10 s, 100 tries a second
    assert 5 + 99 <= allowed <= 5 + 101


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    from squall.backoff import backoff_delay

    assert backoff_delay(0, low=0.1, high=5.0, rand=0.0) == 0.1
    assert backoff_delay(0, low=0.1, high=5.0, rand=0.99) == pytest.approx(0.1)
    assert backoff_delay(3, low=0.1, high=5.0, rand=1.0) == pytest.approx(0.8)
    assert backoff_delay(3, low=0.1, high=5.0, rand=0.5) == pytest.approx(0.45)
    assert backoff_delay(100, low=0.1, high=5.0, rand=1.0) == pytest.approx(5.0)
    assert backoff_delay(100, low=10.0, high=3600.0, rand=0.0) == 10.0


@pytest.mark.parametrize(("buffered", "size", "ephemeral", "verdict"), [
    (0, 100, False, "send"),
    (900, 100, False, "send"),  # exactly at the limit still fits
    (901, 100, False, "cut"),
    (0, 100, True, "send"),
    (500, 100, True, "send"),  # at the low-water mark
    (501, 10, True, "drop"),
])
def test_outbound_verdict(buffered: int, size: int, ephemeral: bool, verdict: str) -> None:
    from squall.limits import outbound_verdict

    got = outbound_verdict(buffered=buffered, size=size, limit=1000, ephemeral=ephemeral)
    assert got.value == verdict


def test_reading_pauses_above_high_water_and_resumes_at_low_water() -> None:
    for limit in (1, 4, 1000, 1024 * 1024):
        assert low_water(limit) <= high_water(limit) <= limit
    assert low_water(1024 * 1024) < high_water(1024 * 1024) < 1024 * 1024
