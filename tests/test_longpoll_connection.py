"""Long-polls on a kept-alive connection, which the web node serves itself.

After a connection's first poll the node owns its socket (``PollConnection``)
and parses the following requests itself; anything that is not a plain poll
``GET`` goes back to Tornado. These tests drive one raw TCP connection through
that: polls one after another, pipelined polls, errors, a send and other
requests in between, malformed and oversized requests, HTTP/1.0, hang-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from support import TIMEOUT, HTTPResponse, SquallProcess, close_writer, http, read_head, run_async

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}


@pytest.fixture(scope="module")
def token(server: SquallProcess) -> str:
    return server.session("keeper")


class KeptAlive:
    """One HTTP/1.1 connection, requests written as given, responses read in order."""

    def __init__(self, server: SquallProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: SquallProcess) -> KeptAlive:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server.address), TIMEOUT)
        return cls(server, reader, writer)

    def request_bytes(self, method: str, path: str, token: str | None, *, body: bytes = b"",
                      headers: dict[str, str] | None = None, version: str = "HTTP/1.1") -> bytes:
        host, port = self.server.address
        lines = [f"{method} {path} {version}", f"Host: {host}:{port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, method: str, path: str, token: str | None, **kwargs: Any) -> HTTPResponse:
        self.write(self.request_bytes(method, path, token, **kwargs))
        return await self.response()

    async def response(self) -> HTTPResponse:
        async def read() -> HTTPResponse:
            status, headers = await read_head(self.reader)
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            return HTTPResponse(status, headers, body)

        return await asyncio.wait_for(read(), TIMEOUT)

    async def closed_by_server(self) -> bool:
        """Whether the server hangs up (EOF or reset) within the timeout."""
        try:
            return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        await close_writer(self.writer)


@contextlib.asynccontextmanager
async def kept_alive(server: SquallProcess) -> AsyncIterator[KeptAlive]:
    conn = await KeptAlive.open(server)
    try:
        yield conn
    finally:
        await conn.close()


async def health(server: SquallProcess) -> dict[str, Any]:
    result: dict[str, Any] = (await http(server.address, "GET", "/api/health")).json()
    return result


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Ask again until ``condition`` holds, or fail after the timeout."""
    async def loop() -> None:
        while not await condition():
            pass

    try:
        await asyncio.wait_for(loop(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def send(server: SquallProcess, token: str, room: str, n: int) -> int:
    answer = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                        json_body={"body": f"message {n}", "id": f"m{n}"})
    assert answer.status == 200, answer.body
    seq: int = answer.json()["seq"]
    return seq


def bodies(response: HTTPResponse) -> list[str]:
    assert response.status == 200, response.body
    return [m["body"] for m in response.json()["messages"]]


def test_polls_follow_each_other_on_one_connection(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            first = await conn.request("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token)
            assert first.status == 200 and first.json() == {"messages": [], "seq": 0}
            assert "close" not in first.headers.get("connection", "")
            assert first.headers["content-type"] == "application/json; charset=utf-8"
            assert first.headers["cache-control"] == "no-store"
            cursor = 0
            for n in range(1, 4):
                conn.write(conn.request_bytes("GET", f"/api/rooms/{room}/messages?since={cursor}&wait=10", token))
                await until(lambda: _waiting(server, 1), "the poll is parked")
                await send(server, token, room, n)
                answer = await conn.response()
                assert bodies(answer) == [f"message {n}"]
                cursor = answer.json()["seq"]
            assert cursor == 3

    run_async(scenario())


async def _waiting(server: SquallProcess, polls: int) -> bool:
    return bool((await health(server))["waiting_polls"] == polls)


def test_pipelined_polls_are_answered_in_order(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        for n in range(1, 6):
            await send(server, token, room, n)
        async with kept_alive(server) as conn:
            path = f"/api/rooms/{room}/messages"
            conn.write(b"".join([
                conn.request_bytes("GET", f"{path}?since=0&limit=2&wait=0", token),
                conn.request_bytes("GET", f"{path}?since=2&limit=2&wait=0", token),
                conn.request_bytes("GET", f"{path}?since=4&wait=0", token),
                conn.request_bytes("GET", f"{path}?since=5&wait=0", token),
            ]))
            pages = [bodies(await conn.response()) for _ in range(4)]
            assert pages == [["message 1", "message 2"], ["message 3", "message 4"], ["message 5"], []]

    run_async(scenario())


def test_other_requests_share_the_connection_with_polls(server: SquallProcess, token: str, room: str) -> None:
    """A send, a members list and a 404 between polls go to Tornado and back."""
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            path = f"/api/rooms/{room}/messages"
            assert bodies(await conn.request("GET", f"{path}?since=0&wait=0", token)) == []
            body = json.dumps({"body": "over the same socket", "id": "s1"}).encode()
            sent = await conn.request("POST", path, token, body=body, headers={"Content-Type": "application/json"})
            assert sent.status == 200 and sent.json() == {"id": "s1", "seq": 1}
            assert bodies(await conn.request("GET", f"{path}?since=0&wait=0", token)) == ["over the same socket"]
            members = await conn.request("GET", f"/api/rooms/{room}/members", token)
            assert members.status == 200 and "keeper" in members.json()["members"]
            missing = await conn.request("GET", "/api/nowhere", token)
            assert missing.status == 404 and missing.json()["code"] == "not_found"
            history = await conn.request("GET", f"{path}?limit=10", token)
            assert bodies(history) == ["over the same socket"]

    run_async(scenario())


def test_a_bad_poll_is_refused_and_the_connection_stays_usable(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            path = f"/api/rooms/{room}/messages"
            assert (await conn.request("GET", f"{path}?since=0&wait=0", token)).status == 200
            bad = await conn.request("GET", f"{path}?since=0&wait=abc", token)
            assert bad.status == 400
            assert bad.json() == {"code": "bad_param", "reason": "wait must be a number, got 'abc'"}
            both = await conn.request("GET", f"{path}?since=1&before=3", token)
            assert both.status == 400 and both.json()["code"] == "bad_param"
            room_name = await conn.request("GET", "/api/rooms/No%20Such/messages?since=0&wait=0", token)
            assert room_name.status == 400 and room_name.json()["code"] == "bad_room"
            stranger = await conn.request("GET", f"{path}?since=0&wait=0", "not-a-token")
            assert stranger.status == 401 and stranger.json()["code"] == "unauthorized"
            assert (await conn.request("GET", f"{path}?since=0&wait=0", token)).status == 200

    run_async(scenario())


def test_the_token_may_come_in_the_query_or_the_cookie(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            path = f"/api/rooms/{room}/messages?since=0&wait=0"
            assert (await conn.request("GET", path, token)).status == 200
            assert (await conn.request("GET", f"{path}&token={token}", None)).status == 200
            cookie = {"Cookie": f"theme=dark; squall_token={token}"}
            assert (await conn.request("GET", path, None, headers=cookie)).status == 200
            assert (await conn.request("GET", path, None)).status == 401

    run_async(scenario())


@pytest.mark.parametrize("request_text", [
    pytest.param(b"GET /api/rooms/r/messages?since=0 HTTP/1.1\r\nNo colon here\r\n\r\n", id="bad-header-line"),
    pytest.param(b"GET /api/rooms/r/messages?since=0 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
    pytest.param(b"GET /api/rooms/r/messages?since=0 HTTP/1.1\r\nContent-Length: x\r\n\r\n", id="bad-length"),
    pytest.param(b"BREW /pot HTTP/1.1\r\n\r\n", id="unknown-method"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", id="tls-hello"),
])
def test_a_malformed_request_after_a_poll_is_refused_by_tornado(
    server: SquallProcess, token: str, room: str, request_text: bytes
) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            assert (await conn.request("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token)).status == 200
            conn.write(request_text)
            answer = await conn.response()
            assert 400 <= answer.status < 500
        # Nothing of it reached another connection.
        assert (await health(server))["ok"]

    run_async(scenario())


def test_an_oversized_head_after_a_poll_ends_the_connection(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            assert (await conn.request("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token)).status == 200
            conn.write(b"GET /api/rooms/r/messages?since=0 HTTP/1.1\r\nX-Filler: " + b"a" * 100_000)
            assert await conn.closed_by_server()
        assert (await health(server))["ok"]

    run_async(scenario())


def test_a_poll_asking_to_close_is_answered_then_closed(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        for version, headers in (("HTTP/1.1", {"Connection": "close"}), ("HTTP/1.0", {})):
            async with kept_alive(server) as conn:
                # Twice: the first goes through Tornado, the second is read by the node itself.
                for request_headers in ({}, headers) if version == "HTTP/1.1" else (headers,):
                    answer = await conn.request("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token,
                                                headers=request_headers, version=version)
                    assert answer.status == 200
                assert answer.headers.get("connection") == "close"
                assert await conn.closed_by_server()

    run_async(scenario())


def test_http_1_0_keep_alive_polls_stay_open(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        async with kept_alive(server) as conn:
            for _ in range(2):
                answer = await conn.request("GET", f"/api/rooms/{room}/messages?since=0&wait=0", token,
                                            headers={"Connection": "keep-alive"}, version="HTTP/1.0")
                assert answer.status == 200 and answer.headers.get("connection") != "close"

    run_async(scenario())


def test_a_poller_that_hangs_up_stops_waiting(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        before = (await health(server))["connections"]["long_poll"]
        conn = await KeptAlive.open(server)
        conn.write(conn.request_bytes("GET", f"/api/rooms/{room}/messages?since=0&wait=30", token))
        await until(lambda: _waiting(server, 1), "the poll is parked")
        await conn.close()
        await until(lambda: _waiting(server, 0), "the hung-up poll is forgotten")

        async def connections_back() -> bool:
            return bool((await health(server))["connections"]["long_poll"] == before)

        await until(connections_back, "the connection is gone")
        # The room still works for everyone else.
        await send(server, token, room, 1)
        answer = await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=token)
        assert bodies(answer) == ["message 1"]

    run_async(scenario())


def test_a_parked_poll_times_out_with_the_room_position(server: SquallProcess, token: str, room: str) -> None:
    async def scenario() -> None:
        await send(server, token, room, 1)
        async with kept_alive(server) as conn:
            answer = await conn.request("GET", f"/api/rooms/{room}/messages?since=1&wait=0.2", token)
            assert answer.status == 200 and answer.json() == {"messages": [], "seq": 1}
            again = await conn.request("GET", f"/api/rooms/{room}/messages?since=1&wait=0", token)
            assert again.json() == {"messages": [], "seq": 1}

    run_async(scenario())


def test_an_answer_cut_short_by_its_limit_continues_from_its_last_message(
    server: SquallProcess, token: str, room: str,
) -> None:
    """``seq`` is where to poll from next: the last message in the answer, never
    the room's newest when the limit left some out (docs/protocol.md)."""
    async def scenario() -> None:
        for n in range(1, 6):
            await send(server, token, room, n)
        async with kept_alive(server) as conn:
            path = f"/api/rooms/{room}/messages"
            first = (await conn.request("GET", f"{path}?since=0&limit=2&wait=0", token)).json()
            assert [m["seq"] for m in first["messages"]] == [1, 2] and first["seq"] == 2
            rest = (await conn.request("GET", f"{path}?since={first['seq']}&wait=0", token)).json()
            assert [m["seq"] for m in rest["messages"]] == [3, 4, 5] and rest["seq"] == 5
            newest = (await conn.request("GET", f"{path}?limit=2", token)).json()
            assert [m["seq"] for m in newest["messages"]] == [4, 5] and newest["seq"] == 5
            older = (await conn.request("GET", f"{path}?before=3&limit=10", token)).json()
            assert [m["seq"] for m in older["messages"]] == [1, 2] and older["seq"] == 2
            none_older = (await conn.request("GET", f"{path}?before=1", token)).json()
            assert none_older == {"messages": [], "seq": 0}

    run_async(scenario())


def _poll_head(server: SquallProcess, path: str, *lines: str) -> bytes:
    host, port = server.address
    return ("\r\n".join([f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *lines]) + "\r\n\r\n").encode()


@pytest.mark.parametrize("after_a_poll", [False, True], ids=["first", "after-a-poll"])
def test_polls_with_a_body_or_expect_are_served_as_polls(
    server: SquallProcess, token: str, room: str, after_a_poll: bool,
) -> None:
    """A body (by length or chunked) is read and dropped, ``Expect: 100-continue``
    gets its go-ahead, and the answer is the poll, not 405; the connection then
    goes on serving polls."""
    async def scenario() -> None:
        await send(server, token, room, 1)
        path = f"/api/rooms/{room}/messages?since=0&wait=0"
        auth = f"Authorization: Bearer {token}"
        async with kept_alive(server) as conn:
            if after_a_poll:
                assert bodies(await conn.request("GET", path, token)) == ["message 1"]
            conn.write(_poll_head(server, path, auth, "Content-Length: 5") + b"hello")
            assert bodies(await conn.response()) == ["message 1"]
            conn.write(_poll_head(server, path, auth, "Transfer-Encoding: chunked") + b"3\r\nabc\r\n0\r\n\r\n")
            assert bodies(await conn.response()) == ["message 1"]
            conn.write(_poll_head(server, path, auth, "Expect: 100-continue"))
            assert bodies(await conn.response()) == ["message 1"]
            conn.write(_poll_head(server, path, auth, "Expect: 100-continue", "Content-Length: 3"))
            status, _headers = await asyncio.wait_for(read_head(conn.reader), TIMEOUT)
            assert status == 100
            conn.write(b"abc")
            assert bodies(await conn.response()) == ["message 1"]
            assert bodies(await conn.request("GET", path, token)) == ["message 1"]

    run_async(scenario())


@pytest.mark.parametrize("after_a_poll", [False, True], ids=["first", "after-a-poll"])
def test_repeated_authorization_is_served_only_if_identical(
    server: SquallProcess, token: str, room: str, after_a_poll: bool,
) -> None:
    """Two identical credentials are one; two different ones are refused, in
    either order, rather than picking one (see squall/http1.py)."""
    other = server.session("someone-else")

    async def scenario() -> None:
        await send(server, token, room, 1)
        path = f"/api/rooms/{room}/messages?since=0&wait=0"
        async with kept_alive(server) as conn:
            if after_a_poll:
                assert bodies(await conn.request("GET", path, token)) == ["message 1"]
            same = f"Authorization: Bearer {token}"
            conn.write(_poll_head(server, path, same, same))
            assert bodies(await conn.response()) == ["message 1"]
            for first, second in ((token, other), (other, token), (token, "forged")):
                conn.write(_poll_head(server, path, f"Authorization: Bearer {first}",
                                      f"Authorization: Bearer {second}"))
                refused = await conn.response()
                assert refused.status == 400 and refused.json() == {
                    "code": "bad_header",
                    "reason": "the request has Authorization headers with different values",
                }, refused
            assert bodies(await conn.request("GET", path, token)) == ["message 1"]

    run_async(scenario())
