"""Edits, deletes, reactions and replies end to end (issue 12, items 3-5):
``squall run`` with real clients over WebSocket, SSE and long-poll.

A change is a room event with the room's next seq, carrying its target's whole
new state; so a client that resumes with ``since`` (WebSocket join, SSE
``Last-Event-ID``, long-poll cursor) gets the changes to messages it already
holds, after them in order, exactly once: each test checks the exact seqs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from support import ChatClient, EventStream, SquallProcess, http, run_async, squall_server

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000", "SQUALL_ADMINS": "root"}


@pytest.fixture(scope="module")
def tokens(server: SquallProcess) -> dict[str, str]:
    """One session per nick for the module: a nick online is refused to a second guest session."""
    return {nick: server.session(nick) for nick in ("alice", "bob", "root")}


def api(server: SquallProcess, token: str, room: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, answer = server.api("POST", f"/api/rooms/{room}/messages", body, token=token)
    return status, dict(answer)


def ok(server: SquallProcess, token: str, room: str, body: dict[str, Any]) -> int:
    status, answer = api(server, token, room, body)
    assert status == 200, (status, answer)
    return int(answer["seq"])


async def next_event(client: ChatClient) -> dict[str, Any]:
    return await client.recv_until(lambda f: f["type"] in ("message", "change"))


async def ws_ask(client: ChatClient, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame`` and return its ack or error (matched by id)."""
    await client.send_json(frame)
    return await client.recv_until(lambda f: f["type"] in ("ack", "error") and f.get("id") == frame["id"])


def test_changes_live_over_websocket_and_in_history(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    alice, bob = tokens["alice"], tokens["bob"]

    async def main() -> None:
        a = await ChatClient.connect(server.address, alice)
        b = await ChatClient.connect(server.address, bob)
        try:
            await a.join(room)
            await b.join(room)
            ack = await ws_ask(a, {"type": "send", "room": room, "id": "m1", "body": "hello @bob"})
            assert ack["seq"] == 1
            first = await next_event(b)
            assert first["type"] == "message" and first["seq"] == 1

            ack = await ws_ask(b, {"type": "react", "room": room, "id": "r1", "target": 1, "emoji": "👍"})
            assert ack == {"type": "ack", "id": "r1", "room": room, "seq": 2}
            react = await next_event(a)
            assert (react["type"], react["kind"], react["seq"], react["target"], react["nick"]) == (
                "change", "react", 2, 1, "bob")
            assert react["message"]["reactions"] == {"👍": ["bob"]}
            assert react["message"]["reaction_counts"] == {"👍": 1}
            assert react["message"]["seq"] == 1 and react["message"]["body"] == "hello @bob"

            refused = await ws_ask(b, {"type": "edit", "room": room, "id": "e0", "target": 1, "body": "mine"})
            assert refused["code"] == "forbidden", refused
            missing = await ws_ask(b, {"type": "react", "room": room, "id": "r9", "target": 77, "emoji": "👍"})
            assert missing["code"] == "not_found", missing
            bad = await ws_ask(b, {"type": "react", "room": room, "id": "r8", "target": 1, "emoji": "yes"})
            assert bad["code"] == "bad_emoji", bad
            empty = await ws_ask(a, {"type": "edit", "room": room, "id": "e9", "target": 1, "body": "  "})
            assert empty["code"] == "empty_body", empty

            ack = await ws_ask(a, {"type": "edit", "room": room, "id": "e1", "target": 1, "body": "hello **all**"})
            assert ack["seq"] == 3
            edit = await next_event(b)
            assert edit["kind"] == "edit" and edit["seq"] == 3
            state = edit["message"]
            assert state["body"] == "hello **all**" and "<strong>all</strong>" in state["html"]
            assert state["edited"] is True and state["mentions"] == [] and state["reactions"] == {"👍": ["bob"]}

            ack = await ws_ask(a, {"type": "send", "room": room, "id": "m2", "body": "see above", "reply_to": 1})
            reply = await next_event(b)
            assert reply["seq"] == ack["seq"] == 4
            assert reply["reply_to"] == 1 and reply["reply_snippet"] == {"nick": "alice", "body": "hello **all**"}

            ack = await ws_ask(a, {"type": "delete", "room": room, "id": "d1", "target": 1})
            gone = await next_event(b)
            assert gone["seq"] == ack["seq"] == 5 and gone["kind"] == "delete"
            assert gone["message"]["deleted"] is True and gone["message"]["body"] == gone["message"]["html"] == ""
            assert "reactions" not in gone["message"]
        finally:
            await a.close()
            await b.close()

    run_async(main())
    # History shows messages in their current state and no change rows.
    status, page = server.api("GET", f"/api/rooms/{room}/messages?wait=0&limit=10", token=alice)
    assert status == 200
    assert [(m["seq"], m.get("deleted", False)) for m in page["messages"]] == [(1, True), (4, False)]
    assert page["messages"][1]["reply_snippet"] is None  # its quote went with the message
    status, older = server.api("GET", f"/api/rooms/{room}/messages?before=4&limit=1", token=alice)
    assert [m["seq"] for m in older["messages"]] == [1] and older["seq"] == 1


def test_http_changes_idempotency_and_refusals(server: SquallProcess, tokens: dict[str, str], room: str) -> None:
    alice, bob, root = tokens["alice"], tokens["bob"], tokens["root"]
    assert ok(server, alice, room, {"body": "one", "id": "h1"}) == 1
    react = {"type": "react", "id": "x1", "target": 1, "emoji": "🎉"}
    assert ok(server, bob, room, react) == 2
    assert ok(server, bob, room, react) == 2  # the same (room, nick, id): stored once, the same answer
    assert ok(server, bob, room, {"type": "unreact", "id": "x2", "target": 1, "emoji": "🎉"}) == 3
    assert api(server, bob, room, {"type": "edit", "id": "x3", "target": 1, "body": "hijack"})[0] == 403
    assert api(server, bob, room, {"type": "delete", "id": "x4", "target": 1}) == (
        403, {"code": "forbidden", "reason": "only its author or a moderator may delete a message", "id": "x4"})
    assert api(server, bob, room, {"type": "delete", "id": "x5", "target": 99})[0] == 404
    assert api(server, bob, room, {"type": "react", "id": "x6", "target": 1, "emoji": "👍👍"})[1]["code"] == "bad_emoji"
    assert api(server, bob, room, {"type": "shout", "id": "x7"})[1]["code"] == "unknown_type"
    assert api(server, bob, room, {"body": "re", "id": "x8", "reply_to": 50})[0] == 404
    assert api(server, bob, room, {"type": "edit", "id": "x9", "target": 1})[1] == {
        "code": "bad_field", "reason": "'edit' needs a 'body' field", "id": "x9"}
    # A server admin (`admins`) moderates every room.
    assert ok(server, root, room, {"type": "delete", "id": "z1", "target": 1}) == 4
    status, page = server.api("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=alice)
    assert [(m["type"], m["seq"]) for m in page["messages"]] == [
        ("message", 1), ("change", 2), ("change", 3), ("change", 4)]
    assert page["seq"] == 4


async def _make_changes(server: SquallProcess, room: str, alice: str, bob: str) -> None:
    """Seq 3..7 while the reader is away: a react, an edit, a delete, a new message, an unreact."""
    async def post(token: str, body: dict[str, Any]) -> int:
        response = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=token, json_body=body)
        assert response.status == 200, response.body
        return int(response.json()["seq"])

    assert await post(bob, {"type": "react", "id": "c1", "target": 1, "emoji": "❤️"}) == 3
    assert await post(alice, {"type": "edit", "id": "c2", "target": 1, "body": "first, edited"}) == 4
    assert await post(alice, {"type": "delete", "id": "c3", "target": 2}) == 5
    assert await post(alice, {"body": "third", "id": "c4", "reply_to": 1}) == 6
    assert await post(bob, {"type": "unreact", "id": "c5", "target": 1, "emoji": "❤️"}) == 7


def _check_resumed(events: list[dict[str, Any]]) -> None:
    assert [(e["seq"], e["type"], e.get("kind")) for e in events] == [
        (3, "change", "react"), (4, "change", "edit"), (5, "change", "delete"),
        (6, "message", None), (7, "change", "unreact"),
    ]
    # Applied in order to what the client held, the changes leave the current state.
    held = {1: {"body": "first"}, 2: {"body": "second"}}
    for event in events:
        if event["type"] == "change":
            held[event["target"]] = event["message"]
        else:
            held[event["seq"]] = event
    assert held[1]["body"] == "first, edited" and held[1]["edited"] and "reactions" not in held[1]
    assert held[2]["deleted"] is True and held[2]["body"] == ""
    assert held[6]["reply_snippet"] == {"nick": "alice", "body": "first, edited"}


def _start(server: SquallProcess, tokens: dict[str, str], room: str) -> tuple[str, str]:
    alice, bob = tokens["alice"], tokens["bob"]
    assert ok(server, alice, room, {"body": "first", "id": "s1"}) == 1
    assert ok(server, alice, room, {"body": "second", "id": "s2"}) == 2
    return alice, bob


def test_websocket_resume_with_since_gets_each_change_once(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    alice, bob = _start(server, tokens, room)

    async def main() -> None:
        await _make_changes(server, room, alice, bob)
        reader = await ChatClient.connect(server.address, bob)
        try:
            await reader.join(room, since=2)
            events = [await next_event(reader) for _ in range(5)]
            _check_resumed(events)
            await reader.send_json({"type": "ping"})
            assert (await reader.recv_until(lambda f: f["type"] in ("pong", "message", "change")))["type"] == "pong"
        finally:
            await reader.close()

    run_async(main())


def test_sse_resume_with_last_event_id_gets_each_change_once(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    alice, bob = _start(server, tokens, room)

    async def main() -> None:
        stream = await EventStream.open(server.address, room, bob, last_event_id=2)
        try:
            # Live from here: the changes come while the stream is open.
            await stream.next_of("joined")
            await _make_changes(server, room, alice, bob)
            events = []
            for _ in range(5):
                event = await stream.next_of("message")
                assert event.id == str(event.json()["seq"])  # every change carries its seq as the SSE id
                events.append(event.json())
            _check_resumed(events)
        finally:
            await stream.close()
        # Reconnecting from the middle (Last-Event-ID 4) replays only what follows.
        again = await EventStream.open(server.address, room, bob, last_event_id=4)
        try:
            seqs = [(await again.next_of("message")).json()["seq"] for _ in range(3)]
            assert seqs == [5, 6, 7]
        finally:
            await again.close()

    run_async(main())


def test_long_poll_resume_gets_each_change_once(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    alice, bob = _start(server, tokens, room)

    async def main() -> None:
        # A parked poll is answered by the first change.
        parked = asyncio.ensure_future(
            http(server.address, "GET", f"/api/rooms/{room}/messages?since=2&wait=10", token=bob)
        )
        await _make_changes(server, room, alice, bob)
        first = (await parked).json()
        events = first["messages"]
        cursor = first["seq"]
        while cursor < 7:
            answer = (await http(
                server.address, "GET", f"/api/rooms/{room}/messages?since={cursor}&wait=0", token=bob
            )).json()
            events += answer["messages"]
            cursor = answer["seq"]
        _check_resumed(events)

    run_async(main())


def test_edits_refused_after_the_window(tmp_path: Path, room: str) -> None:
    with squall_server(tmp_path / "data", env={"SQUALL_EDIT_WINDOW": "0"}) as server:
        alice = server.session("alice")
        assert ok(server, alice, room, {"body": "typo", "id": "w1"}) == 1
        status, answer = api(server, alice, room, {"type": "edit", "id": "w2", "target": 1, "body": "fixed"})
        assert (status, answer["code"]) == (403, "edit_window"), answer
        # Deleting has no window.
        assert ok(server, alice, room, {"type": "delete", "id": "w3", "target": 1}) == 2
