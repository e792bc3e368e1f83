"""The client side of message events, without I/O: parsing edit, delete,
react and unreact frames and bodies, replies, and the processor's check of the
same fields (docs/protocol.md, §2 "Changes")."""

from __future__ import annotations

import pytest

from squall.errors import BadRequest, ClientError
from squall.message import ChangeRules, Draft
from squall.changes import apply_change
from squall.processor.server import parse_process
from squall.protocol import Change, Send, parse_command, parse_send_body


@pytest.mark.parametrize("frame, expected", [
    ('{"type":"edit","room":"r","id":"a","target":3,"body":"x"}', Change("edit", "r", "a", 3, body="x")),
    ('{"type":"delete","room":"r","id":"a","target":3}', Change("delete", "r", "a", 3)),
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":"👍🏽"}', Change("react", "r", "a", 3, emoji="👍🏽")),
    ('{"type":"unreact","room":"r","id":"a","target":3,"emoji":"🇫🇷"}', Change("unreact", "r", "a", 3, emoji="🇫🇷")),
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":"👨‍👩‍👧"}', Change("react", "r", "a", 3, emoji="👨‍👩‍👧")),
    ('{"type":"send","room":"r","id":"a","body":"x","reply_to":2}', Send("r", "x", "a", reply_to=2)),
])
def test_parse_change_frames(frame: str, expected: object) -> None:
    assert parse_command(frame) == expected


@pytest.mark.parametrize("frame, code", [
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":"ok"}', "bad_emoji"),
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":"👍👍"}', "bad_emoji"),
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":""}', "bad_emoji"),
    ('{"type":"react","room":"r","id":"a","target":3,"emoji":7}', "bad_emoji"),
    ('{"type":"react","room":"r","id":"a","target":3}', "bad_field"),
    ('{"type":"edit","room":"r","id":"a","target":3}', "bad_field"),
    ('{"type":"edit","room":"r","id":"a","target":3,"body":5}', "bad_field"),
    ('{"type":"edit","room":"r","id":"a","target":"3","body":"x"}', "bad_field"),
    ('{"type":"delete","room":"r","id":"a","target":true}', "bad_field"),
    ('{"type":"delete","room":"r","id":"a","target":0}', "bad_field"),
    ('{"type":"delete","room":"r","id":"a","target":9007199254740993}', "bad_field"),
    ('{"type":"delete","room":"r","id":"a"}', "bad_field"),
    ('{"type":"delete","room":"r","target":1}', "bad_field"),
    ('{"type":"delete","room":"R","id":"a","target":1}', "bad_room"),
    ('{"type":"send","room":"r","id":"a","body":"x","reply_to":-1}', "bad_field"),
    ('{"type":"edit","room":"r","id":"a","target":3,"body":"\\ud83d"}', "bad_body"),
])
def test_refused_change_frames_name_the_id(frame: str, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_command(frame)
    assert caught.value.code == code and caught.value.reason
    if '"id":"a"' in frame and code != "bad_room":
        assert caught.value.id == "a"


def test_http_body_type_defaults_to_send() -> None:
    assert parse_send_body("r", b'{"body":"x","id":"a"}') == Send("r", "x", "a")
    assert parse_send_body("r", b'{"type":"delete","id":"a","target":1}') == Change("delete", "r", "a", 1)
    with pytest.raises(BadRequest) as caught:
        parse_send_body("r", b'{"type":"join","id":"a"}')
    assert caught.value.code == "unknown_type"


def _request(**fields: object) -> dict[str, object]:
    return {"op": "process", "ref": 1, "room": "r", "nick": "alice", "id": "a", "body": "", "ts": 5, **fields}


@pytest.mark.parametrize("fields, code", [
    ({"kind": "shout", "target": 1}, "bad_field"),
    ({"kind": "react", "target": 1, "emoji": "no"}, "bad_emoji"),
    ({"kind": "delete"}, "bad_field"),
    ({"kind": "delete", "target": 1, "reply_to": 1}, "bad_field"),
    ({"reply_to": "1"}, "bad_field"),
])
def test_the_processor_checks_change_fields_too(fields: dict[str, object], code: str) -> None:
    answer = parse_process(_request(**fields), max_body_chars=10)
    assert isinstance(answer, dict) and answer["op"] == "rejected" and answer["code"] == code, answer


def test_the_processor_takes_moderator_only_as_true() -> None:
    draft = parse_process(_request(kind="delete", target=2, moderator="yes"), max_body_chars=10)
    assert isinstance(draft, Draft) and draft.kind == "delete" and draft.target == 2 and not draft.moderator


def test_edit_window_is_by_the_edits_ts() -> None:
    message = Draft(room="r", nick="Alice", id="m", body="hi", ts=1000, seq=1)
    rules = ChangeRules(edit_window_ms=500, max_reactions=20)
    edit = Draft(room="r", nick="alice", id="e", body="hey", ts=1500, kind="edit", target=1)
    assert apply_change(message, edit, rules).refusal is None  # the author, case-insensitively, just in time
    late = apply_change(message, Draft(room="r", nick="alice", id="e", body="x", ts=1501, kind="edit", target=1), rules)
    assert late.refusal is not None and late.refusal[0] == "edit_window"


def test_a_messages_reactions_are_bounded_on_the_wire() -> None:
    nicks = tuple(f"user{n}" for n in range(250))
    message = Draft(room="r", nick="alice", id="m", body="hi", ts=1, seq=1, reactions=(("👍", nicks), ("🎉", ("bob",))))
    wire = message.to_wire()
    assert wire["reactions"] == {"👍": list(nicks[:100]), "🎉": ["bob"]}
    assert wire["reaction_counts"] == {"👍": 250, "🎉": 1}
