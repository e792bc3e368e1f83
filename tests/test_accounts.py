"""Accounts, guests and sessions against a running server (docs/protocol.md §1).

Every test uses nicks of its own, none a look-alike of another test's: the
module shares one server, and a nick online in one test is taken in the next.
"""

from __future__ import annotations

import asyncio
import json
import time
from http.client import HTTPConnection
from typing import Any

import pytest
from tornado.web import create_signed_value, decode_signed_value
from websockets.exceptions import ConnectionClosed

from support import (
    TIMEOUT, ChatClient, EventStream, SquallProcess, close_writer, http, read_head, run_async, squall_server,
)

from squall.web.auth import MAX_CLOCK_SKEW, TOKEN_NAME, make_token

PASSWORD = "correct horse battery"
CYRILLIC_A = "\u0430"  # looks like Latin a
FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(ord("a"), ord("z") + 1)})


def post(server: SquallProcess, path: str, body: Any, *, token: str | None = None) -> tuple[int, Any]:
    return server.api("POST", path, body, token=token)


def register(server: SquallProcess, nick: str, password: str = PASSWORD, **kwargs: Any) -> str:
    status, body = post(server, "/api/account", {"nick": nick, "password": password}, **kwargs)
    assert status == 201, (status, body)
    assert body["nick"] == nick and body["registered"] is True
    return str(body["token"])


def me(server: SquallProcess, token: str) -> tuple[int, Any]:
    return server.api("GET", "/api/me", token=token)


def raw_post(server: SquallProcess, path: str, body: Any, headers: dict[str, str]) -> tuple[int, list[str], Any]:
    """A POST with chosen headers: (status, Set-Cookie headers, JSON body or None)."""
    connection = HTTPConnection(*server.address, timeout=TIMEOUT)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        raw = response.read()
        return response.status, response.msg.get_all("Set-Cookie") or [], (json.loads(raw) if raw else None)
    finally:
        connection.close()


async def close_code(client: ChatClient) -> int | None:
    """Read until the server closes the connection; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv_json()
    return closed.value.rcvd.code if closed.value.rcvd else None


def session_id(server: SquallProcess, token: str) -> str:
    secret = (server.data_dir / "secret").read_text().strip()
    value = decode_signed_value(secret, TOKEN_NAME, token)
    assert value is not None
    return value.decode().partition(":")[0]


# -- registering and signing in ----------------------------------------------------------


def test_register_answers_201_with_a_token_and_the_session_cookie(server: SquallProcess) -> None:
    status, cookies, body = raw_post(server, "/api/account", {"nick": "Reggie", "password": PASSWORD}, {})
    assert status == 201 and body["nick"] == "Reggie" and body["registered"] is True
    names = {cookie.split("=", 1)[0] for cookie in cookies}
    assert {"squall_token", "_xsrf"} <= names, cookies
    assert any(cookie.startswith(f"squall_token=\"{body['token']}\"") or
               cookie.startswith(f"squall_token={body['token']}") for cookie in cookies), cookies
    assert me(server, body["token"]) == (200, {"nick": "Reggie", "email": None, "registered": True,
                                            "default_room": "lobby", "admin": False})


def test_sign_in_with_the_password_gives_a_new_session(server: SquallProcess) -> None:
    first = register(server, "signer")
    status, body = post(server, "/api/session", {"nick": "SIGNER", "password": PASSWORD})
    assert status == 200 and body["nick"] == "signer" and body["registered"] is True
    assert body["token"] != first
    assert me(server, body["token"])[0] == 200 and me(server, first)[0] == 200


def test_a_wrong_password_and_an_unknown_nick_get_the_same_answer(server: SquallProcess) -> None:
    register(server, "wronged")
    wrong = post(server, "/api/session", {"nick": "wronged", "password": "not the password"})
    unknown = post(server, "/api/session", {"nick": "nobody-here", "password": "not the password"})
    post(server, "/api/session", {"nick": "a-guest-only"})
    guest = post(server, "/api/session", {"nick": "a-guest-only", "password": "not the password"})
    assert wrong == unknown == guest == (401, {"code": "bad_credentials", "reason": "nick or password is wrong"})


@pytest.mark.parametrize("password, rule", [
    ("short", "at least 8 characters"),
    ("x" * 1025, "at most 1024 characters"),
    ("WeakNick", "must not be the nick"),
])
def test_weak_passwords_are_refused_with_the_rule(server: SquallProcess, password: str, rule: str) -> None:
    status, body = post(server, "/api/account", {"nick": "weaknick", "password": password})
    assert status == 400 and body["code"] == "weak_password" and rule in body["reason"], body


def test_a_registered_nick_cannot_be_registered_again(server: SquallProcess) -> None:
    register(server, "twice")
    status, body = post(server, "/api/account", {"nick": "TWICE", "password": PASSWORD})
    assert status == 409 and body["code"] == "nick_taken" and "registered" in body["reason"], body


# -- guests ------------------------------------------------------------------------------


def test_a_guest_cannot_take_a_registered_nick(server: SquallProcess) -> None:
    register(server, "owner")
    for spelling in ("owner", "Owner", "OWNER"):
        status, body = post(server, "/api/session", {"nick": spelling})
        assert status == 409 and body["code"] == "nick_taken", body
        assert "registered" in body["reason"], body


def test_a_guest_cannot_take_a_lookalike_of_a_registered_nick(server: SquallProcess) -> None:
    register(server, "alice")
    for lookalike in (CYRILLIC_A + "lice", "alice".translate(FULL_WIDTH), "AIice"):
        status, body = post(server, "/api/session", {"nick": lookalike})
        assert status == 409 and body["code"] == "nick_taken", (lookalike, body)
        assert "looks like the registered nick 'alice'" in body["reason"], body
        status, body = post(server, "/api/account", {"nick": lookalike, "password": PASSWORD})
        assert status == 409 and body["code"] == "nick_taken", (lookalike, body)


def test_a_guest_cannot_take_a_nick_or_a_lookalike_of_a_nick_online_now(server: SquallProcess, room: str) -> None:
    async def scenario() -> None:
        token = server.session("carol")
        carol = await ChatClient.connect(server.address, token)
        await carol.join(room)
        for nick in ("carol", "Carol", "c" + CYRILLIC_A + "rol", "carol".translate(FULL_WIDTH)):
            status, body = post(server, "/api/session", {"nick": nick})
            assert status == 409 and body["code"] == "nick_taken", (nick, body)
            assert "online right now" in body["reason"], body
        status, body = post(server, "/api/account", {"nick": "carol", "password": PASSWORD})
        assert status == 409 and "online right now" in body["reason"], body
        await carol.close()

    run_async(scenario())


def test_a_guest_may_come_back_to_its_own_online_nick_with_its_token(server: SquallProcess, room: str) -> None:
    async def scenario() -> None:
        token = server.session("dora")
        dora = await ChatClient.connect(server.address, token)
        await dora.join(room)
        # A reload (cookie) and a second tab (bearer): the same holder.
        status, _, body = raw_post(server, "/api/session", {"nick": "Dora"}, {"Cookie": f"squall_token={token}"})
        assert status == 200 and body["registered"] is False, body
        again = server.session("dora", token=token)
        # The holder's sessions all stay good, and its connection lives on.
        for each in (token, body["token"], again):
            assert me(server, each)[0] == 200
        await dora.ping()
        # Another person's token is no proof of holding this nick.
        stranger = server.session("stranger")
        status, body = post(server, "/api/session", {"nick": "dora"}, token=stranger)
        assert status == 409 and body["code"] == "nick_taken", body
        await dora.close()

    run_async(scenario())


def test_a_guest_nick_taken_over_ends_its_earlier_holders_sessions(server: SquallProcess) -> None:
    earlier = server.session("erin")  # not online: anyone may take it
    later = server.session("erin")
    assert me(server, earlier)[0] == 401
    assert me(server, later)[0] == 200


def test_a_guest_may_register_the_nick_it_holds_while_online(server: SquallProcess, room: str) -> None:
    async def scenario() -> None:
        guest = server.session("fritz")
        assert me(server, guest) == (200, {"nick": "fritz", "email": None, "registered": False,
                                               "default_room": "lobby", "admin": False})
        connection = await ChatClient.connect(server.address, guest)
        await connection.join(room)
        account = register(server, "fritz", token=guest)
        assert await close_code(connection) == 4001  # the guest session has ended
        assert me(server, guest)[0] == 401
        assert me(server, account) == (200, {"nick": "fritz", "email": None, "registered": True,
                                                 "default_room": "lobby", "admin": False})

    run_async(scenario())


@pytest.mark.parametrize("nick, point", [("ev\u202eil", "U+202E"), ("ab\u2066c", "U+2066"), ("x\u200f", "U+200F")])
def test_bidi_controls_are_refused_in_nicks(server: SquallProcess, nick: str, point: str) -> None:
    for path in ("/api/session", "/api/account"):
        status, body = post(server, path, {"nick": nick, "password": PASSWORD} if "account" in path else {"nick": nick})
        assert status == 400 and body["code"] == "bad_nick" and point in body["reason"], body


def test_bidi_controls_are_refused_in_room_names_and_dropped_from_rendered_bodies(server: SquallProcess, room: str) -> None:
    token = server.session("bidi-writer")

    async def join() -> None:
        connection = await ChatClient.connect(server.address, token)
        frame = await connection.join("ab\u202ec")
        assert frame["type"] == "error" and frame["code"] == "bad_room" and "U+202E" in frame["reason"], frame
        await connection.close()

    run_async(join())
    status, body = server.api("GET", "/api/rooms/ab%E2%80%AEc/events", token=token)
    assert status == 400 and body["code"] == "bad_room" and "U+202E" in body["reason"], body
    status, body = post(server, f"/api/rooms/{room}/messages", {"id": "b1", "body": "pay \u202eeman\u202c now"}, token=token)
    assert status == 200, body
    [message] = server.history(room, token)
    assert message["body"] == "pay \u202eeman\u202c now"  # stored as typed
    assert message["html"] == "<p>pay eman now</p>\n"


# -- ending sessions -----------------------------------------------------------------------


def test_logout_ends_the_session_on_every_transport(server: SquallProcess, room: str) -> None:
    token = server.session("gina")
    other = server.session("gina", token=token)  # a second tab, a session of its own

    async def scenario() -> None:
        address = server.address
        poll_path = f"/api/rooms/{room}/messages?since=0&wait=0"
        socket = await ChatClient.connect(address, token)
        await socket.join(room)
        stream = await EventStream.open(address, room, token)
        assert (await stream.next_of("joined")).json()["room"] == room
        # A kept-alive long-poll connection whose token the node has cached.
        reader, writer = await asyncio.open_connection(*address)
        request = (f"GET {poll_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
        writer.write(request)
        status, headers = await read_head(reader)
        await reader.readexactly(int(headers["content-length"]))
        assert status == 200

        response = await http(address, "POST", "/api/logout", token=token)
        assert response.status == 204, response
        assert "squall_token=;" in response.headers.get("set-cookie", "") or \
            'squall_token=""' in response.headers.get("set-cookie", ""), response.headers

        assert await close_code(socket) == 4001
        with pytest.raises(EOFError):
            while True:
                await stream.next_event()
        await stream.close()
        writer.write(request)  # the same kept-alive connection: refused now
        status, headers = await read_head(reader)
        assert status == 401, status
        await close_writer(writer)
        assert (await http(address, "GET", poll_path, token=token)).status == 401
        assert (await http(address, "GET", "/api/me", token=token)).status == 401
        assert (await http(address, "GET", f"/api/rooms/{room}/events", token=token)).status == 401
        assert (await http(address, "POST", "/api/logout", token=token)).status == 401
        again = await ChatClient.connect(address, token)
        assert await close_code(again) == 4001
        # The other tab's session is another session: it lives on.
        assert (await http(address, "GET", poll_path, token=other)).status == 200

    run_async(scenario())


def test_logout_by_cookie_needs_the_xsrf_token(server: SquallProcess) -> None:
    token = server.session("hank")
    status, _, body = raw_post(server, "/api/logout", {}, {"Cookie": f"squall_token={token}"})
    assert status == 403, body
    assert me(server, token)[0] == 200
    status, _, _ = raw_post(server, "/api/logout", {}, {
        "Cookie": f"squall_token={token}; _xsrf=abc", "X-XSRFToken": "abc",
    })
    assert status == 204
    assert me(server, token)[0] == 401


def test_a_password_change_ends_every_other_session(server: SquallProcess, room: str) -> None:
    first = register(server, "ivan")
    status, body = post(server, "/api/session", {"nick": "ivan", "password": PASSWORD})
    second = body["token"]

    async def scenario() -> None:
        connection = await ChatClient.connect(server.address, second)
        await connection.join(room)
        status, cookies, answer = raw_post(
            server, "/api/account/password", {"password": PASSWORD, "new_password": "a new horse staple"},
            {"Authorization": f"Bearer {first}"},
        )
        assert status == 200, answer
        assert answer["nick"] == "ivan" and answer["registered"] is True
        assert any(cookie.startswith("squall_token=") for cookie in cookies), cookies
        assert await close_code(connection) == 4001
        for ended in (first, second):
            assert (await http(server.address, "GET", "/api/me", token=ended)).status == 401
        assert (await http(server.address, "GET", "/api/me", token=answer["token"])).status == 200

    run_async(scenario())
    assert post(server, "/api/session", {"nick": "ivan", "password": PASSWORD})[0] == 401
    assert post(server, "/api/session", {"nick": "ivan", "password": "a new horse staple"})[0] == 200


def test_a_password_change_needs_the_current_password_and_an_account(server: SquallProcess) -> None:
    token = register(server, "judy")
    status, body = post(server, "/api/account/password", {"password": "not it at all", "new_password": "whatever new"},
                        token=token)
    assert (status, body["code"]) == (403, "bad_credentials")
    status, body = post(server, "/api/account/password", {"password": PASSWORD, "new_password": "short"}, token=token)
    assert (status, body["code"]) == (400, "weak_password")
    assert me(server, token)[0] == 200  # nothing changed
    guest = server.session("judy-guest")
    status, body = post(server, "/api/account/password", {"password": PASSWORD, "new_password": "whatever new"},
                        token=guest)
    assert (status, body["code"]) == (403, "not_registered")


# -- token rules ----------------------------------------------------------------------------


def test_a_token_dated_in_the_future_is_refused(server: SquallProcess) -> None:
    token = server.session("kate")
    secret = (server.data_dir / "secret").read_text().strip()
    sid = session_id(server, token)
    now = time.time()
    ahead = make_token(secret, sid, "kate", clock=lambda: now + MAX_CLOCK_SKEW + 600)
    fresh = make_token(secret, sid, "kate")  # the same session, dated now: the control
    assert me(server, fresh)[0] == 200
    assert me(server, ahead)[0] == 401


def test_a_version_1_signed_value_is_refused(server: SquallProcess) -> None:
    token = server.session("liam")
    secret = (server.data_dir / "secret").read_text().strip()
    value = f"{session_id(server, token)}:liam"
    legacy = create_signed_value(secret, TOKEN_NAME, value, version=1).decode()
    current = create_signed_value(secret, TOKEN_NAME, value, version=2).decode()
    assert me(server, current)[0] == 200
    assert me(server, legacy)[0] == 401

    async def websocket() -> None:
        assert await close_code(await ChatClient.connect(server.address, legacy)) == 4001

    run_async(websocket())


# -- guests turned off --------------------------------------------------------------------------


def test_guests_can_be_turned_off(tmp_path: Any) -> None:
    with squall_server(tmp_path, env={"SQUALL_GUESTS": "false"}) as closed:
        status, body = post(closed, "/api/session", {"nick": "walker"})
        assert status == 403 and body["code"] == "guests_disabled", body
        token = register(closed, "walker")
        assert post(closed, "/api/session", {"nick": "walker", "password": PASSWORD})[0] == 200
        assert me(closed, token)[0] == 200


def test_pipelined_polls_with_unchecked_tokens_are_answered_in_order(server: SquallProcess, room: str) -> None:
    """The first poll with a token the node has not seen waits for the store;
    the polls behind it on the connection must wait their turn, not pass it."""
    writer_token = server.session("pipe-writer")
    for n in range(3):
        assert post(server, f"/api/rooms/{room}/messages", {"id": f"p{n}", "body": f"m{n}"}, token=writer_token)[0] == 200
    fresh = [server.session(f"pipe-{n}") for n in range(3)]  # tokens this node has never checked
    ended = server.session("pipe-ended")
    assert post(server, "/api/logout", {}, token=ended)[0] == 204
    polls = [(fresh[0], 1), (fresh[1], 3), (ended, 2), (fresh[2], 2), (fresh[0], 1)]

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(b"".join(
                f"GET /api/rooms/{room}/messages?limit={limit} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
                for token, limit in polls
            ))
            answers = []
            for _ in polls:
                status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
                body = json.loads(await reader.readexactly(int(headers["content-length"])))
                answers.append((status, len(body["messages"]) if status == 200 else body["code"]))
            assert answers == [(200, 1), (200, 3), (401, "unauthorized"), (200, 2), (200, 1)]
        finally:
            await close_writer(writer)

    run_async(scenario())
