"""Item 8: the read position is the user's, not the connection's. Reading on one
device (POST /api/rooms/R/seen) tells the user's other connections — WebSocket
and SSE — at once, and GET /api/seen gives every device the same positions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import ChatClient, EventStream, SquallProcess, http, run_async, squall_server

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[SquallProcess]:
    with squall_server(tmp_path, env={"SQUALL_DATABASE": store_url}) as server:
        yield server


def test_reading_on_one_device_clears_the_others(server: SquallProcess) -> None:
    status, body = server.api("POST", "/api/account", {"nick": "alice", "password": PASSWORD})
    alice = body["token"]
    bob = server.session("bob")
    for n in range(3):
        assert server.api("POST", "/api/rooms/lobby/messages", {"id": f"b{n}", "body": f"m{n}"}, token=bob)[0] == 200

    async def scenario() -> None:
        phone = await ChatClient.connect(server.address, alice)
        laptop = await EventStream.open(server.address, "lobby", alice, since=3)
        try:
            assert (await phone.join("lobby", since=3))["type"] == "joined"
            await laptop.next_of("joined")
            response = await http(server.address, "POST", "/api/rooms/lobby/seen", token=alice,
                                  json_body={"seq": 99})
            assert response.status == 200 and response.json() == {"room": "lobby", "seq": 3}, response
            seen = await phone.recv_type("seen")
            assert seen == {"type": "seen", "room": "lobby", "seq": 3}
            assert (await laptop.next_of("seen")).json() == seen
            # Bob's connections hear nothing of it: a read position is private.
            status, markers = server.api("GET", "/api/seen", token=bob)
            assert markers == {"rooms": {}}
        finally:
            await laptop.close()
            await phone.close()

    run_async(scenario())
    assert server.api("GET", "/api/seen", token=alice) == (200, {"rooms": {"lobby": 3}})
    # Never lowered by an older device's report.
    assert server.api("POST", "/api/rooms/lobby/seen", {"seq": 1}, token=alice)[0] == 200
    assert server.api("GET", "/api/seen", token=alice)[1] == {"rooms": {"lobby": 3}}
    for bad in ({"seq": 0}, {"seq": "3"}, {"seq": True}, {}):
        status, body = server.api("POST", "/api/rooms/lobby/seen", bad, token=alice)
        assert status == 400 and body["code"] == "bad_field", (bad, body)
    # Only where one may read.
    assert server.api("POST", "/api/rooms", {"name": "secret", "private": True}, token=alice)[0] == 201
    status, body = server.api("POST", "/api/rooms/secret/seen", {"seq": 1}, token=bob)
    assert status == 403 and body["code"] == "not_member", body
