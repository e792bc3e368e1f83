"""Private rooms hold on the paths the other conversation features added:
search, files posted into the room, and changes (edit, delete, react) — one
access check each (squall/web/access.py), on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from files_support import fetch, image_bytes, uploaded
from support import SquallProcess, http, run_async, squall_server

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("rooms-features"), env={"SQUALL_SEARCH_BURST": "100"}) as server:
        yield server


def account(server: SquallProcess, nick: str) -> str:
    status, body = server.api("POST", "/api/account", {"nick": nick, "password": PASSWORD})
    assert status == 201, (status, body)
    return str(body["token"])


@pytest.fixture(scope="module")
def tokens(server: SquallProcess) -> dict[str, str]:
    """owner owns the private room ``vault`` and the public room ``hall``; member is in vault; outsider is not."""
    tokens = {nick: account(server, nick) for nick in ("owner", "member", "outsider")}
    for name, private in (("vault", True), ("hall", False)):
        status, body = server.api("POST", "/api/rooms", {"name": name, "topic": "", "private": private},
                                  token=tokens["owner"])
        assert status == 201, body
    status, body = server.api("POST", "/api/rooms/vault/members", {"nick": "member"}, token=tokens["owner"])
    assert status == 200, body
    return tokens


def post(server: SquallProcess, room: str, token: str, **fields: object) -> tuple[int, dict[str, object]]:
    return server.api("POST", f"/api/rooms/{room}/messages", fields, token=token)


def test_search_finds_a_private_rooms_messages_for_members_only(server: SquallProcess, tokens: dict[str, str]) -> None:
    assert post(server, "vault", tokens["member"], id="s1", body="the combination is zebra-42")[0] == 200
    assert post(server, "hall", tokens["member"], id="s2", body="zebra crossing ahead")[0] == 200

    def rooms_found(token: str, query: str) -> list[str]:
        response = run_async(http(server.address, "GET", f"/api/search?q={query}", token=token))
        assert response.status == 200, response.json()
        return sorted(hit["room"] for hit in response.json()["results"])

    assert rooms_found(tokens["member"], "zebra") == ["hall", "vault"]
    assert rooms_found(tokens["outsider"], "zebra") == ["hall"]
    response = run_async(http(server.address, "GET", "/api/search?q=zebra&room=vault", token=tokens["outsider"]))
    assert response.status == 403 and response.json()["code"] == "not_member", response.json()


def test_a_file_posted_to_a_private_room_is_for_its_members(server: SquallProcess, tokens: dict[str, str]) -> None:
    stored = run_async(uploaded(server.address, tokens["member"], image_bytes(color="blue"), name="plan.png"))
    status, body = post(server, "vault", tokens["member"], id="f1", body="the plan", attachments=[stored["id"]])
    assert status == 200, body
    assert run_async(fetch(server.address, tokens["owner"], stored["url"])).status == 200
    for url in (stored["url"], stored["thumb"]):
        refused = run_async(fetch(server.address, tokens["outsider"], url))
        assert refused.status == 404 and refused.json()["code"] == "not_found", url  # as if there were none
    # An outsider cannot attach a file to a room they may not post in, either.
    mine = run_async(uploaded(server.address, tokens["outsider"], image_bytes(color="red"), name="x.png"))
    status, body = post(server, "vault", tokens["outsider"], id="f2", body="", attachments=[mine["id"]])
    assert (status, body["code"]) == (403, "not_member")


def test_changes_follow_the_rooms_roles(server: SquallProcess, tokens: dict[str, str]) -> None:
    status, body = post(server, "vault", tokens["member"], id="c1", body="delete me")
    assert status == 200, body
    seq = body["seq"]
    # An outsider can neither react nor delete in a private room.
    for change in ({"type": "react", "emoji": "👍"}, {"type": "delete"}):
        status, body = post(server, "vault", tokens["outsider"], id=f"o-{change['type']}", target=seq, **change)
        assert (status, body["code"]) == (403, "not_member"), body
    # The room's owner, no server admin, moderates it: may delete the member's message.
    status, body = post(server, "vault", tokens["owner"], id="d1", type="delete", target=seq)
    assert status == 200, body
    history = server.api("GET", "/api/rooms/vault/messages", token=tokens["member"])[1]["messages"]
    [deleted] = [m for m in history if m["seq"] == seq]
    assert deleted.get("deleted") is True and deleted["body"] == ""
    # In a public room a plain member is no moderator.
    status, body = post(server, "hall", tokens["member"], id="h1", body="mine")
    status, body = post(server, "hall", tokens["outsider"], id="h2", type="delete", target=body["seq"])
    assert (status, body["code"]) == (403, "forbidden"), body
