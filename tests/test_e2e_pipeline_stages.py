"""The stage chain end to end: custom ``module:callable`` stages, and ``@room``.

The custom stages live in ``tests/stages_for_test.py``; the processor child of
``squall run`` imports them because this folder is on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_support import TESTS_DIR, connect, post
from support import SquallProcess, run_async, squall_server

CUSTOM_CHAIN = "validate,stages_for_test:shout,stages_for_test:explode,filter,render,mentions,store"


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def custom_server(tmp_path: Path) -> Iterator[SquallProcess]:
    env = {"SQUALL_STAGES": CUSTOM_CHAIN, "PYTHONPATH": _pythonpath()}
    with squall_server(tmp_path / "data", env=env) as server:
        yield server


def test_custom_stages_change_messages_and_a_crash_refuses_only_its_message(
    custom_server: SquallProcess, room: str
) -> None:
    server = custom_server
    alice, bob = server.session("alice"), server.session("bob")

    async def scenario() -> None:
        sender = await connect(server, alice, room)
        reader = await connect(server, bob, room)
        try:
            ack = await sender.send(room, "hello *there* @bob", "s1")
            assert ack["type"] == "ack" and ack["seq"] == 1, ack
            for inbox in (sender, reader):
                message = await inbox.message("s1")
                assert message["body"] == "HELLO *THERE* @BOB", message
                assert "<em>THERE</em>" in message["html"], message
                assert message["mentions"] == ["bob"], message  # later stages see the new body

            refused = await sender.send(room, "this goes boom", "s2")
            assert refused["type"] == "error" and refused["code"] == "internal", refused
            assert "boom" not in refused["reason"].lower(), refused  # details stay in the log

            ack = await sender.send(room, "still fine", "s4")
            assert ack["type"] == "ack" and ack["seq"] == 2, ack
            for inbox in (sender, reader):
                assert (await inbox.message("s4"))["body"] == "STILL FINE"
                assert not [f for f in inbox.frames if f.get("type") == "message" and "BOOM" in f["body"]]
        finally:
            await sender.close()
            await reader.close()

    run_async(scenario())
    assert server.count_lines("stage stages_for_test:explode failed") == 1, server.output()
    assert server.count_lines("RuntimeError: the explode test stage went boom") == 1, server.output()
    assert [m["body"] for m in server.history(room, alice)] == ["HELLO *THERE* @BOB", "STILL FINE"]


def test_stage_crash_over_http_is_internal_500(custom_server: SquallProcess, room: str) -> None:
    """docs/protocol.md §5: code ``internal`` is HTTP 500 ("a server fault")."""
    server = custom_server
    alice = server.session("alice")
    crash_status, crash = server.api("POST", f"/api/rooms/{room}/messages", {"body": "boom", "id": "h1"}, token=alice)
    assert crash["code"] == "internal", (crash_status, crash)
    status, after = server.api("POST", f"/api/rooms/{room}/messages", {"body": "fine", "id": "h2"}, token=alice)
    assert status == 200 and after["seq"] == 1, (status, after)
    assert crash_status == 500, (crash_status, crash)


@pytest.fixture
def room_server(tmp_path: Path) -> Iterator[SquallProcess]:
    with squall_server(tmp_path / "data", env={"SQUALL_ROOM_MENTIONS": "true"}) as server:
        yield server


def test_at_room_mentions_everyone_who_posted(room_server: SquallProcess, room: str) -> None:
    server = room_server
    tokens = {nick: server.session(nick) for nick in ("alice", "Bob", "carol", "dave", "erin")}
    for nick in ("alice", "Bob", "carol"):
        post(server, room, tokens[nick], f"hi from {nick}", f"{nick}-1")
    post(server, "elsewhere", tokens["erin"], "hi elsewhere", "erin-0")

    async def scenario() -> dict[str, object]:
        # dave is in the room but has never posted in it.
        listener = await connect(server, tokens["dave"], room)
        try:
            ack = await listener.send(room, "@room hello", "dave-1")
            assert ack["type"] == "ack", ack
            return await listener.message("dave-1")
        finally:
            await listener.close()

    message = run_async(scenario())
    mentions = message["mentions"]
    assert isinstance(mentions, list)
    assert sorted(mentions) == ["Bob", "alice", "carol"], message
    assert 'class="mention mention-room"' in str(message["html"]), message

    # A second @room, now that dave has posted too.
    answer = post(server, room, tokens["erin"], "@ROOM bye", "erin-1")
    [stored] = [m for m in server.history(room, tokens["erin"]) if m["seq"] == answer["seq"]]
    assert sorted(stored["mentions"]) == ["Bob", "alice", "carol", "dave"], stored


def test_at_room_is_an_ordinary_nick_when_room_mentions_are_off(tmp_path: Path, room: str) -> None:
    with squall_server(tmp_path / "data", env={"SQUALL_ROOM_MENTIONS": "false"}) as server:
        alice, bob = server.session("alice"), server.session("bob")
        post(server, room, bob, "hi", "b1")
        answer = post(server, room, alice, "@room hello", "a1")
        [stored] = [m for m in server.history(room, alice) if m["seq"] == answer["seq"]]
        assert stored["mentions"] == [], stored
        assert "mention" not in stored["html"], stored
