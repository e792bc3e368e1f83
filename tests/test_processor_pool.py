"""Spreading sends over processors, the table of sends in flight, and the queue's
entry codec: pure logic, no sockets (docs/deployment.md, "Several processors")."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys

import pytest

from squall.errors import Rejected, Unavailable
from squall.handshake import link_key
from squall.processor.pool import choose
from squall.processor.sends import PendingSends, answer_of, unavailable_answer
from squall.queue import REPLY_ROLE, SEND_ROLE, decode_entry, encode_entry, redacted_url

A, B, C = ("10.0.0.1", 8889), ("10.0.0.2", 8889), ("10.0.0.3", 8889)
ROOMS = [f"room-{n}" for n in range(3000)]


def test_a_room_goes_to_the_same_processor_in_every_process() -> None:
    # BLAKE2b, not Python's salted hash(): the same answer in every process.
    code = "from squall.processor.pool import choose; print([choose([('10.0.0.1', 8889), ('10.0.0.2', 8889), ('10.0.0.3', 8889)], f'room-{n}') for n in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str([choose([A, B, C], f"room-{n}") for n in range(50)])
    assert choose([A, B, C], "lobby") == choose([A, B, C], "lobby")
    assert choose([A], "anything") == 0


def test_rooms_spread_evenly() -> None:
    counts = collections.Counter(choose([A, B, C], room) for room in ROOMS)
    assert set(counts) == {0, 1, 2}
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_a_processor_going_down_moves_only_its_own_rooms() -> None:
    before = {room: [A, B, C][choose([A, B, C], room)] for room in ROOMS}
    after = {room: [A, C][choose([A, C], room)] for room in ROOMS}
    moved = [room for room in ROOMS if before[room] != after[room]]
    assert moved and all(before[room] == B for room in moved)
    assert len(moved) == sum(1 for owner in before.values() if owner == B)
    # ... and spreads them over both others.
    assert {after[room] for room in moved} == {A, C}


def test_pending_sends_are_bounded_and_joined_by_idempotency_key() -> None:
    async def scenario() -> None:
        sends = PendingSends(max_pending=2, waiting_for="the processor")
        first = sends.start("lobby", "Alice", "1", lambda ref: b"%d" % ref)
        assert sends.joined("lobby", "alice", "1") is first  # casefolded, as the store keys it
        assert sends.joined("lobby", "alice", "2") is None
        sends.start("lobby", "bob", "1", lambda ref: b"%d" % ref)
        with pytest.raises(Unavailable, match="2 messages are already waiting for the processor .limit 2."):
            sends.start("lobby", "carol", "1", lambda ref: b"")
        assert sends.settle(first.ref, {"op": "processed", "message": {"seq": 1}}) is first
        assert sends.joined("lobby", "alice", "1") is None and len(sends) == 1
        assert sends.settle(first.ref, {}) is None  # a second answer settles nothing
        assert await answer_of(first, 1, on_timeout=sends.forget, waiting_for="x") == {"seq": 1}

    asyncio.run(scenario())


def test_answers_become_the_errors_clients_see() -> None:
    async def scenario() -> None:
        sends = PendingSends(max_pending=10, waiting_for="the processor")
        rejected = sends.start("r", "n", "1", lambda ref: b"")
        sends.settle(rejected.ref, {"op": "rejected", "code": "empty_body", "reason": "message body is empty"})
        with pytest.raises(Rejected) as caught:
            await answer_of(rejected, 1, on_timeout=sends.forget, waiting_for="x")
        assert caught.value.code == "empty_body"
        full = sends.start("r", "n", "2", lambda ref: b"")
        sends.settle(full.ref, unavailable_answer("the queue holds 5 entries (limit 5)"))
        with pytest.raises(Unavailable, match="limit 5"):
            await answer_of(full, 1, on_timeout=sends.forget, waiting_for="x")
        silent = sends.start("r", "n", "3", lambda ref: b"")
        timed_out = []
        with pytest.raises(Unavailable, match="a processor did not answer within 0.01 s"):
            await answer_of(silent, 0.01, on_timeout=timed_out.append, waiting_for="a processor")
        assert timed_out == [silent]

    asyncio.run(scenario())


KEY = link_key("the secret")


def test_an_entry_verifies_only_with_the_same_key_and_role() -> None:
    fields = encode_entry(KEY, SEND_ROLE, {"op": "process", "ref": 1})
    assert decode_entry(KEY, SEND_ROLE, fields, max_bytes=1000) == {"op": "process", "ref": 1}
    assert "signature" in str(decode_entry(link_key("another secret"), SEND_ROLE, fields, max_bytes=1000))
    # A reply can never pass as a send, nor the reverse.
    assert "signature" in str(decode_entry(KEY, REPLY_ROLE, fields, max_bytes=1000))
    forged = {**fields, b"m": fields[b"m"].replace(b"1", b"2")}
    assert "signature" in str(decode_entry(KEY, SEND_ROLE, forged, max_bytes=1000))


@pytest.mark.parametrize("fields, why", [
    ({}, "are not m and s"),
    ({b"m": b"{}"}, "are not m and s"),
    ({b"m": b"x" * 1001, b"s": b"0" * 64}, "payload of 1001 bytes exceeds the limit of 1000"),
])
def test_malformed_entries_are_refused_with_the_reason(fields: dict[bytes, bytes], why: str) -> None:
    assert why in str(decode_entry(KEY, SEND_ROLE, fields, max_bytes=1000))


def test_signed_garbage_is_refused_after_the_signature() -> None:
    from squall.queue import sign

    for payload, why in ((b"[1]", "not a JSON object"), (b"{", "not JSON")):
        fields = {b"m": payload, b"s": sign(KEY, SEND_ROLE, payload)}
        assert why in str(decode_entry(KEY, SEND_ROLE, fields, max_bytes=1000))


def test_queue_urls_are_logged_without_their_password() -> None:
    assert redacted_url("redis://user:hunter2@redis.example:6380/1") == "redis://user:***@redis.example:6380/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_answers_for_one_node_are_chunked_in_order_within_the_limit() -> None:
    from squall.queue.worker import _chunks

    parts = [b"x" * size for size in (10, 10, 10, 25, 3)]
    chunks = _chunks(parts, 24)
    assert [b for chunk in chunks for b in chunk] == parts  # nothing lost, nothing reordered
    assert [len(chunk) for chunk in chunks] == [2, 1, 1, 1]  # 10+10 (+1 comma each) fit; 25 alone
    assert _chunks([], 24) == [[]]
