"""The bus's message format (squall.bus.wire): pure, no Redis, no loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.bus.wire import (
    MAX_MESSAGE_BYTES,
    BadBusMessage,
    control_channel,
    decode_broadcasts,
    decode_control,
    encode_broadcasts,
    encode_control,
    room_channel,
    room_of,
)
from squall.frames import Broadcast


def test_channels_carry_the_prefix_and_give_back_the_room() -> None:
    assert room_channel("p:", "lobby") == b"p:room:lobby"
    assert room_of("p:", b"p:room:lobby") == "lobby"
    assert room_of("p:", b"q:room:lobby") is None
    assert room_of("p:", b"p:room:\xff") is None
    assert control_channel("p:") == b"p:control"


def test_broadcasts_come_back_byte_for_byte_in_order() -> None:
    sent = [
        Broadcast("r", 7, b'{"type":"message","seq":7,"body":"a\\nb"}', mentions=frozenset({"bob", "carol"})),
        Broadcast("r", None, b'{"type":"presence","nick":"x"}', kind="presence"),
        Broadcast("r", 8, b"{}"),
    ]
    [message] = encode_broadcasts(b"node1", sent, published_ms=1_795_882_898_440)
    origin, published_ms, received = decode_broadcasts("r", message)
    assert (origin, published_ms) == (b"node1", 1_795_882_898_440)
    assert [(b.room, b.seq, b.kind, b.payload, b.mentions) for b in received] == [
        (b.room, b.seq, b.kind, b.payload, b.mentions) for b in sent
    ]


def test_a_long_run_is_split_into_bounded_messages() -> None:
    big = b'"' + b"x" * (MAX_MESSAGE_BYTES // 3) + b'"'
    sent = [Broadcast("r", seq, big) for seq in range(1, 8)]
    messages = encode_broadcasts(b"n", sent, published_ms=1)
    assert len(messages) == 4  # two broadcasts of a third each per message, then the seventh alone
    assert all(len(m) <= MAX_MESSAGE_BYTES for m in messages)
    seqs = [b.seq for m in messages for b in decode_broadcasts("r", m).broadcasts]
    assert seqs == list(range(1, 8))
    huge = Broadcast("r", 9, b'"' + b"y" * MAX_MESSAGE_BYTES + b'"')
    assert len(encode_broadcasts(b"n", [huge], published_ms=1)) == 1  # travels alone, whatever its size


def test_a_message_from_a_node_that_does_not_stamp_the_time_is_read() -> None:
    message = decode_broadcasts("r", b'SQB1 old-node\n[3,"message",[],2]\n{}')
    assert (message.origin, message.published_ms, [b.seq for b in message.broadcasts]) == (b"old-node", None, [3])


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "no SQB1 mark"),
    (b"GET / HTTP/1.1\r\n", "no SQB1 mark"),
    (b"SQB1 " + b"n" * 100, "origin line"),
    (b"SQB1 n\n", "without broadcasts"),
    (b"SQB1 n 12x\n[1,\"message\",[],2]\n{}", "publish time"),
    (b"SQB1 n " + b"9" * 16 + b"\n[1,\"message\",[],2]\n{}", "publish time"),
    (b"SQB1  5\n[1,\"message\",[],2]\n{}", "origin is empty"),
    (b"SQB1 n\n[1,\"message\",[],2]", "header line"),
    (b"SQB1 n\n[1,\"message\",[],20]\n{}", "cut short"),
    (b"SQB1 n\nnot json\n", "bad header"),
    (b"SQB1 n\n{\"seq\":1}\n", r"not \[seq, kind, mentions, length\]"),
    (b"SQB1 n\n[0,\"message\",[],2]\n{}", "seq 0"),
    (b"SQB1 n\n[true,\"message\",[],2]\n{}", "seq True"),
    (b"SQB1 n\n[1,\"\",[],2]\n{}", "kind"),
    (b"SQB1 n\n[1,\"message\",[1],2]\n{}", "mentions"),
    (b"SQB1 n\n[1,\"message\",[],-1]\n{}", "length"),
])
def test_anything_else_is_refused_with_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(BadBusMessage, match=problem):
        decode_broadcasts("r", data)


@given(st.binary(max_size=200))
def test_no_bytes_make_the_decoder_fail_otherwise(data: bytes) -> None:
    try:
        decode_broadcasts("r", b"SQB1 n\n" + data)
    except BadBusMessage:
        pass


def test_control_notices_round_trip_and_are_checked() -> None:
    notice = decode_control(encode_control(b"n1", "ended", ["s1", "s2"]))
    assert (notice.origin, notice.op, notice.sessions) == (b"n1", "ended", ("s1", "s2"))
    assert decode_control(encode_control(b"n1", "resync")).op == "resync"
    for bad in (b"[]", b"nope", b'{"origin":"n","op":"reboot"}', b'{"origin":"n","op":"ended","sessions":[1]}'):
        with pytest.raises(BadBusMessage):
            decode_control(bad)
