"""Limits per person and per address, against real servers.

Rates are set so low (one token per 1000 s) that no token comes back while a
test runs: counts of acks against ``rate_limited`` are exact, whatever the
machine's speed. Each scenario that needs other limits starts its own server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from support import (
    TIMEOUT, ChatClient, EventStream, SquallProcess, close_writer, http, read_head, run_async, squall_server,
    upgrade_request,
)

NEVER = "0.001"  # a token per 1000 s: none comes back during a test
SQUALL_ENV = {
    "SQUALL_SEND_RATE": NEVER, "SQUALL_SEND_BURST": "5",
    "SQUALL_JOIN_RATE": NEVER, "SQUALL_JOIN_BURST": "4",
    "SQUALL_JOIN_RATE_PER_USER": NEVER, "SQUALL_JOIN_BURST_PER_USER": "6",
}


async def _until(ready: Any, what: str) -> Any:
    """Poll ``ready()`` (a coroutine function) until it returns something true.

    A closed connection frees its slot once the server has read the close, which
    nothing tells the client about; so the test asks until it has, with a bound.
    """
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    pause = 0.005
    while not (result := await ready()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {TIMEOUT} s")
        await asyncio.sleep(pause)  # between polls of an event we cannot subscribe to
        pause = min(pause * 2, 0.1)
    return result


def health(server: SquallProcess) -> dict[str, Any]:
    status, body = server.api("GET", "/api/health")
    assert status == 200
    return dict(body)


async def raw_request(address: tuple[str, int], head: str) -> tuple[int, dict[str, str], Any]:
    """Send ``head`` as it is (a request without body) and read the answer's head and JSON body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
    try:
        writer.write(head.encode("latin-1"))
        status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
        return status, headers, json.loads(body) if body.startswith(b"{") else body
    finally:
        await close_writer(writer)


def session_cookies(port: int, headers: dict[str, str]) -> dict[str, str]:
    """The ``Set-Cookie`` lines of ``POST /api/session``, by cookie name."""
    connection = HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("POST", "/api/session", body=b'{"nick":"cookie"}',
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return {line.partition("=")[0]: line for line in response.msg.get_all("Set-Cookie") or []}
    finally:
        connection.close()


# -- sends per user, over every connection and transport ---------------------------------


def test_one_nick_over_many_connections_and_http_gets_one_budget(server: SquallProcess, room: str) -> None:
    token = server.session("many")

    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, str], Any]]]:
        clients = [await ChatClient.connect(server.address, token) for _ in range(3)]
        try:
            for number, client in enumerate(clients):
                for n in range(4):
                    await client.send_json({"type": "send", "room": room, "body": "x", "id": f"w{number}-{n}"})
            answers = []
            for client in clients:
                answers += [await client.recv_until(lambda f: f["type"] in ("ack", "error")) for _ in range(4)]
            posts = []
            for n in range(3):
                response = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                                      json_body={"body": "x", "id": f"h{n}"})
                posts.append((response.status, response.headers, response.json()))
            for client in clients:
                await client.ping()  # refused, not cut off
            return answers, posts
        finally:
            for client in clients:
                await client.close()

    answers, posts = run_async(scenario())
    acks = [a for a in answers if a["type"] == "ack"] + [p for p in posts if p[0] == 200]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(acks) == 5  # send_burst, for 12 WebSocket sends and 3 HTTP sends together
    assert len(refused) == 7 and [p[0] for p in posts] == [429, 429, 429]
    for frame in refused:
        assert frame["code"] == "rate_limited" and frame["limit"] == "send_per_user"
        assert frame["id"].startswith("w") and frame["retry_after"] > 0
    for _status, headers, body in posts:
        assert body["code"] == "rate_limited" and body["limit"] == "send_per_user"
        assert int(headers["retry-after"]) >= body["retry_after"] > 0
    assert len(server.history(room, token)) == 5
    assert health(server)["rejections"]["rate_limited"]["send_per_user"] >= 10


# -- joins per connection -------------------------------------------------------


def test_a_join_leave_flood_is_refused_while_the_room_keeps_chatting(server: SquallProcess, room: str) -> None:
    flooder_token, watcher_token, talker_token = (server.session(n) for n in ("flooder", "watcher", "talker"))

    async def scenario() -> tuple[list[dict[str, Any]], list[str]]:
        watcher = await ChatClient.connect(server.address, watcher_token)
        flooder = await ChatClient.connect(server.address, flooder_token)
        try:
            assert (await watcher.join(room))["type"] == "joined"
            for _ in range(10):
                await flooder.send_json({"type": "join", "room": room})
                await flooder.send_json({"type": "leave", "room": room})
            answers = [await flooder.recv_until(lambda f: f["type"] in ("joined", "error")) for _ in range(10)]
            await flooder.ping()
            # Another member's messages still reach the room.
            for n in range(3):
                response = await http(server.address, "POST", f"/api/rooms/{room}/messages",
                                      token=talker_token, json_body={"body": f"still here {n}", "id": f"t{n}"})
                assert response.status == 200
            bodies = [(await watcher.recv_type("message"))["body"] for _ in range(3)]
            return answers, bodies
        finally:
            await flooder.close()
            await watcher.close()

    answers, bodies = run_async(scenario())
    assert [a["type"] for a in answers] == ["joined"] * 4 + ["error"] * 6  # join_burst
    for refusal in answers[4:]:
        assert (refusal["code"], refusal["limit"], refusal["room"]) == ("rate_limited", "join_per_connection", room)
        assert refusal["retry_after"] > 0
    assert bodies == [f"still here {n}" for n in range(3)]


def test_reconnecting_does_not_reset_the_join_limit(server: SquallProcess, room: str) -> None:
    token = server.session("hopper")

    async def scenario() -> tuple[list[str], int, Any]:
        outcomes = []
        for _ in range(4):  # four connections one after the other, two joins on each
            client = await ChatClient.connect(server.address, token)
            try:
                for name in (room, f"{room}-b"):
                    answer = await client.join(name)
                    outcomes.append(answer["type"] if answer["type"] == "joined" else answer["limit"])
            finally:
                await client.close()
        # An SSE stream is a join as well.
        refused = await http(server.address, "GET", f"/api/rooms/{room}/events", token=token)
        return outcomes, refused.status, refused.json()

    outcomes, status, body = run_async(scenario())
    assert outcomes == ["joined"] * 6 + ["join_per_user"] * 2
    assert (status, body["code"], body["limit"]) == (429, "rate_limited", "join_per_user")


# -- sends per address -----------------------------------------------------------


def test_sends_are_limited_per_address_whoever_sends(tmp_path: Path, room: str) -> None:
    env = {"SQUALL_SEND_RATE_PER_IP": NEVER, "SQUALL_SEND_BURST_PER_IP": "4"}
    with squall_server(tmp_path, env=env) as node:
        tokens = [node.session(nick) for nick in ("ann", "ben", "cat")]

        async def scenario() -> list[str]:
            outcomes = []
            for number, token in enumerate(tokens):
                client = await ChatClient.connect(node.address, token)
                try:
                    await client.send_json({"type": "send", "room": room, "body": "x", "id": f"w{number}"})
                    answer = await client.recv_until(lambda f: f["type"] in ("ack", "error"))
                    outcomes.append(answer["type"] if answer["type"] == "ack" else answer["limit"])
                finally:
                    await client.close()
                response = await http(node.address, "POST", f"/api/rooms/{room}/messages", token=token,
                                      json_body={"body": "x", "id": f"h{number}"})
                outcomes.append("ack" if response.status == 200 else response.json()["limit"])
            return outcomes

        assert run_async(scenario()) == ["ack"] * 4 + ["send_per_ip"] * 2
        assert health(node)["rejections"]["rate_limited"] == {"send_per_ip": 2}


# -- sessions per address, and whose address ---------------------------------------------


def test_session_creation_is_limited_per_address(tmp_path: Path) -> None:
    env = {"SQUALL_SESSION_RATE_PER_IP": NEVER, "SQUALL_SESSION_BURST_PER_IP": "2"}
    with squall_server(tmp_path, env=env) as node:

        async def scenario() -> list[Any]:
            answers = []
            for n in range(4):
                # Not from a trusted proxy: X-Forwarded-For is not believed.
                response = await http(node.address, "POST", "/api/session", json_body={"nick": f"n{n}"},
                                      headers={"X-Forwarded-For": f"198.51.100.{n}"})
                answers.append((response.status, response.headers, response.json()))
            return answers

        answers = run_async(scenario())
        assert [status for status, _, _ in answers] == [200, 200, 429, 429]
        for _status, headers, body in answers[2:]:
            assert (body["code"], body["limit"]) == ("rate_limited", "session_per_ip")
            assert body["retry_after"] > 0 and int(headers["retry-after"]) >= body["retry_after"]
        assert health(node)["rejections"] == {"rate_limited": {"session_per_ip": 2}}


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    env = {
        "SQUALL_SESSION_RATE_PER_IP": NEVER, "SQUALL_SESSION_BURST_PER_IP": "1",
        "SQUALL_TRUSTED_PROXIES": "127.0.0.0/8",
    }
    with squall_server(tmp_path, env=env) as node:

        async def post(forwarded_for: str) -> int:
            response = await http(node.address, "POST", "/api/session", json_body={"nick": "p"},
                                  headers={"X-Forwarded-For": forwarded_for})
            return response.status

        async def scenario() -> list[int]:
            return [
                await post("198.51.100.1"),
                await post("198.51.100.1"),  # the same client again: its limit
                await post("198.51.100.2"),  # another client behind the same proxy
                await post("203.0.113.5, 198.51.100.2"),  # a forged left part changes nothing
            ]

        assert run_async(scenario()) == [200, 429, 200, 429]


# -- the Secure cookie ----------------------------------------------------------


def _secure(port: int, headers: dict[str, str]) -> dict[str, bool]:
    """Which cookies of a new session are ``Secure``."""
    return {name: "; secure" in line.lower() for name, line in session_cookies(port, headers).items()}


def test_session_cookie_is_secure_only_over_https(tmp_path: Path, server: SquallProcess) -> None:
    secure, plain = {"squall_token": True, "_xsrf": True}, {"squall_token": False, "_xsrf": False}
    # No trusted proxy: a client's own X-Forwarded-Proto is not believed.
    assert _secure(server.port, {"X-Forwarded-Proto": "https"}) == plain
    with squall_server(tmp_path / "proxied", env={"SQUALL_TRUSTED_PROXIES": "127.0.0.1"}) as node:
        assert _secure(node.port, {"X-Forwarded-Proto": "https"}) == secure
        assert _secure(node.port, {"X-Forwarded-Proto": "http"}) == plain
        assert _secure(node.port, {}) == plain
    with squall_server(tmp_path / "public", env={"SQUALL_PUBLIC_URL": "https://chat.example.com"}) as node:
        assert _secure(node.port, {}) == secure


# -- open connections per address --------------------------------------------------------


def test_connections_per_address_are_refused_past_the_limit(tmp_path: Path, room: str) -> None:
    with squall_server(tmp_path, env={"SQUALL_MAX_CONNECTIONS_PER_IP": "2"}) as node:
        token = node.session("holder")
        poll_head = (
            f"GET /api/rooms/{room}/messages?since=0&wait=0&token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{node.port}\r\n\r\n"
        )

        async def scenario() -> dict[str, Any]:
            first = await ChatClient.connect(node.address, token)
            second = await EventStream.open(node.address, room, token)
            try:
                with pytest.raises(InvalidStatus) as refused_ws:
                    await ChatClient.connect(node.address, token)
                sse = await http(node.address, "GET", f"/api/rooms/{room}/events", token=token)
                poll = await raw_request(node.address, poll_head)
                await first.ping()  # those open are served as before
                await first.close()

                async def slot_freed() -> bool:
                    return bool((await asyncio.to_thread(health, node))["limits"]["connections"] == 1)

                await _until(slot_freed, "the closed WebSocket's slot freed")
                again = await ChatClient.connect(node.address, token)
                await again.ping()
                await again.close()
                return {"ws": refused_ws.value.response, "sse": sse, "poll": poll}
            finally:
                await second.close()

        result = run_async(scenario())
        ws = result["ws"]
        assert ws.status_code == 429 and json.loads(ws.body)["code"] == "too_many_connections"
        assert int(ws.headers["Retry-After"]) > 0
        assert result["sse"].status == 429
        assert result["sse"].json()["limit"] == "connections_per_ip"
        status, headers, body = result["poll"]
        assert (status, body["code"], headers.get("connection")) == (429, "too_many_connections", "close")
        assert "retry-after" in headers
        assert health(node)["rejections"] == {"too_many_connections": {"connections_per_ip": 3}}


def test_total_connections_are_refused_with_503(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_MAX_CONNECTIONS": "1"}) as node:
        token = node.session("only")

        async def scenario() -> int:
            first = await ChatClient.connect(node.address, token)
            try:
                with pytest.raises(InvalidStatus) as refused:
                    await ChatClient.connect(node.address, token)
                return int(refused.value.response.status_code)
            finally:
                await first.close()

        assert run_async(scenario()) == 503


# -- Host names ---------------------------------------------------------------------


def _upgrade_head(host: str, token: str) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n\r\n"
    )


@pytest.fixture
def heads(server: SquallProcess, room: str) -> Iterator[dict[str, Any]]:
    token = server.session("rebound")

    def make(host: str) -> dict[str, str]:
        return {
            "page": f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n",
            "static": f"GET /static/js/main.js HTTP/1.1\r\nHost: {host}\r\n\r\n",
            "health": f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n",
            "me": f"GET /api/me HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n",
            "poll": f"GET /api/rooms/{room}/messages?since=0&wait=0 HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n",
            "upgrade": _upgrade_head(host, token),
        }

    yield {"make": make}


def test_a_foreign_host_is_refused_on_every_path(server: SquallProcess, heads: dict[str, Any]) -> None:
    # A DNS-rebinding page: its name now points at us, and Origin == Host.
    async def scenario() -> dict[str, tuple[int, Any]]:
        results = {}
        for name, head in heads["make"]("evil.example:%d" % server.port).items():
            status, _headers, body = await raw_request(server.address, head)
            results[name] = (status, body)
        return results

    for name, (status, body) in run_async(scenario()).items():
        assert status == 421, (name, status, body)
        assert body["code"] == "bad_host" and "evil.example" in body["reason"], name


def test_our_own_names_are_served(server: SquallProcess, heads: dict[str, Any]) -> None:
    async def scenario() -> dict[str, int]:
        results = {}
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST"):
            for name, head in heads["make"](host).items():
                status, _headers, _body = await raw_request(server.address, head)
                results[f"{host} {name}"] = status
        return results

    for name, status in run_async(scenario()).items():
        assert status == (101 if name.endswith("upgrade") else 200), name


def test_allowed_hosts_names_the_hosts(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_ALLOWED_HOSTS": "chat.example.com"}) as node:

        async def status(host: str) -> int:
            code, _headers, _body = await raw_request(
                node.address, f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n"
            )
            return code

        async def scenario() -> list[int]:
            return [await status(h) for h in ("chat.example.com", "localhost", "127.0.0.1", "other.example")]

        assert run_async(scenario()) == [200, 421, 200, 421]


# -- raw HTTP connections --------------------------------------------------------------


async def _idle_connection(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)


async def _get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> int:
    writer.write(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
    await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
    return status


def test_idle_http_connections_per_peer_are_refused_past_the_limit(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_MAX_HTTP_CONNECTIONS_PER_IP": "3"}) as node:

        async def scenario() -> tuple[int, Any, int, int]:
            # The start-up's health polls closed their connections, but the node
            # frees a slot only once it has read the close: an observer on a
            # connection of its own waits until it is the only one counted.
            observer = await _idle_connection(node.address)

            async def only_the_observer() -> bool:
                reader, writer = observer
                writer.write(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n\r\n".encode())
                _status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
                health = json.loads(await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT))
                return bool(health["limits"]["http_connections"] == 1)

            await _until(only_the_observer, "the start-up's connections freed")
            first, second = await _idle_connection(node.address), await _idle_connection(node.address)
            # Accepted in order: with the observer these two hold the peer's slots,
            # so the third is answered before it sends anything, and hung up on.
            third_reader, third_writer = await _idle_connection(node.address)
            status, headers = await asyncio.wait_for(read_head(third_reader), TIMEOUT)
            body = json.loads(await asyncio.wait_for(third_reader.read(), TIMEOUT))
            await close_writer(third_writer)
            served = await _get_health(*first, node.port)
            await close_writer(first[1])

            async def served_on_a_new_connection() -> int:
                reader, writer = await _idle_connection(node.address)
                try:
                    status = await _get_health(reader, writer, node.port)
                finally:
                    await close_writer(writer)
                return status if status == 200 else 0  # 429 until the server has read the close

            served_again = await _until(served_on_a_new_connection, "the closed connection's slot freed")
            await close_writer(second[1])
            await close_writer(observer[1])
            return status, (headers, body), served, served_again

        status, (headers, body), served, served_again = run_async(scenario())
        assert (status, body["code"], body["limit"]) == (429, "too_many_connections", "http_connections_per_ip")
        assert headers["connection"] == "close" and int(headers["retry-after"]) > 0
        assert (served, served_again) == (200, 200)


def test_a_trusted_proxy_is_held_only_to_the_total(tmp_path: Path) -> None:
    env = {"SQUALL_MAX_HTTP_CONNECTIONS_PER_IP": "1", "SQUALL_TRUSTED_PROXIES": "127.0.0.1"}
    with squall_server(tmp_path, env=env) as node:

        async def scenario() -> list[int]:
            connections = [await _idle_connection(node.address) for _ in range(3)]
            try:
                return [await _get_health(reader, writer, node.port) for reader, writer in connections]
            finally:
                for _reader, writer in connections:
                    await close_writer(writer)

        assert run_async(scenario()) == [200, 200, 200]


# -- typing over HTTP -------------------------------------------------------------------


def test_a_typing_flood_over_http_reaches_the_room_once(server: SquallProcess, room: str) -> None:
    typist, marker, watcher_token = (server.session(n) for n in ("typist", "marker", "typing-watcher"))

    async def typing(token: str) -> None:
        response = await http(server.address, "POST", f"/api/rooms/{room}/typing", token=token)
        assert response.status == 204

    async def scenario() -> list[dict[str, Any]]:
        watcher = await ChatClient.connect(server.address, watcher_token)
        try:
            await watcher.join(room)
            await typing(typist)
            first = await watcher.recv_until(lambda f: f["type"] == "typing")
            assert first["nicks"] == ["typist"], first
            for _ in range(4):
                await typing(typist)
            # Another user's typing after the flood: whatever the flood let through
            # was pending before it, so it comes in the same event or an earlier one.
            await typing(marker)
            later = []
            while "marker" not in (frame := await watcher.recv_until(lambda f: f["type"] == "typing"))["nicks"]:
                later.append(frame)
            return [*later, frame]
        finally:
            await watcher.close()

    later = run_async(scenario())
    assert [f for f in later if "typist" in f["nicks"]] == []


# -- bounded state ----------------------------------------------------------------------


def test_a_flood_of_distinct_addresses_does_not_grow_the_tables_past_their_cap(tmp_path: Path) -> None:
    env = {
        "SQUALL_SESSION_RATE_PER_IP": NEVER, "SQUALL_SESSION_BURST_PER_IP": "1",
        "SQUALL_TRUSTED_PROXIES": "127.0.0.1", "SQUALL_MAX_RATE_KEYS": "20",
    }
    with squall_server(tmp_path, env=env) as node:

        async def scenario() -> list[int]:
            statuses = []
            for n in range(60):
                response = await http(node.address, "POST", "/api/session", json_body={"nick": "flood"},
                                      headers={"X-Forwarded-For": f"198.51.100.{n}"})
                statuses.append(response.status)
            return statuses

        statuses = run_async(scenario())
        # 20 addresses get their own bucket; the other 40 share one, whose
        # single token the first of them spends.
        assert statuses == [200] * 21 + [429] * 39
        assert health(node)["limits"]["session_per_ip"] == 21


def test_refused_websockets_count_against_the_address_until_they_close(tmp_path: Path) -> None:
    """A socket refused with 4001 lives up to close_timeout: a flood of them must
    not escape the per-address bound while they wait to be closed."""
    with squall_server(tmp_path, env={"SQUALL_MAX_CONNECTIONS_PER_IP": "2"}) as node:
        token = node.session("patient")

        async def scenario() -> tuple[int, bool]:
            intruders = []
            for _ in range(2):  # no token; they never answer the close, so they stay
                reader, writer = await asyncio.open_connection(*node.address)
                writer.write(upgrade_request(node.address, None))
                status, _headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
                assert status == 101
                intruders.append(writer)
            try:
                with pytest.raises(InvalidStatus) as refused:
                    await ChatClient.connect(node.address, token)
                held = refused.value.response.status_code
            finally:
                for writer in intruders:
                    await close_writer(writer)

            async def admitted() -> bool:
                try:
                    client = await ChatClient.connect(node.address, token)
                except InvalidStatus:
                    return False
                await client.close()
                return True

            return held, await _until(admitted, "the refused sockets' slots freed")

        assert run_async(scenario()) == (429, True)
