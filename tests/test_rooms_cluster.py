"""Access changes cross the Redis bus: a member kicked through one web node is
put out of the room at once on another, and both nodes refuse them from then on."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import REDIS_URL, ChatClient, http, run_async, squall_cluster

PASSWORD = "correct horse battery"


@pytest.mark.redis
def test_a_kick_on_one_node_closes_the_membership_on_another(tmp_path: Path, redis_prefix: str) -> None:
    env = {"SQUALL_BUS": REDIS_URL, "SQUALL_BUS_PREFIX": f"{redis_prefix}:"}
    with squall_cluster(tmp_path, web=2, env=env) as (first, second):
        tokens = {}
        for nick in ("alice", "carol"):
            status, body = first.api("POST", "/api/account", {"nick": nick, "password": PASSWORD})
            assert status == 201, body
            tokens[nick] = body["token"]
        assert first.api("POST", "/api/rooms", {"name": "secret", "private": True}, token=tokens["alice"])[0] == 201
        assert first.api("POST", "/api/rooms/secret/members", {"nick": "carol"}, token=tokens["alice"])[0] == 200

        async def scenario() -> None:
            # carol reads the room on the second node, which caches her membership.
            client = await ChatClient.connect(second.address, tokens["carol"])
            try:
                assert (await client.join("secret"))["type"] == "joined"
                response = await http(first.address, "POST", "/api/rooms/secret/moderation",
                                      token=tokens["alice"], json_body={"action": "kick", "nick": "carol"})
                assert response.status == 200, response.json()
                evicted = await client.recv_until(lambda f: f.get("type") == "error")
                assert evicted["code"] == "not_member" and evicted["room"] == "secret", evicted
                # The second node forgot its cached membership: a new join is refused too.
                again = await client.join("secret")
                assert again["type"] == "error" and again["code"] == "not_member", again
            finally:
                await client.close()

        run_async(scenario())


@pytest.mark.redis
def test_a_read_position_reaches_the_users_connections_on_another_node(tmp_path: Path, redis_prefix: str) -> None:
    env = {"SQUALL_BUS": REDIS_URL, "SQUALL_BUS_PREFIX": f"{redis_prefix}:"}
    with squall_cluster(tmp_path, web=2, env=env) as (first, second):
        token = first.session("dora")
        assert first.api("POST", "/api/rooms/lobby/messages", {"id": "1", "body": "hi"}, token=token)[0] == 200

        async def scenario() -> None:
            other_device = await ChatClient.connect(second.address, token)
            try:
                assert (await other_device.join("lobby"))["type"] == "joined"
                response = await http(first.address, "POST", "/api/rooms/lobby/seen", token=token,
                                      json_body={"seq": 1})
                assert response.status == 200, response.json()
                assert await other_device.recv_type("seen") == {"type": "seen", "room": "lobby", "seq": 1}
            finally:
                await other_device.close()

        run_async(scenario())
