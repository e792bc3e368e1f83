"""The client wire protocol without I/O: every frame in, a command or a code out."""

from __future__ import annotations

import math

import pytest

from squall.errors import BadRequest, ClientError
from squall.protocol import (
    CANARY_ROOM, MAX_CLIENT_ID, MAX_NICK, Join, Leave, Ping, Send, Typing,
    check_client_id, check_link_room, check_nick, check_room, float_param, int_param, nick_key, parse_command,
    parse_send_body,
)


@pytest.mark.parametrize(("frame", "command"), [
    ('{"type":"join","room":"lobby"}', Join("lobby")),
    ('{"type":"join","room":"lobby","since":0}', Join("lobby", since=0)),
    ('{"type":"join","room":"lobby","since":42}', Join("lobby", since=42)),
    ('{"type":"join","room":"lobby","since":null}', Join("lobby")),
    ('{"type":"leave","room":"a-b_c"}', Leave("a-b_c")),
    ('{"type":"send","room":"lobby","body":"hi","id":"c1"}', Send("lobby", "hi", "c1")),
    ('{"type":"send","room":"lobby","body":"","id":"c1"}', Send("lobby", "", "c1")),  # the processor refuses it
    ('{"type":"typing","room":"9"}', Typing("9")),
    ('{"type":"ping"}', Ping()),
    ('{"type":"ping","extra":[1,2]}', Ping()),
    (b'{"type":"send","room":"r","body":"caf\xc3\xa9","id":"x"}', Send("r", "café", "x")),
])
def test_parse_command_accepts(frame: str | bytes, command: object) -> None:
    assert parse_command(frame) == command


LONG_ID = "i" * (MAX_CLIENT_ID + 1)


@pytest.mark.parametrize(("frame", "code"), [
    ("", "bad_json"),
    ("not json", "bad_json"),
    ('{"type":"ping"', "bad_json"),
    (b"\xff\xfe", "bad_json"),
    ("[]", "bad_frame"),
    ('"ping"', "bad_frame"),
    ("42", "bad_frame"),
    ("null", "bad_frame"),
    ("{}", "bad_field"),
    ('{"type":null}', "bad_field"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"type":7}', "unknown_type"),
    ('{"type":["join"]}', "unknown_type"),
    ('{"type":"JOIN","room":"r"}', "unknown_type"),
    ('{"type":"join"}', "bad_field"),
    ('{"type":"join","room":"r","since":"5"}', "bad_field"),
    ('{"type":"join","room":"r","since":-1}', "bad_field"),
    ('{"type":"join","room":"r","since":true}', "bad_field"),
    ('{"type":"join","room":"r","since":1.5}', "bad_field"),
    ('{"type":"join","room":"Lobby"}', "bad_room"),
    ('{"type":"join","room":""}', "bad_room"),
    ('{"type":"join","room":"-lobby"}', "bad_room"),
    ('{"type":"join","room":"a b"}', "bad_room"),
    ('{"type":"join","room":5}', "bad_room"),
    ('{"type":"join","room":null}', "bad_room"),
    ('{"type":"join","room":"' + "r" * 65 + '"}', "bad_room"),
    ('{"type":"leave"}', "bad_field"),
    ('{"type":"leave","room":"../x"}', "bad_room"),
    ('{"type":"typing","room":"r\\n"}', "bad_room"),
    ('{"type":"send","room":"r","id":"c"}', "bad_field"),
    ('{"type":"send","room":"r","body":5,"id":"c"}', "bad_field"),
    ('{"type":"send","room":"r","body":null,"id":"c"}', "bad_field"),
    ('{"type":"send","room":"r","body":["hi"],"id":"c"}', "bad_field"),
    ('{"type":"send","body":"hi","id":"c"}', "bad_field"),
    ('{"type":"send","room":"r","body":"hi"}', "bad_field"),
    ('{"type":"send","room":"r","body":"hi","id":""}', "bad_id"),
    ('{"type":"send","room":"r","body":"hi","id":"' + LONG_ID + '"}', "bad_id"),
    ('{"type":"send","room":"r","body":"hi","id":7}', "bad_id"),
    ('{"type":"send","room":"R","body":"hi","id":"c"}', "bad_room"),
])
def test_parse_command_refuses(frame: str | bytes, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_command(frame)
    assert caught.value.code == code
    assert caught.value.reason  # a sentence for a person, never empty


def test_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(BadRequest, match="delete, edit, join, leave, ping, react, send, typing, unreact"):
        parse_command('{"type":"dance"}')


@pytest.mark.parametrize("room", ["a", "0", "lobby", "a-b_c", "9" * 64, "r" + "-" * 63])
def test_check_room_accepts(room: str) -> None:
    assert check_room(room) == room


@pytest.mark.parametrize("room", [
    "", "A", "_a", "-a", "a.b", "a/b", "a b", "é", "r" * 65, "a\n", 5, None, ["a"],
])
def test_check_room_refuses(room: object) -> None:
    with pytest.raises(BadRequest) as caught:
        check_room(room)
    assert caught.value.code == "bad_room"


def test_the_canary_room_is_no_client_room_but_the_processor_link_takes_it() -> None:
    with pytest.raises(BadRequest):
        check_room(CANARY_ROOM)
    for frame in (f'{{"type":"join","room":"{CANARY_ROOM}"}}', f'{{"type":"send","room":"{CANARY_ROOM}","body":"x","id":"1"}}'):
        with pytest.raises(BadRequest):
            parse_command(frame)
    assert check_link_room(CANARY_ROOM) == CANARY_ROOM
    assert check_link_room("lobby") == "lobby"
    for other in ("_canary2", "_other", "_Canary", 5):  # only the one name, not the "_" prefix
        with pytest.raises(BadRequest):
            check_link_room(other)


def test_check_room_shortens_a_huge_name_in_its_reason() -> None:
    with pytest.raises(BadRequest) as caught:
        check_room("x" * 10_000)
    assert len(caught.value.reason) < 300


@pytest.mark.parametrize("nick", ["a", "Alice", "bob_2", "a.b-c", "Zoë", "李雷", "x" * MAX_NICK])
def test_check_nick_accepts(nick: str) -> None:
    assert check_nick(nick) == nick


@pytest.mark.parametrize("nick", [
    "", "x" * (MAX_NICK + 1), "a b", "a@b", "<script>", "tab\t", "a\u200bb", 5, None,
])
def test_check_nick_refuses(nick: object) -> None:
    with pytest.raises(BadRequest) as caught:
        check_nick(nick)
    assert caught.value.code == "bad_nick"


def test_nick_key_folds_case() -> None:
    assert nick_key("Alice") == nick_key("ALICE") == nick_key("alice")
    assert nick_key("Straße") == nick_key("STRASSE")
    assert nick_key("alice") != nick_key("alicia")


@pytest.mark.parametrize("cid", ["a", "x" * MAX_CLIENT_ID, "3f2a-uuid", "with space"])
def test_check_client_id_accepts(cid: str) -> None:
    assert check_client_id(cid) == cid


@pytest.mark.parametrize("cid", ["", "x" * (MAX_CLIENT_ID + 1), 1, None, True])
def test_check_client_id_refuses(cid: object) -> None:
    with pytest.raises(BadRequest) as caught:
        check_client_id(cid)
    assert caught.value.code == "bad_id"


@pytest.mark.parametrize(("raw", "value"), [
    (None, 7), ("0", 0), ("10", 10), ("100", 100), ("+5", 5), (" 3 ", 3),
])
def test_int_param_accepts(raw: str | None, value: int) -> None:
    assert int_param(raw, "limit", default=7, low=0, high=100) == value


def test_int_param_default_may_be_none() -> None:
    assert int_param(None, "since", default=None, low=0, high=10) is None


@pytest.mark.parametrize("raw", ["", " ", "-1", "101", "abc", "1.5", "1e3", "0x10", "nan", "true", "9" * 40])
def test_int_param_refuses(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        int_param(raw, "limit", default=7, low=0, high=100)
    assert caught.value.code == "bad_param"
    assert "limit" in caught.value.reason


@pytest.mark.parametrize(("raw", "value"), [
    (None, 2.5), ("", 2.5), ("0", 0.0), ("60", 60.0), ("0.25", 0.25), ("1e1", 10.0),
])
def test_float_param_accepts(raw: str | None, value: float) -> None:
    assert float_param(raw, "wait", default=2.5, low=0, high=60) == value


@pytest.mark.parametrize("raw", ["-0.1", "60.5", "abc", "nan", "NaN", "inf", "-inf", "1,5"])
def test_float_param_refuses(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        float_param(raw, "wait", default=2.5, low=0, high=60)
    assert caught.value.code == "bad_param"
    assert "wait" in caught.value.reason


def test_float_param_reason_never_echoes_a_huge_value() -> None:
    with pytest.raises(BadRequest) as caught:
        float_param("9" * 5000, "wait", default=1, low=0, high=60)
    assert len(caught.value.reason) < 200
    assert not math.isnan(float_param("1", "wait", default=1, low=0, high=60))


# -- a refused send names its id whenever it can be read -----------------------------

SURROGATE_BODY = '"\\ud83d"'  # JSON text: a lone high surrogate escape

REFUSED_SENDS = [
    ('{"type":"send","room":"Bad Room","body":"x","id":"c1"}', "bad_room"),
    ('{"type":"send","room":5,"body":"x","id":"c1"}', "bad_room"),
    ('{"type":"send","room":null,"body":"x","id":"c1"}', "bad_room"),
    ('{"type":"send","body":"x","id":"c1"}', "bad_field"),
    ('{"type":"send","room":"r","id":"c1"}', "bad_field"),
    ('{"type":"send","room":"r","body":5,"id":"c1"}', "bad_field"),
    ('{"type":"send","room":"r","body":null,"id":"c1"}', "bad_field"),
    ('{"type":"send","room":"r","body":{"t":"x"},"id":"c1"}', "bad_field"),
    ('{"type":"send","room":"r","body":' + SURROGATE_BODY + ',"id":"c1"}', "bad_body"),
    ('{"type":"send","room":"r","body":"a\\udc00b","id":"c1"}', "bad_body"),
    ('{"type":"send","room":"r","body":"\\ude00\\ud83d","id":"c1"}', "bad_body"),  # reversed pair
    ('{"id":"c1","type":"send","room":"r","body":"hi","x":' + SURROGATE_BODY + '}', "bad_json"),
    ('{"type":"send","room":"Bad","body":' + SURROGATE_BODY + ',"id":"c1"}', "bad_room"),
]


@pytest.mark.parametrize(("frame", "code"), REFUSED_SENDS)
def test_a_refused_send_frame_carries_its_id(frame: str, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_command(frame)
    assert (caught.value.code, caught.value.id) == (code, "c1")
    assert caught.value.to_dict() == {"code": code, "reason": caught.value.reason, "id": "c1"}


@pytest.mark.parametrize(("frame", "code"), [
    ('{"type":"send","room":"r","body":"x"}', "bad_field"),
    ('{"type":"send","room":"r","body":"x","id":""}', "bad_id"),
    ('{"type":"send","room":"r","body":"x","id":7}', "bad_id"),
    ('{"type":"send","room":"r","body":"x","id":"' + LONG_ID + '"}', "bad_id"),
    ('{"type":"send","room":"r","body":"x","id":"a\\ud83d"}', "bad_id"),
    ('{"type":"send","room":"Bad","body":"x","id":5}', "bad_room"),
    ('{"type":"send","room":"r","body":' + SURROGATE_BODY + ',"id":"\\ud83d"}', "bad_body"),
    ('{"type":"ping","x":' + SURROGATE_BODY + '}', "bad_json"),
    ('{"type":"join","room":' + SURROGATE_BODY + '}', "bad_room"),
    ('["\\ud83d"]', "bad_frame"),
    ('{"type":"send","room":"r","body":"\\ud83d","id":"c1","n":NaN}', "bad_json"),
    ('{"a":' + "[" * 5000 + '"\\ud83d"' + "]" * 5000 + "}", "bad_json"),
])
def test_a_refusal_without_a_readable_id_has_none(frame: str, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_command(frame)
    assert (caught.value.code, caught.value.id) == (code, None)
    assert "id" not in caught.value.to_dict()


def test_a_surrogate_pair_is_text_and_accepted() -> None:
    assert parse_command('{"type":"send","room":"r","body":"\\ud83d\\ude00","id":"c1"}') == Send("r", "😀", "c1")


@pytest.mark.parametrize(("body", "code", "cid"), [
    (b'{"body":"hi","id":"h1"}', None, None),
    (b'{"body":5,"id":"h1"}', "bad_field", "h1"),
    (b'{"id":"h1"}', "bad_field", "h1"),
    (b'{"body":"hi"}', "bad_field", None),
    (b'{"body":"hi","id":""}', "bad_id", None),
    (b'{"body":' + SURROGATE_BODY.encode() + b',"id":"h1"}', "bad_body", "h1"),
    (b'{"body":"hi","id":"h1","x":' + SURROGATE_BODY.encode() + b"}", "bad_json", "h1"),
    (b"", "bad_json", None),
    (b"[1]", "bad_json", None),
    (b'{"body":"\xff","id":"h1"}', "bad_json", None),
])
def test_parse_send_body(body: bytes, code: str | None, cid: str | None) -> None:
    if code is None:
        assert parse_send_body("r", body) == Send("r", "hi", "h1")
        return
    with pytest.raises(ClientError) as caught:
        parse_send_body("r", body)
    assert (caught.value.code, caught.value.id) == (code, cid)


def test_parse_send_body_checks_the_room_and_names_the_id() -> None:
    with pytest.raises(ClientError) as caught:
        parse_send_body("Bad Room", b'{"body":"hi","id":"h1"}')
    assert (caught.value.code, caught.value.id) == ("bad_room", "h1")
