"""A client message id (CID) is stored once per room and nick, however often it comes.

Concurrent copies (two WebSocket connections of one nick; parallel HTTP POSTs)
and sequential retries all get the one seq, and the room holds one message.
The same id from another nick is another message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from support import ChatClient, SquallProcess, http, run_async

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}


async def answer_for(client: ChatClient, cid: str) -> dict[str, Any]:
    return await client.recv_until(lambda f: f["type"] in ("ack", "error") and f.get("id") == cid)


def stored(server: SquallProcess, room: str, token: str) -> list[tuple[str, str, int]]:
    return [(m["nick"], m["id"], m["seq"]) for m in server.history(room, token)]


def test_same_id_over_two_websockets_at_once(server: SquallProcess, room: str) -> None:
    token = server.session("twin")

    async def scenario() -> list[dict[str, Any]]:
        one = await ChatClient.connect(server.address, token)
        two = await ChatClient.connect(server.address, token)
        try:
            frames = [
                {"type": "send", "room": room, "id": f"cid-{n}", "body": f"copy {n}"} for n in range(20)
            ]
            for frame in frames:  # interleaved, nothing awaited in between but the writes
                await one.send_json(frame)
                await two.send_json(frame)
            answers = []
            for frame in frames:
                answers.append(await answer_for(one, frame["id"]))
                answers.append(await answer_for(two, frame["id"]))
            return answers
        finally:
            await one.close()
            await two.close()

    answers = run_async(scenario())
    assert {a["type"] for a in answers} == {"ack"}, answers
    for n in range(20):
        seqs = {a["seq"] for a in answers if a["id"] == f"cid-{n}"}
        assert len(seqs) == 1, (n, seqs)
    messages = stored(server, room, token)
    assert sorted(cid for _nick, cid, _seq in messages) == sorted(f"cid-{n}" for n in range(20))
    assert [seq for _nick, _cid, seq in messages] == list(range(1, 21))


def test_same_id_over_concurrent_http_posts(server: SquallProcess, room: str) -> None:
    token = server.session("poster")

    async def scenario() -> list[Any]:
        posts = [
            http(server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                 json_body={"id": "parallel", "body": "only once"})
            for _ in range(10)
        ]
        return list(await asyncio.gather(*posts))

    responses = run_async(scenario())
    assert [r.status for r in responses] == [200] * 10, responses
    assert {(r.json()["id"], r.json()["seq"]) for r in responses} == {("parallel", 1)}
    assert stored(server, room, token) == [("poster", "parallel", 1)]


def test_same_id_posted_again_later_gets_the_same_seq(server: SquallProcess, room: str) -> None:
    token = server.session("retrier")
    path = f"/api/rooms/{room}/messages"
    first = server.api("POST", path, {"id": "again", "body": "first"}, token=token)
    other = server.api("POST", path, {"id": "between", "body": "another"}, token=token)
    second = server.api("POST", path, {"id": "again", "body": "changed body"}, token=token)
    assert first == (200, {"id": "again", "seq": 1})
    assert other == (200, {"id": "between", "seq": 2})
    assert second == (200, {"id": "again", "seq": 1})
    history = server.history(room, token)
    assert [(m["id"], m["seq"], m["body"]) for m in history] == [("again", 1, "first"), ("between", 2, "another")]


def test_same_id_over_websocket_then_http(server: SquallProcess, room: str) -> None:
    token = server.session("mixed")

    async def scenario() -> tuple[int, int]:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.send_json({"type": "send", "room": room, "id": "both", "body": "hello"})
            ack = await answer_for(client, "both")
        finally:
            await client.close()
        response = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                              json_body={"id": "both", "body": "hello"})
        return ack["seq"], response.json()["seq"]

    assert run_async(scenario()) == (1, 1)
    assert stored(server, room, token) == [("mixed", "both", 1)]


def test_same_id_from_another_nick_is_another_message(server: SquallProcess, room: str) -> None:
    alice, bob = server.session("Alice"), server.session("bob")
    alice_again = server.session("ALICE", token=alice)  # the same user, spelled otherwise
    path = f"/api/rooms/{room}/messages"
    assert server.api("POST", path, {"id": "shared", "body": "from alice"}, token=alice)[1]["seq"] == 1
    assert server.api("POST", path, {"id": "shared", "body": "from bob"}, token=bob)[1]["seq"] == 2
    assert server.api("POST", path, {"id": "shared", "body": "alice again"}, token=alice_again)[1]["seq"] == 1
    assert stored(server, room, bob) == [("Alice", "shared", 1), ("bob", "shared", 2)]


def test_same_id_in_another_room_is_another_message(server: SquallProcess, room: str) -> None:
    token = server.session("roamer")
    for name in (room, room + "-b"):
        status, body = server.api("POST", f"/api/rooms/{name}/messages", {"id": "x", "body": "hi"}, token=token)
        assert (status, body["seq"]) == (200, 1)
