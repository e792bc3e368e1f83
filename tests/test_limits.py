"""Limits without a clock (``now`` is an argument): the token bucket, the tables
of buckets per user and per address, open connections, the refusal counters."""

from __future__ import annotations

import pytest

from squall.errors import RateLimited, TooManyConnections
from squall.limits import OVERFLOW_KEY, ConnectionTable, Counters, Limits, Rate, RateTable, TokenBucket, high_water, low_water


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


# -- limits per user, per address, per connection ---------------------------------


def make_limits(*, max_keys: int = 100, per_address: int = 2, total: int = 3) -> Limits:
    return Limits(
        send_per_user=Rate("send_per_user", 1.0, 2, "sends", "per user"),
        send_per_address=Rate("send_per_ip", 1.0, 3, "sends", "per address"),
        session_per_address=Rate("session_per_ip", 0.5, 1, "sessions", "per address"),
        join_per_connection=Rate("join_per_connection", 2.0, 2, "joins", "per connection"),
        join_per_user=Rate("join_per_user", 1.0, 3, "joins", "per user"),
        max_keys=max_keys, max_connections=total, max_connections_per_address=per_address,
    )


def test_a_user_is_limited_whatever_connection_or_address_it_sends_from() -> None:
    limits = make_limits()
    limits.check_send("alice", "10.0.0.1", now=0.0)
    limits.check_send("alice", "10.0.0.2", now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.check_send("alice", "10.0.0.3", now=0.0)
    assert refused.value.limit == "send_per_user"
    assert refused.value.retry_after == pytest.approx(1.0)
    assert "per user" in refused.value.reason and "retry in 1.00 s" in refused.value.reason
    limits.check_send("bob", "10.0.0.3", now=0.0)  # someone else is not held back
    limits.check_send("alice", "10.0.0.3", now=1.0)  # a token has come back


def test_an_address_is_limited_whoever_sends_from_it() -> None:
    limits = make_limits()
    for user in ("a", "b", "c"):
        limits.check_send(user, "10.0.0.1", now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.check_send("d", "10.0.0.1", now=0.0)
    assert refused.value.limit == "send_per_ip"
    # The refused send cost "d" nothing: its own bucket is still full.
    limits.check_send("d", "10.0.0.2", now=0.0)
    limits.check_send("d", "10.0.0.2", now=0.0)


def test_refusals_are_counted_by_code_and_limit() -> None:
    limits = make_limits()
    limits.check_session("10.0.0.1", now=0.0)
    for _ in range(3):
        with pytest.raises(RateLimited):
            limits.check_session("10.0.0.1", now=0.0)
    assert limits.counters.snapshot() == {"rate_limited": {"session_per_ip": 3}}
    limits.check_session("10.0.0.1", now=2.0)  # 0.5/s: one token after 2 s


def test_session_refusal_says_when_to_retry() -> None:
    limits = make_limits()
    limits.check_session("10.0.0.1", now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.check_session("10.0.0.1", now=0.5)
    assert refused.value.retry_after == pytest.approx(1.5)
    assert refused.value.headers["Retry-After"] == "2"
    assert refused.value.to_dict() == {
        "code": "rate_limited", "reason": refused.value.reason, "limit": "session_per_ip",
        "retry_after": 1.5,
    }


def test_joins_are_limited_per_connection() -> None:
    limits = make_limits()
    first, second = limits.join_bucket(now=0.0), limits.join_bucket(now=0.0)
    limits.check_join("alice", first, now=0.0)
    limits.check_join("alice", first, now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.check_join("alice", first, now=0.0)
    assert (refused.value.limit, refused.value.retry_after) == ("join_per_connection", 0.5)
    limits.check_join("bob", second, now=0.0)  # another connection has its own bucket


def test_joins_are_limited_per_user_so_reconnecting_gains_nothing() -> None:
    limits = make_limits()
    for _ in range(3):  # a new connection, a full bucket, each time
        limits.check_join("alice", limits.join_bucket(now=0.0), now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.check_join("alice", limits.join_bucket(now=0.0), now=0.0)
    assert refused.value.limit == "join_per_user"
    with pytest.raises(RateLimited):
        limits.check_join("alice", None, now=0.5)  # an SSE stream is a join too
    limits.check_join("alice", None, now=1.0)


def test_a_join_refused_per_user_costs_the_connection_nothing() -> None:
    limits = make_limits()
    bucket = limits.join_bucket(now=0.0)
    for _ in range(3):
        limits.check_join("alice", None, now=0.0)
    with pytest.raises(RateLimited):
        limits.check_join("alice", bucket, now=0.0)
    limits.check_join("bob", bucket, now=0.0)  # both of its tokens are still there
    limits.check_join("carol", bucket, now=0.0)


def test_refilled_buckets_are_swept() -> None:
    table = RateTable(Rate("r", 1.0, 2), max_keys=100)
    assert table.bucket("a", now=0.0).take(now=0.0)
    table.bucket("b", now=0.0)
    table.sweep(now=0.5)
    assert len(table) == 1  # "b" never spent anything; "a" needs 1 s to refill
    table.sweep(now=1.0)
    assert len(table) == 0


def test_a_full_table_makes_newcomers_share_one_bucket() -> None:
    table = RateTable(Rate("r", 1.0, 2), max_keys=3)
    for key in ("a", "b", "c"):
        assert table.bucket(key, now=0.0).take(now=0.0)
    # A flood of new keys: they all draw from the overflow bucket, and the
    # table stops growing (the overflow bucket is the only one over the cap).
    taken = [table.bucket(f"new{n}", now=0.0).take(now=0.0) for n in range(10)]
    assert taken == [True, True] + [False] * 8
    assert len(table) == 4 and OVERFLOW_KEY in table._buckets
    # Those already tracked keep their own buckets: the flood reset nobody.
    assert table.bucket("a", now=0.0).take(now=0.0)
    assert not table.bucket("a", now=0.0).take(now=0.0)
    table.sweep(now=10.0)
    assert len(table) == 0
    assert table.bucket("new0", now=10.0).take(now=10.0)  # room again: its own bucket


def test_connections_per_address_and_in_all() -> None:
    table = ConnectionTable(per_address=2, total=3)
    assert table.open("a") is None and table.open("a") is None
    refusal = table.open("a")
    assert isinstance(refusal, TooManyConnections)
    assert (refusal.status, refusal.code, refusal.limit) == (429, "too_many_connections", "connections_per_ip")
    assert table.open("b") is None
    refusal = table.open("c")
    assert isinstance(refusal, TooManyConnections) and refusal.status == 503
    table.close("a")
    assert table.open("c") is None
    for address in ("a", "b", "c"):
        table.close(address)
    table.close("never-opened")  # no harm, no negative counts
    assert table.count == 0 and table._open == {}


def test_connection_refusals_are_counted() -> None:
    limits = make_limits(per_address=1, total=10)
    limits.open_connection("a")
    with pytest.raises(TooManyConnections):
        limits.open_connection("a")
    limits.close_connection("a")
    limits.open_connection("a")
    assert limits.counters.get("too_many_connections", "connections_per_ip") == 1


def test_counters_start_empty() -> None:
    assert Counters().snapshot() == {}


def test_a_connection_held_only_to_the_total() -> None:
    table = ConnectionTable(per_address=1, total=2)
    assert table.open("proxy", per_address=False, kind="http_connections") is None
    assert table.open("proxy", per_address=False, kind="http_connections") is None
    refusal = table.open("proxy", per_address=False, kind="http_connections")
    assert refusal is not None and (refusal.status, refusal.limit) == (503, "http_connections_total")
    assert "max_http_connections" in refusal.reason


def test_typing_over_http_is_passed_on_once_per_interval_per_room() -> None:
    limits = make_limits()
    assert limits.allow_typing("alice", "lobby", now=0.0)
    assert not limits.allow_typing("alice", "lobby", now=1.0)
    assert limits.allow_typing("alice", "other", now=1.0)
    assert limits.allow_typing("bob", "lobby", now=1.0)
    assert limits.allow_typing("alice", "lobby", now=2.0)
    assert limits.counters.snapshot() == {}  # dropped quietly, not refused
