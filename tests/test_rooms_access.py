"""Rooms end to end: a real ``squall run`` on each store (``store_url``).

A non-member tries every path into a private room — WebSocket join, send and
typing; SSE; long-poll; history; members; HTTP send and typing; the directory —
and is refused with the right code. Moderation takes effect on open
connections at once: a kicked WebSocket member is told and leaves the room, a
banned SSE reader's stream ends with an error event, a parked long-poll is
answered 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ChatClient, EventStream, SquallProcess, http, run_async, squall_server

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[SquallProcess]:
    with squall_server(tmp_path, env={"SQUALL_DATABASE": store_url, "SQUALL_ADMINS": "Root"}) as server:
        yield server


def account(server: SquallProcess, nick: str) -> str:
    status, body = server.api("POST", "/api/account", {"nick": nick, "password": PASSWORD})
    assert status == 201, (status, body)
    return str(body["token"])


def private_room(server: SquallProcess) -> dict[str, str]:
    """alice owns the private room ``secret``, carol is a member, bob is not."""
    tokens = {nick: account(server, nick) for nick in ("alice", "bob", "carol", "root")}
    status, body = server.api("POST", "/api/rooms", {"name": "secret", "topic": "plans", "private": True},
                              token=tokens["alice"])
    assert status == 201, body
    status, body = server.api("POST", "/api/rooms/secret/members", {"nick": "carol"}, token=tokens["alice"])
    assert status == 200 and body["role"] == "member", body
    return tokens


def test_a_non_member_is_refused_on_every_path(server: SquallProcess) -> None:
    tokens = private_room(server)
    bob, carol = tokens["bob"], tokens["carol"]
    status, body = server.api("POST", "/api/rooms/secret/messages", {"id": "c1", "body": "hello"}, token=carol)
    assert status == 200, body

    async def over_websocket() -> None:
        client = await ChatClient.connect(server.address, bob)
        try:
            refused = await client.join("secret")
            assert refused["type"] == "error" and refused["code"] == "not_member", refused
            assert refused["room"] == "secret" and "private" in refused["reason"]
            await client.send_json({"type": "send", "room": "secret", "id": "b1", "body": "let me in"})
            answer = await client.recv_until(lambda f: f.get("id") == "b1")
            assert answer["type"] == "error" and answer["code"] == "not_member", answer
            await client.send_json({"type": "typing", "room": "secret"})
            typing = await client.recv_until(lambda f: f.get("type") == "error")
            assert typing["code"] == "not_member" and typing["room"] == "secret", typing
        finally:
            await client.close()

    async def over_http() -> None:
        address = server.address
        for path in ("/api/rooms/secret/events", "/api/rooms/secret/messages?since=0&wait=0",
                     "/api/rooms/secret/messages", "/api/rooms/secret/members", "/api/rooms/secret"):
            response = await http(address, "GET", path, token=bob)
            assert response.status == 403 and response.json()["code"] == "not_member", (path, response)
        response = await http(address, "POST", "/api/rooms/secret/messages", token=bob,
                              json_body={"id": "b2", "body": "hi"})
        assert response.status == 403 and response.json() == {
            "code": "not_member", "id": "b2", "reason": response.json()["reason"]}
        response = await http(address, "POST", "/api/rooms/secret/typing", token=bob)
        assert response.status == 403 and response.json()["code"] == "not_member"
        # A second poll, now answered from this node's cache, is refused the same way.
        response = await http(address, "GET", "/api/rooms/secret/messages?since=0&wait=0", token=bob)
        assert response.status == 403 and response.json()["code"] == "not_member"

    run_async(over_websocket())
    run_async(over_http())
    status, body = server.api("GET", "/api/rooms?q=secret", token=bob)
    assert status == 200 and body["rooms"] == [], body
    # Members, and a server admin, read it.
    assert [m["body"] for m in server.history("secret", carol)] == ["hello"]
    assert [m["body"] for m in server.history("secret", tokens["root"])] == ["hello"]
    # Nothing bob tried was stored.
    assert [m["id"] for m in server.history("secret", tokens["alice"])] == ["c1"]


def test_a_member_kicked_or_banned_loses_the_room_at_once(server: SquallProcess) -> None:
    tokens = private_room(server)
    alice, carol = tokens["alice"], tokens["carol"]

    async def scenario() -> None:
        client = await ChatClient.connect(server.address, carol)
        stream = await EventStream.open(server.address, "secret", carol)
        try:
            joined = await client.join("secret")
            assert joined["type"] == "joined", joined
            assert (await stream.next_of("joined")).json()["room"] == "secret"
            response = await http(server.address, "POST", "/api/rooms/secret/moderation", token=alice,
                                  json_body={"action": "kick", "nick": "carol"})
            assert response.status == 200, response.json()
            evicted = await client.recv_until(lambda f: f.get("type") == "error")
            assert evicted["code"] == "not_member" and evicted["room"] == "secret", evicted
            ended = await stream.next_of("refused")
            assert ended.json()["code"] == "not_member"
            with pytest.raises(EOFError):
                await stream.next_event()
            # Gone for good: the next send is refused.
            await client.send_json({"type": "send", "room": "secret", "id": "k1", "body": "still here?"})
            answer = await client.recv_until(lambda f: f.get("id") == "k1")
            assert answer["code"] == "not_member", answer
        finally:
            await stream.close()
            await client.close()

    run_async(scenario())


def test_a_parked_poll_is_refused_when_its_reader_is_banned(server: SquallProcess) -> None:
    tokens = private_room(server)
    alice, carol = tokens["alice"], tokens["carol"]

    async def scenario() -> None:
        first = await http(server.address, "GET", "/api/rooms/secret/messages?since=0&wait=0", token=carol)
        assert first.status == 200, first
        parked = asyncio.ensure_future(
            http(server.address, "GET", "/api/rooms/secret/messages?since=0&wait=30", token=carol)
        )
        # The poll is parked once the node reports it waiting.
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: server.wait_health(lambda h: h["waiting_polls"] >= 1)
        )
        response = await http(server.address, "POST", "/api/rooms/secret/moderation", token=alice,
                              json_body={"action": "ban", "nick": "carol"})
        assert response.status == 200, response.json()
        answer = await parked
        assert answer.status == 403 and answer.json()["code"] == "banned", answer
        again = await http(server.address, "GET", "/api/rooms/secret/messages?since=0&wait=0", token=carol)
        assert again.status == 403 and again.json()["code"] == "banned"

    run_async(scenario())


def test_mute_and_the_rules_of_who_moderates(server: SquallProcess) -> None:
    tokens = private_room(server)
    alice, bob, carol = tokens["alice"], tokens["bob"], tokens["carol"]

    def moderate(token: str, **body: Any) -> tuple[int, Any]:
        return server.api("POST", "/api/rooms/secret/moderation", body, token=token)

    assert moderate(carol, action="mute", nick="alice")[1]["code"] == "forbidden"
    assert moderate(bob, action="ban", nick="carol")[1]["code"] == "forbidden"
    assert moderate(alice, action="mute", nick="carol", minutes=0)[0] == 400
    assert moderate(alice, action="explode", nick="carol")[1]["code"] == "bad_field"
    assert moderate(alice, action="mute", nick="nobody")[1]["code"] == "unknown_user"
    assert moderate(alice, action="mute", nick="alice")[1]["code"] == "forbidden"
    status, body = moderate(alice, action="mute", nick="carol", minutes=5)
    assert status == 200 and body["muted_until"] > 0, body
    status, body = server.api("POST", "/api/rooms/secret/messages", {"id": "m1", "body": "hm"}, token=carol)
    assert status == 403 and body["code"] == "muted" and "muted" in body["reason"], body
    assert moderate(alice, action="unmute", nick="carol")[0] == 200
    status, body = server.api("POST", "/api/rooms/secret/messages", {"id": "m2", "body": "ok"}, token=carol)
    assert status == 200, body
    # A promoted moderator mutes a member, but not the owner.
    dave = account(server, "dave")
    assert server.api("POST", "/api/rooms/secret/members", {"nick": "dave"}, token=alice)[0] == 200
    status, body = server.api("POST", "/api/rooms/secret/members", {"nick": "carol", "role": "moderator"},
                              token=alice)
    assert status == 200, body
    assert moderate(carol, action="mute", nick="dave", minutes=1)[0] == 200
    assert moderate(carol, action="ban", nick="alice")[1]["code"] == "forbidden"
    # Only the owner invites; removal ends membership.
    assert server.api("POST", "/api/rooms/secret/members", {"nick": "bob"}, token=carol)[1]["code"] == "forbidden"
    assert server.api("DELETE", "/api/rooms/secret/members/dave", token=alice)[0] == 204
    status, body = server.api("GET", "/api/rooms/secret/messages", token=dave)
    assert status == 403 and body["code"] == "not_member", body


def test_directory_create_and_default_room(server: SquallProcess) -> None:
    alice = account(server, "alice")
    guest = server.session("visitor")
    status, me = server.api("GET", "/api/me", token=guest)
    assert me["default_room"] == "lobby", me
    # Guests may not create rooms (a guest nick can change hands).
    status, body = server.api("POST", "/api/rooms", {"name": "mine"}, token=guest)
    assert status == 403 and body["code"] == "not_registered", body
    for name, topic in (("cooking", "recipes"), ("cars", "engines"), ("books", "")):
        status, body = server.api("POST", "/api/rooms", {"name": name, "topic": topic}, token=alice)
        assert status == 201 and body["owner"] == "alice", body
    status, body = server.api("POST", "/api/rooms", {"name": "cars"}, token=alice)
    assert status == 409 and body["code"] == "room_exists", body
    for bad in ({"name": "Bad Name"}, {"name": "dm-x"}, {"name": "ok", "topic": "x" * 201},
                {"name": "ok", "private": "yes"}, {"name": "ok", "topic": "a\u202eb"}):
        status, body = server.api("POST", "/api/rooms", bad, token=alice)
        assert status == 400, (bad, body)
    # A room that is merely posted to is public and listed.
    assert server.api("POST", "/api/rooms/chatter/messages", {"id": "1", "body": "hi"}, token=guest)[0] == 200
    status, body = server.api("GET", "/api/rooms?limit=2", token=guest)
    assert [r["name"] for r in body["rooms"]] == ["books", "cars"] and body["next"] == "cars", body
    assert body["rooms"][1] | {"last_activity": 0} == {
        "name": "cars", "topic": "engines", "private": False, "members": 1, "last_activity": 0}
    status, body = server.api("GET", "/api/rooms?limit=2&cursor=cars", token=guest)
    assert [r["name"] for r in body["rooms"]] == ["chatter", "cooking"], body
    status, body = server.api("GET", "/api/rooms?q=oo", token=guest)
    assert [r["name"] for r in body["rooms"]] == ["books", "cooking"], body
    for query in ("q=%20%3B", "q=" + "a" * 65, "limit=0", "limit=1001", "cursor=%2F"):
        status, body = server.api("GET", f"/api/rooms?{query}", token=guest)
        assert status == 400 and body["code"] == "bad_param", (query, body)
    assert server.api("GET", "/api/rooms")[0] == 401


def test_direct_messages(server: SquallProcess) -> None:
    tokens = {nick: account(server, nick) for nick in ("alice", "Bob", "carol")}
    status, first = server.api("POST", "/api/dms", {"nicks": ["bob"]}, token=tokens["alice"])
    assert status == 200 and first["room"].startswith("dm-") and first["nicks"] == ["Bob"], first
    status, second = server.api("POST", "/api/dms", {"nicks": ["ALICE"]}, token=tokens["Bob"])
    assert second["room"] == first["room"], second
    room = first["room"]
    assert server.api("POST", f"/api/rooms/{room}/messages", {"id": "d1", "body": "psst"},
                      token=tokens["Bob"])[0] == 200
    status, listed = server.api("GET", "/api/dms", token=tokens["alice"])
    assert listed["dms"][0]["room"] == room and listed["dms"][0]["nicks"] == ["Bob"], listed
    status, body = server.api("GET", f"/api/rooms/{room}/messages", token=tokens["carol"])
    assert status == 403 and body["code"] == "not_member", body
    assert server.api("GET", "/api/dms", token=tokens["carol"])[1] == {"dms": []}
    # A DM room nobody made yet cannot be taken by joining or posting it.
    status, body = server.api("POST", "/api/rooms/dm-0123/messages", {"id": "x", "body": "mine"},
                              token=tokens["carol"])
    assert status == 403 and body["code"] == "not_member", body
    for bad in ({"nicks": []}, {"nicks": ["alice"]}, {"nicks": ["x"] * 9}, {"nicks": "bob"}):
        status, body = server.api("POST", "/api/dms", bad, token=tokens["alice"])
        assert status == 400, (bad, body)
    status, body = server.api("POST", "/api/dms", {"nicks": ["ghost"]}, token=tokens["alice"])
    assert status == 404 and body["code"] == "unknown_user", body


def test_a_ban_and_a_mute_in_a_public_room(server: SquallProcess) -> None:
    alice, bob = account(server, "alice"), account(server, "bob")
    assert server.api("POST", "/api/rooms", {"name": "agora"}, token=alice)[0] == 201
    assert server.api("POST", "/api/rooms/agora/messages", {"id": "1", "body": "hi"}, token=bob)[0] == 200

    def moderate(action: str) -> None:
        status, body = server.api("POST", "/api/rooms/agora/moderation", {"action": action, "nick": "bob"},
                                  token=alice)
        assert status == 200, body

    moderate("mute")
    status, body = server.api("POST", "/api/rooms/agora/messages", {"id": "2", "body": "hm"}, token=bob)
    assert (status, body["code"]) == (403, "muted")
    assert server.api("GET", "/api/rooms/agora/messages", token=bob)[0] == 200  # muted still reads
    moderate("ban")

    async def banned_join() -> None:
        client = await ChatClient.connect(server.address, bob)
        try:
            refused = await client.join("agora")
            assert refused["type"] == "error" and refused["code"] == "banned", refused
        finally:
            await client.close()

    run_async(banned_join())
    status, body = server.api("GET", "/api/rooms/agora/messages?since=0&wait=0", token=bob)
    assert (status, body["code"]) == (403, "banned")
    moderate("unban")
    moderate("unmute")
    assert server.api("POST", "/api/rooms/agora/messages", {"id": "3", "body": "back"}, token=bob)[0] == 200
