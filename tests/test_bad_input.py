"""Bad input over every entry point, against one real server, code by code.

A bad WebSocket frame is answered with an ``error`` frame carrying the exact
code, and the same connection keeps working (a ping round trip proves it);
only an oversized frame (1009) and a bad token (4001) close it. Bad HTTP
requests get the exact status and JSON code. The last test shows that after
all of this the server still delivers to healthy clients.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from support import ChatClient, SquallProcess, http, run_async, squall_server

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}

ROOM = "bad-input"
LONG = "x" * 65


@pytest.fixture(scope="module")
def token(server: SquallProcess) -> str:
    return server.session("tester")


def _send(**fields: Any) -> str:
    return json.dumps({"type": "send", "room": ROOM, "id": "c1", "body": "hi", **fields})


def _send_without(name: str) -> str:
    frame = {"type": "send", "room": ROOM, "id": "c1", "body": "hi"}
    del frame[name]
    return json.dumps(frame)


WS_FRAMES = [
    # not JSON
    ("not json", "bad_json"),
    ("", "bad_json"),
    ("{", "bad_json"),
    ("{'type': 'ping'}", "bad_json"),
    # JSON but not an object
    ("[]", "bad_frame"),
    ("42", "bad_frame"),
    ('"ping"', "bad_frame"),
    ("null", "bad_frame"),
    # the type
    ("{}", "bad_field"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"type":5}', "unknown_type"),
    ('{"type":"Send"}', "unknown_type"),
    # missing or wrong-typed fields
    (_send_without("body"), "bad_field"),
    (_send_without("room"), "bad_field"),
    (_send_without("id"), "bad_field"),
    (_send(body=5), "bad_field"),
    (_send(body=None), "bad_field"),
    (_send(body={"text": "hi"}), "bad_field"),
    ('{"type":"join"}', "bad_field"),
    ('{"type":"join","room":"bad-input","since":"5"}', "bad_field"),
    ('{"type":"join","room":"bad-input","since":-1}', "bad_field"),
    ('{"type":"join","room":"bad-input","since":true}', "bad_field"),
    ('{"type":"join","room":"bad-input","since":2.5}', "bad_field"),
    ('{"type":"leave"}', "bad_field"),
    # bad room names
    ('{"type":"join","room":"Bad Room"}', "bad_room"),
    ('{"type":"join","room":""}', "bad_room"),
    ('{"type":"join","room":"-x"}', "bad_room"),
    ('{"type":"join","room":"a/b"}', "bad_room"),
    ('{"type":"join","room":5}', "bad_room"),
    ('{"type":"join","room":"' + "r" * 65 + '"}', "bad_room"),
    ('{"type":"leave","room":"UPPER"}', "bad_room"),
    ('{"type":"typing","room":"x y"}', "bad_room"),
    (_send(room="Nope!"), "bad_room"),
    # bad ids
    (_send(id=""), "bad_id"),
    (_send(id="i" * 65), "bad_id"),
    (_send(id=12), "bad_id"),
    # bodies the processor refuses (answered with the send's id)
    (_send(body=""), "empty_body"),
    (_send(body="   \n\t "), "empty_body"),
    (_send(body="x" * 4001), "body_too_long"),
    (_send(body="a\x00b"), "bad_body"),
    (_send(body="ring\x07"), "bad_body"),
    (_send(body="\x1b[2J"), "bad_body"),
    (_send(body="del\x7f"), "bad_body"),
]


@pytest.mark.parametrize(("frame", "code"), WS_FRAMES, ids=[f"{c}:{f[:30]}" for f, c in WS_FRAMES])
def test_bad_frame_gets_its_code_and_the_connection_stays(
    server: SquallProcess, token: str, frame: str, code: str
) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send(frame)
            error = await client.recv_type("error")
            assert error["code"] == code, error
            assert error["reason"]
            if code in ("empty_body", "body_too_long", "bad_body"):
                assert error["id"] == "c1"
            await client.ping()
        finally:
            await client.close()

    run_async(scenario())


def test_binary_frame(server: SquallProcess, token: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send(b'{"type":"ping"}')
            error = await client.recv_type("error")
            assert error["code"] == "binary_frame", error
            await client.ping()
        finally:
            await client.close()

    run_async(scenario())


def test_longest_body_is_accepted(server: SquallProcess, token: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.send_json({"type": "send", "room": ROOM, "id": "longest", "body": "y" * 4000})
            answer = await client.recv_until(lambda f: f["type"] in ("ack", "error"))
            assert answer["type"] == "ack" and answer["id"] == "longest", answer
        finally:
            await client.close()

    run_async(scenario())


def test_text_frame_with_invalid_utf8_closes_with_1007(server: SquallProcess, token: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send(b'{"type":"ping","x":"\xff"}', text=True)
            with pytest.raises(ConnectionClosed):
                await client.recv_json()
            assert client.connection.close_code == 1007
        finally:
            await client.close()

    run_async(scenario())


def test_fragmented_text_message_is_read_whole(server: SquallProcess, token: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send(['{"type":', '"ping"', "}"])
            await client.recv_type("pong")
        finally:
            await client.close()

    run_async(scenario())


@pytest.mark.parametrize("size", [64 * 1024 + 1, 256 * 1024])
def test_frame_over_the_size_limit_closes_with_1009(server: SquallProcess, token: str, size: int) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send("x" * size)
            with pytest.raises(ConnectionClosed):
                await client.recv_json()
            assert client.connection.close_code == 1009
        finally:
            await client.close()

    run_async(scenario())


def test_frame_at_the_size_limit_is_read(server: SquallProcess, token: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            frame = json.dumps({"type": "ping", "pad": ""})
            await client.connection.send(frame[:-2] + "p" * (64 * 1024 - len(frame)) + '"}')
            await client.recv_type("pong")
        finally:
            await client.close()

    run_async(scenario())


BAD_TOKENS = [None, "", "garbage", "2|1:0|10:1700000000|14:squall-session|8:dGVzdGVy|00"]


def test_websocket_with_bad_or_missing_token_closes_with_4001(server: SquallProcess, token: str) -> None:
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")  # signature broken

    async def refused(bad_token: str | None) -> int | None:
        client = await ChatClient.connect(server.address, bad_token)
        try:
            with pytest.raises(ConnectionClosed):
                await client.recv_json()
            return client.connection.close_code
        finally:
            await client.close()

    async def scenario() -> list[int | None]:
        # All at once: each waits for the server to end the connection.
        return list(await asyncio.gather(*(refused(t) for t in [*BAD_TOKENS, forged])))

    assert run_async(scenario()) == [4001] * (len(BAD_TOKENS) + 1)


def test_unauthorized_close_handshake_completes_promptly(server: SquallProcess) -> None:
    """The server must read the client's close frame and end the TCP connection.

    Its own abort timer fires after 5 s; a close that takes that long means the
    server never read our half of the handshake.
    """
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        client = await ChatClient.connect(server.address, "garbage")
        started = loop.time()
        try:
            with pytest.raises(ConnectionClosed):
                await client.recv_json()
            await client.connection.wait_closed()
            return loop.time() - started
        finally:
            await client.close()

    elapsed = run_async(scenario())
    assert elapsed < 2.0, f"close handshake took {elapsed:.2f} s: the server did not read the close reply"


# -- HTTP -------------------------------------------------------------------------------

UNAUTHORIZED = [
    ("GET", f"/api/rooms/{ROOM}/messages", None),
    ("GET", f"/api/rooms/{ROOM}/messages?since=0", None),
    ("POST", f"/api/rooms/{ROOM}/messages", {"body": "hi", "id": "x"}),
    ("GET", f"/api/rooms/{ROOM}/events", None),
    ("GET", f"/api/rooms/{ROOM}/members", None),
    ("POST", f"/api/rooms/{ROOM}/typing", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNAUTHORIZED)
@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer garbage", "Bearer a|b|c", "Basic dGVzdGVy"])
def test_http_without_a_valid_token_is_401(
    server: SquallProcess, method: str, path: str, body: Any, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = run_async(http(server.address, method, path, json_body=body, headers=headers))
    assert response.status == 401, response
    assert response.json()["code"] == "unauthorized"
    assert response.headers["content-type"].startswith("application/json")


def test_token_in_query_string_is_checked_too(server: SquallProcess) -> None:
    response = run_async(http(server.address, "GET", f"/api/rooms/{ROOM}/messages?token=nope"))
    assert (response.status, response.json()["code"]) == (401, "unauthorized")


BAD_PARAMS = [
    "wait=abc", "wait=-1", "wait=61", "wait=nan", "wait=inf", "wait=",
    "limit=0", "limit=1001", "limit=abc", "limit=1.5", "limit=-5",
    "since=-1", "since=abc", "since=1.5", "since=9007199254740992",
    "since=", "since=&wait=0", "since=%20", "limit=", "since=0&limit=",
    "before=0", "before=x", "before=-3", "before=",
    "since=1&before=5",
]


@pytest.mark.parametrize("query", BAD_PARAMS)
def test_out_of_range_query_parameters_are_400(server: SquallProcess, token: str, query: str) -> None:
    if query == "wait=":  # empty means "the default"
        query = "since=0&wait=&limit=abc"
    response = run_async(http(server.address, "GET", f"/api/rooms/{ROOM}/messages?{query}", token=token))
    assert response.status == 400, response
    assert response.json()["code"] == "bad_param"


@pytest.mark.parametrize("query", ["since=", "since=abc", "since=-1", "since=&x=1"])
def test_bad_since_on_an_event_stream_is_400(server: SquallProcess, token: str, query: str) -> None:
    response = run_async(http(
        server.address, "GET", f"/api/rooms/{ROOM}/events?{query}", token=token,
        headers={"Last-Event-ID": "0"},  # must not stand in for a since that is there but bad
    ))
    assert (response.status, response.json()["code"]) == (400, "bad_param"), response


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5"])
def test_bad_last_event_id_is_400(server: SquallProcess, token: str, last_event_id: str) -> None:
    response = run_async(http(
        server.address, "GET", f"/api/rooms/{ROOM}/events", token=token,
        headers={"Last-Event-ID": last_event_id},
    ))
    assert (response.status, response.json()["code"]) == (400, "bad_param")


@pytest.mark.parametrize("path", [
    "/api/rooms/Bad/messages", "/api/rooms/-x/messages", "/api/rooms/a%20b/messages",
    f"/api/rooms/{'r' * 65}/messages", "/api/rooms/Bad/members", "/api/rooms/Bad/events",
])
def test_bad_room_in_the_path_is_400(server: SquallProcess, token: str, path: str) -> None:
    response = run_async(http(server.address, "GET", path, token=token))
    assert (response.status, response.json()["code"]) == (400, "bad_room")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"),
    ("GET", "/api"),
    ("GET", "/api/nope"),
    ("POST", "/api/nope"),
    ("GET", f"/api/rooms/{ROOM}/nope"),  # (GET /api/rooms/R is the room: docs/protocol.md §2a)
    ("DELETE", "/api/rooms/x/y/messages"),
    ("GET", "/ws/extra"),
])
def test_unknown_routes_are_json_404(server: SquallProcess, token: str, method: str, path: str) -> None:
    response = run_async(http(server.address, method, path, token=token))
    assert response.status == 404, response
    assert response.json()["code"] == "not_found"
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b"[1]", b'"hi"', b"\xff"])
def test_post_message_with_non_json_body_is_bad_json(server: SquallProcess, token: str, body: bytes) -> None:
    response = run_async(http(
        server.address, "POST", f"/api/rooms/{ROOM}/messages", token=token, body=body,
        headers={"Content-Type": "application/json"},
    ))
    assert (response.status, response.json()["code"]) == (400, "bad_json")


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({"id": "x"}, 400, "bad_field"),
    ({"body": 5, "id": "x"}, 400, "bad_field"),
    ({"body": "hi"}, 400, "bad_field"),
    ({"body": "hi", "id": ""}, 400, "bad_id"),
    ({"body": "hi", "id": LONG}, 400, "bad_id"),
    ({"body": "hi", "id": 3}, 400, "bad_id"),
    ({"body": "", "id": "e1"}, 422, "empty_body"),
    ({"body": "z" * 4001, "id": "e2"}, 422, "body_too_long"),
    ({"body": "a\x01", "id": "e3"}, 422, "bad_body"),
])
def test_post_message_with_bad_fields(
    server: SquallProcess, token: str, payload: dict[str, Any], status: int, code: str
) -> None:
    response = run_async(http(server.address, "POST", f"/api/rooms/{ROOM}/messages", token=token, json_body=payload))
    assert (response.status, response.json()["code"]) == (status, code), response
    if isinstance(payload.get("id"), str) and payload["id"] and len(payload["id"]) <= 64:
        assert response.json()["id"] == payload["id"], response


SURROGATE = b'"\\ud83d"'  # JSON for a lone surrogate: legal JSON, no Unicode text


@pytest.mark.parametrize(("frame", "code"), [
    (_send(room="Bad Room"), "bad_room"),
    (_send_without("body"), "bad_field"),
    (_send(body=5), "bad_field"),
    (_send(body=None), "bad_field"),
    (_send(body="hi").replace('"hi"', SURROGATE.decode()), "bad_body"),
    (_send(body="x", pad="hi").replace('"hi"', SURROGATE.decode()), "bad_json"),
    (_send(body=""), "empty_body"),
])
def test_a_refused_websocket_send_names_its_id(server: SquallProcess, token: str, frame: str, code: str) -> None:
    async def scenario() -> None:
        client = await ChatClient.connect(server.address, token)
        try:
            await client.connection.send(frame)
            error = await client.recv_type("error")
            assert (error["code"], error.get("id")) == (code, "c1"), error
            await client.ping()
        finally:
            await client.close()

    run_async(scenario())


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    (f"/api/rooms/{ROOM}/messages", b'{"body":5,"id":"h1"}', 400, "bad_field"),
    (f"/api/rooms/{ROOM}/messages", b'{"id":"h1"}', 400, "bad_field"),
    (f"/api/rooms/{ROOM}/messages", b'{"body":' + SURROGATE + b',"id":"h1"}', 422, "bad_body"),
    (f"/api/rooms/{ROOM}/messages", b'{"body":"","id":"h1"}', 422, "empty_body"),
    ("/api/rooms/Bad/messages", b'{"body":"hi","id":"h1"}', 400, "bad_room"),
])
def test_a_refused_http_send_names_its_id(
    server: SquallProcess, token: str, path: str, body: bytes, status: int, code: str
) -> None:
    response = run_async(http(server.address, "POST", path, token=token, body=body,
                              headers={"Content-Type": "application/json"}))
    assert (response.status, response.json()) == (status, {"code": code, "reason": response.json()["reason"], "id": "h1"})


@pytest.mark.parametrize("body", [b"nope", b"", b"[]"])
def test_post_session_with_non_json_body_is_bad_json(server: SquallProcess, body: bytes) -> None:
    response = run_async(http(server.address, "POST", "/api/session", body=body))
    assert (response.status, response.json()["code"]) == (400, "bad_json")


@pytest.mark.parametrize("payload", [
    {}, {"nick": ""}, {"nick": "a b"}, {"nick": "x" * 33}, {"nick": 5}, {"nick": None},
    {"nick": "<b>"}, {"nick": "semi;colon"}, {"name": "alice"},
])
def test_post_session_with_bad_nick(server: SquallProcess, payload: dict[str, Any]) -> None:
    response = run_async(http(server.address, "POST", "/api/session", json_body=payload))
    assert (response.status, response.json()["code"]) == (400, "bad_nick")


def test_oversized_http_body_is_refused(server: SquallProcess, token: str) -> None:
    body = json.dumps({"body": "x" * (70 * 1024), "id": "big"}).encode()
    response = run_async(http(server.address, "POST", f"/api/rooms/{ROOM}/messages", token=token, body=body))
    assert response.status == 413, response
    assert response.json()["code"] == "too_large"


# -- afterwards -------------------------------------------------------------------------


def test_healthy_clients_still_get_their_messages(server: SquallProcess, token: str) -> None:
    """Runs last in this module: everything above must have left the server sound."""
    listener_token = server.session("listener")

    async def scenario() -> None:
        sender = await ChatClient.connect(server.address, token)
        listener = await ChatClient.connect(server.address, listener_token)
        try:
            await listener.connection.send("garbage first")
            assert (await listener.recv_type("error"))["code"] == "bad_json"
            joined = await listener.join(ROOM)
            assert joined["type"] == "joined", joined
            await sender.send_json({"type": "send", "room": ROOM, "id": "after-all", "body": "still here"})
            ack = await sender.recv_until(lambda f: f["type"] in ("ack", "error"))
            assert ack["type"] == "ack", ack
            message = await listener.recv_until(lambda f: f["type"] == "message" and f["id"] == "after-all")
            assert message["seq"] == ack["seq"] == joined["seq"] + 1
            assert message["body"] == "still here" and message["nick"] == "tester"
        finally:
            await sender.close()
            await listener.close()

    run_async(scenario())
    status, health = server.api("GET", "/api/health")
    assert status == 200 and health["processor"] == "connected"


@pytest.mark.parametrize(("body", "code"), [
    ({"email": "not an address"}, "bad_email"),
    ({"email": "a@b"}, "bad_email"),
    ({"email": "x" * 250 + "@example.com"}, "bad_email"),
    ({"email": 42}, "bad_field"),
    ({}, "bad_field"),
])
def test_bad_email_is_400(server: SquallProcess, token: str, body: Any, code: str) -> None:
    response = run_async(http(server.address, "PATCH", "/api/me", token=token, json_body=body))
    assert (response.status, response.json()["code"]) == (400, code)


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({**UPGRADE, "Sec-WebSocket-Version": "8"}, 426, "bad_request"),
    ({**UPGRADE, "Sec-WebSocket-Version": "13", "Origin": "http://evil.example"}, 403, "forbidden"),
    ({**UPGRADE, "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}, 400, "bad_request"),
    ({"Sec-WebSocket-Version": "13"}, 400, "bad_request"),
])
def test_bad_websocket_upgrades_get_their_status(
    server: SquallProcess, token: str, headers: dict[str, str], status: int, code: str
) -> None:
    response = run_async(http(server.address, "GET", "/ws", token=token, headers=headers))
    assert (response.status, response.json()["code"]) == (status, code), response
    if status == 426:
        assert response.headers["sec-websocket-version"] == "13"


def test_no_websocket_refuses_the_upgrade_with_403(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_WEBSOCKET": "false"}) as node:
        token = node.session("walker")
        headers = {**UPGRADE, "Sec-WebSocket-Version": "13"}
        response = run_async(http(node.address, "GET", "/ws", token=token, headers=headers))
        assert (response.status, response.json()["code"]) == (403, "websocket_disabled")


@pytest.mark.parametrize(("path", "status"), [
    ("/static/%00", 400),
    ("/static/js/%00.js", 400),
    ("/static/a%0ab", 400),
    ("/static/%7f", 400),
    ("/static/%ff", 400),
    ("/static/%c3%28", 400),
    ("/static/%2e%2e", 403),
    ("/static/%2e%2e/web/node.py", 403),
    ("/static/..%2f..%2fpyproject.toml", 403),
    ("/static/" + "a" * 5000, 404),
    ("/static/" + "/".join(["b" * 255] * 20), 404),
    ("/static/nope.js", 404),
    ("/static/js/", 403),
])
def test_odd_static_paths_get_a_json_4xx_and_no_traceback(server: SquallProcess, path: str, status: int) -> None:
    tracebacks = server.count_lines("Traceback")
    response = run_async(http(server.address, "GET", path))
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] in ("bad_request", "forbidden", "not_found") and body["reason"], body
    assert "%s" not in body["reason"], body
    assert server.count_lines("Traceback") == tracebacks
