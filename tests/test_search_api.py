"""``GET /api/search`` end to end: a real ``squall run`` on each store (SQLite,
then PostgreSQL), messages sent over HTTP, searches over HTTP."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pg_support import temporary_database
from support import SquallProcess, squall_server

MESSAGES = {
    "ops": [
        "we should deploy the new release tomorrow after lunch, once the database backup is done",
        "deploy deploy deploy",
        "我们的数据库挂了，谁能看一下？",
        "你好，大家早上好",
        "<script>alert('x')</script> Deploy & <b>bold</b>",
        "nothing to see here",
    ],
    "dev": ["the deploy script lives in tools/", "Café au lait, résumé"],
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    """One server per store with :data:`MESSAGES` stored (in that order)."""
    data = tmp_path_factory.mktemp("search")

    def run(env: dict[str, str]) -> Iterator[SquallProcess]:
        with squall_server(data, env={"SQUALL_SEARCH_BURST": "1000", **env}) as node:
            token = node.session("poster")
            for room, bodies in MESSAGES.items():
                for n, body in enumerate(bodies):
                    status, answer = node.api(
                        "POST", f"/api/rooms/{room}/messages", {"id": f"{room}{n}", "body": body}, token=token
                    )
                    assert status == 200, answer
            yield node

    if request.param == "sqlite":
        yield from run({})
    else:
        with temporary_database() as url:
            yield from run({"SQUALL_DATABASE": url})


@pytest.fixture(scope="module")
def token(server: SquallProcess) -> str:
    return server.session("seeker")


def search(server: SquallProcess, token: str | None, **params: Any) -> tuple[int, Any]:
    return server.api("GET", "/api/search?" + urllib.parse.urlencode(params), token=token)


def found(server: SquallProcess, token: str, **params: Any) -> list[tuple[str, int]]:
    status, body = search(server, token, **params)
    assert status == 200, body
    return [(hit["room"], hit["seq"]) for hit in body["results"]]


def test_finds_every_message_holding_the_words_best_first(server: SquallProcess, token: str) -> None:
    # "deploy deploy deploy" says it thrice in few words; among equals the newer comes first.
    hits = found(server, token, q="deploy")
    assert hits[0] == ("ops", 2)
    assert set(hits) == {("ops", 1), ("ops", 2), ("ops", 5), ("dev", 1)}
    # Every term must be there, in any order, any case.
    assert found(server, token, q="DATABASE deploy") == [("ops", 1)]
    assert found(server, token, q='"the deploy script"') == [("dev", 1)]
    assert found(server, token, q="deploy lunch nowhere") == []


def test_finds_chinese_without_spaces_and_short_terms(server: SquallProcess, token: str) -> None:
    assert found(server, token, q="数据库") == [("ops", 3)]
    # Two characters: below what the trigram index looks up, found by scanning recent messages.
    assert found(server, token, q="你好") == [("ops", 4)]
    assert found(server, token, q="数据库 谁") == [("ops", 3)]
    assert found(server, token, q="résumé") == [("dev", 2)]


def test_results_carry_the_message_and_an_escaped_highlight(server: SquallProcess, token: str) -> None:
    status, body = search(server, token, q="script")
    assert status == 200
    hits = {(hit["room"], hit["seq"]): hit for hit in body["results"]}
    evil = hits[("ops", 5)]
    assert evil["body"] == MESSAGES["ops"][4] and evil["nick"] == "poster" and evil["ts"] > 0
    # The body's HTML is text; only the marks are ours.
    assert evil["highlight"] == (
        "&lt;<mark>script</mark>&gt;alert('x')&lt;/<mark>script</mark>&gt; Deploy &amp; &lt;b&gt;bold&lt;/b&gt;"
    )
    assert "<mark>script</mark>" in hits[("dev", 1)]["highlight"]
    assert body["terms"] == ["script"]


def test_one_room_only(server: SquallProcess, token: str) -> None:
    assert found(server, token, q="deploy", room="dev") == [("dev", 1)]
    assert found(server, token, q="deploy", room="empty") == []


def test_pages_follow_the_cursor_and_ignore_messages_stored_meanwhile(server: SquallProcess, token: str) -> None:
    status, first = search(server, token, q="deploy", limit=3)
    assert status == 200 and len(first["results"]) == 3 and first["next"]
    poster = server.session("latecomer")
    status, _ = server.api("POST", "/api/rooms/dev/messages", {"id": "late", "body": "deploy later"}, token=poster)
    assert status == 200
    status, second = search(server, token, q="deploy", limit=3, cursor=first["next"])
    assert status == 200 and second["next"] is None
    pages = [(h["room"], h["seq"]) for h in first["results"] + second["results"]]
    assert len(pages) == 4 and set(pages) == {("ops", 1), ("ops", 2), ("ops", 5), ("dev", 1)}
    # A new search sees it.
    assert ("dev", 3) in found(server, token, q="deploy")


@pytest.mark.parametrize(("params", "code", "reason"), [
    ({}, "bad_query", "q=WORDS"),
    ({"q": "   "}, "bad_query", "empty"),
    ({"q": "x" * 201}, "bad_query", "201 characters, more than the limit of 200"),
    ({"q": " ".join(f"w{n}" for n in range(9))}, "bad_query", "9 terms, more than the limit of 8"),
    ({"q": "a\x00b"}, "bad_query", "control"),
    ({"q": "deploy", "limit": "0"}, "bad_param", "between 1 and 50"),
    ({"q": "deploy", "limit": "51"}, "bad_param", "between 1 and 50"),
    ({"q": "deploy", "cursor": "nonsense"}, "bad_cursor", "not one a search page gave"),
    ({"q": "deploy", "cursor": "5.1000"}, "bad_cursor", "not one a search page gave"),
    ({"q": "deploy", "room": "_canary"}, "bad_room", "not a valid name"),
    ({"q": "deploy", "room": "NOPE!"}, "bad_room", "not a valid name"),
])
def test_bad_input_is_refused_with_a_reason(
    server: SquallProcess, token: str, params: dict[str, str], code: str, reason: str
) -> None:
    status, body = search(server, token, **params)
    assert (status, body["code"]) == (400, code)
    assert reason in body["reason"]


def test_unauthenticated_is_refused(server: SquallProcess) -> None:
    status, body = search(server, None, q="deploy")
    assert (status, body["code"]) == (401, "unauthorized")
    status, body = search(server, "not-a-token", q="deploy")
    assert (status, body["code"]) == (401, "unauthorized")


def test_the_canary_room_is_never_found(server: SquallProcess, token: str) -> None:
    status, body = server.api("GET", "/readyz")
    assert status == 200, body  # a canary message went through processor and store
    assert found(server, token, q="readiness canary") == []
    assert found(server, token, q="canary") == []


def test_searches_are_rate_limited_per_user(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_SEARCH_BURST": "3", "SQUALL_SEARCH_RATE": "0.01"}) as node:
        token = node.session("eager")
        statuses = [search(node, token, q="anything")[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, body = search(node, token, q="anything")
        assert (status, body["code"], body["limit"]) == (429, "rate_limited", "search_per_user")
        # Another user has a bucket of their own.
        assert search(node, node.session("other"), q="anything")[0] == 200
