"""The presence coalescer without a clock: time is an argument."""

from __future__ import annotations

import json

import pytest

from squall.coalesce import (
    OFFLINE, ONLINE, TYPING_NICKS_MAX, Change, Coalescer, Pending, encode_presence, encode_typing,
)


def test_nothing_is_due_until_something_is_pending() -> None:
    coalescer = Coalescer(interval=0.25)
    assert coalescer.due is None
    assert not coalescer.take(now=100.0)


def test_many_joins_within_an_interval_are_one_batch_per_room() -> None:
    coalescer = Coalescer(interval=0.25)
    for i in range(1000):
        coalescer.presence("big", f"user{i}", f"user{i}", ONLINE, now=10.0 + i / 10_000)
    coalescer.presence("small", "Ann", "ann", ONLINE, now=10.05)
    assert coalescer.due == 10.25
    assert not coalescer.take(now=10.2499)  # not due yet: nothing goes
    pending = coalescer.take(now=10.25)
    assert sorted(pending.presence) == ["big", "small"]
    assert [c.nick for c in pending.presence["big"]] == [f"user{i}" for i in range(1000)]
    assert pending.presence["small"] == [Change("Ann", ONLINE)]
    assert coalescer.due is None and not coalescer.take(now=11.0)


def test_a_room_gets_at_most_one_batch_per_interval() -> None:
    coalescer = Coalescer(interval=0.25)
    taken_at = []
    now = 0.0
    for step in range(400):  # a join every 10 ms for 4 s, and a flush whenever one is due
        now = step * 0.01
        coalescer.presence("r", f"u{step}", f"u{step}", ONLINE, now=now)
        due = coalescer.due
        if due is not None and now >= due and coalescer.take(now=now):
            taken_at.append(now)
    assert len(taken_at) <= 4.0 / 0.25 + 1
    assert all(b - a >= 0.25 - 1e-9 for a, b in zip(taken_at, taken_at[1:]))


def test_each_nick_appears_once_with_its_last_state() -> None:
    coalescer = Coalescer(interval=1.0)
    coalescer.presence("r", "Bob", "bob", ONLINE, now=0.0)  # joined then left: one "offline"
    coalescer.presence("r", "Ann", "ann", OFFLINE, now=0.1)  # left then came back (a reload): "online"
    coalescer.presence("r", "bob", "bob", OFFLINE, now=0.2)
    coalescer.presence("r", "ANN", "ann", ONLINE, now=0.3)
    pending = coalescer.take(now=1.0)
    # In the order each nick first changed, spelled as it last was.
    assert pending.presence["r"] == [Change("bob", OFFLINE), Change("ANN", ONLINE)]


def test_typing_is_one_event_per_room_per_interval_without_repeats() -> None:
    coalescer = Coalescer(interval=0.25)
    for _ in range(5):
        coalescer.typing("r", "Ann", "ann", now=0.0)
    coalescer.typing("r", "Bob", "bob", now=0.1)
    coalescer.typing("s", "Ann", "ann", now=0.2)
    pending = coalescer.take(now=0.25)
    assert pending.typing == {"r": ["Ann", "Bob"], "s": ["Ann"]}
    assert pending.presence == {}


def test_a_crowd_typing_at_once_is_bounded() -> None:
    coalescer = Coalescer(interval=0.25)
    for i in range(1000):
        coalescer.typing("r", f"u{i}", f"u{i}", now=0.0)
    assert len(coalescer.take(now=1.0).typing["r"]) == TYPING_NICKS_MAX


def test_who_went_offline_is_no_longer_typing() -> None:
    coalescer = Coalescer(interval=0.25)
    coalescer.typing("r", "Ann", "ann", now=0.0)
    coalescer.presence("r", "Ann", "ann", OFFLINE, now=0.1)
    pending = coalescer.take(now=0.25)
    assert pending.typing == {} and pending.presence == {"r": [Change("Ann", OFFLINE)]}


def test_what_comes_after_a_flush_waits_for_the_next_one() -> None:
    coalescer = Coalescer(interval=0.25)
    coalescer.presence("r", "a", "a", ONLINE, now=0.0)
    assert coalescer.take(now=0.3).presence == {"r": [Change("a", ONLINE)]}
    coalescer.presence("r", "b", "b", ONLINE, now=0.31)
    assert coalescer.due == pytest.approx(0.56)
    assert not coalescer.take(now=0.5)
    assert coalescer.take(now=0.56).presence == {"r": [Change("b", ONLINE)]}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        Coalescer(interval=0)
    with pytest.raises(ValueError, match="state"):
        Coalescer().presence("r", "a", "a", "typing", now=0.0)


def test_presence_event_carries_changes_up_to_the_detail_threshold_then_counts_only() -> None:
    changes = [Change("Ann", ONLINE), Change("bob", OFFLINE)]
    small = json.loads(encode_presence("r", 500, changes, detail_max=500))
    assert small == {"type": "presence", "room": "r", "count": 500, "changes": [
        {"nick": "Ann", "state": "online"}, {"nick": "bob", "state": "offline"},
    ]}
    big = json.loads(encode_presence("r", 501, changes, detail_max=500))
    assert big == {"type": "presence", "room": "r", "count": 501}


def test_typing_event_lists_the_nicks() -> None:
    assert json.loads(encode_typing("r", ["Ann", "Bob"])) == {"type": "typing", "room": "r", "nicks": ["Ann", "Bob"]}


def test_a_held_room_waits_for_its_hold_while_others_flow() -> None:
    coalescer = Coalescer(interval=0.25)
    coalescer.presence("big", "a", "a", ONLINE, now=0.0)
    coalescer.presence("small", "b", "b", ONLINE, now=0.0)
    assert set(coalescer.take(now=0.25).presence) == {"big", "small"}
    coalescer.hold("big", until=2.25)  # its event just went out; the next one not before 2.25
    coalescer.presence("big", "c", "c", ONLINE, now=0.3)
    coalescer.typing("big", "d", "d", now=0.4)
    assert coalescer.due == 2.25
    coalescer.presence("small", "e", "e", ONLINE, now=0.5)
    assert coalescer.due == 0.75
    assert coalescer.take(now=0.75) == Pending({"small": [Change("e", ONLINE)]}, {})
    assert coalescer.due == 2.25
    assert not coalescer.take(now=2.0)
    assert coalescer.take(now=2.25) == Pending({"big": [Change("c", ONLINE)]}, {"big": ["d"]})
    assert coalescer.due is None
    # Once the hold is over, the room is paced by the interval again.
    coalescer.presence("big", "f", "f", ONLINE, now=3.0)
    assert coalescer.due == 3.25
