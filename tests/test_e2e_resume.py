"""Resuming after a drop, on every transport: the missed messages, then live ones.

A client reads seq 1..10 and drops. Seq 11..20 are sent while it is gone. It
comes back with its cursor (``since`` on the WebSocket and for long-polls,
``Last-Event-ID`` or ``?since=`` for SSE) while 21..30 are being sent, and must
see exactly 11..30: no gap at the seam between backlog and live, no duplicate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from support import ChatClient, EventStream, SquallProcess, http, run_async

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}


@pytest.fixture(scope="module")
def tokens(server: SquallProcess) -> dict[str, str]:
    return {nick: server.session(nick) for nick in ("sender", "reader")}


async def send_all(sender: ChatClient, room: str, first: int, last: int) -> dict[int, int]:
    """Send messages ``first..last`` (ids ``m<n>``); returns n → acknowledged seq."""
    for n in range(first, last + 1):
        await sender.send_json({"type": "send", "room": room, "id": f"m{n}", "body": f"message {n}"})
    acks: dict[int, int] = {}
    while len(acks) < last - first + 1:
        frame = await sender.recv_until(lambda f: f["type"] in ("ack", "error"))
        assert frame["type"] == "ack", frame
        acks[int(frame["id"][1:])] = frame["seq"]
    return acks


async def ws_messages(client: ChatClient, until_seq: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or received[-1]["seq"] < until_seq:
        received.append(await client.recv_type("message"))
    return received


async def no_more_messages(client: ChatClient) -> None:
    """Anything still queued for ``client`` arrives before the pong."""
    await client.send_json({"type": "ping"})
    frame = await client.recv_until(lambda f: f["type"] in ("pong", "message"))
    assert frame["type"] == "pong", f"unexpected extra {frame}"


def test_websocket_rejoin_with_since(server: SquallProcess, tokens: dict[str, str], room: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        reader = await ChatClient.connect(server.address, tokens["reader"])
        again: ChatClient | None = None
        try:
            await reader.join(room)
            assert await send_all(sender, room, 1, 10) == {n: n for n in range(1, 11)}
            first = await ws_messages(reader, 10)
            assert [m["seq"] for m in first] == list(range(1, 11))
            reader.connection.transport.abort()  # a dropped network, not a goodbye
            await reader.close()

            await send_all(sender, room, 11, 20)
            again = await ChatClient.connect(server.address, tokens["reader"])
            live = asyncio.ensure_future(send_all(sender, room, 21, 30))  # races the re-join
            joined = await again.join(room, since=first[-1]["seq"])
            assert joined["type"] == "joined" and joined["seq"] >= 20, joined
            resumed = await ws_messages(again, 30)
            assert await live == {n: n for n in range(21, 31)}
            await no_more_messages(again)
            return resumed
        finally:
            await sender.close()
            await reader.close()
            if again is not None:
                await again.close()

    resumed = run_async(scenario())
    assert [m["seq"] for m in resumed] == list(range(11, 31))
    assert [m["id"] for m in resumed] == [f"m{n}" for n in range(11, 31)]


def test_websocket_join_with_since_past_the_end_gets_only_new_ones(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    async def scenario() -> list[int]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        reader = await ChatClient.connect(server.address, tokens["reader"])
        try:
            await send_all(sender, room, 1, 3)
            joined = await reader.join(room, since=1000)
            assert joined["seq"] == 3
            await send_all(sender, room, 4, 5)
            return [m["seq"] for m in await ws_messages(reader, 5)]
        finally:
            await sender.close()
            await reader.close()

    assert run_async(scenario()) == [4, 5]


def test_long_poll_resumes_from_its_cursor(server: SquallProcess, tokens: dict[str, str], room: str) -> None:
    path = f"/api/rooms/{room}/messages"

    async def poll(query: str) -> dict[str, Any]:
        response = await http(server.address, "GET", f"{path}?{query}", token=tokens["reader"])
        assert response.status == 200, response
        body: dict[str, Any] = response.json()
        return body

    async def scenario() -> list[dict[str, Any]]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        try:
            await send_all(sender, room, 1, 10)
            first = await poll("since=0&wait=0")
            assert [m["seq"] for m in first["messages"]] == list(range(1, 11))
            cursor = first["messages"][-1]["seq"]

            await send_all(sender, room, 11, 20)  # nobody polls meanwhile
            received: list[dict[str, Any]] = []
            # Catch up in small pages: the answer's seq is its last message's, not the room's.
            while cursor < 20:
                page = await poll(f"since={cursor}&limit=4&wait=10")
                assert 1 <= len(page["messages"]) <= 4, page
                assert page["seq"] == page["messages"][-1]["seq"], page
                received += page["messages"]
                cursor = page["seq"]

            waiting = asyncio.ensure_future(poll(f"since={cursor}&wait=10"))
            live = asyncio.ensure_future(send_all(sender, room, 21, 30))
            while cursor < 30:
                page = await (waiting if waiting is not None else poll(f"since={cursor}&wait=10"))
                waiting = None
                received += page["messages"]
                if page["messages"]:
                    cursor = page["messages"][-1]["seq"]
            await live
            return received
        finally:
            await sender.close()

    received = run_async(scenario())
    assert [m["seq"] for m in received] == list(range(11, 31))


def test_long_poll_with_cursor_past_the_end_gets_the_next_message(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    """As a WebSocket or SSE join does, a cursor past the end counts as "at the end".

    A cursor can run ahead of the room when the server's data was reset; a
    poller that only advances its cursor by the messages it receives would
    otherwise never hear from the room again.
    """
    async def scenario() -> dict[str, Any]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        try:
            # The room is open on the node (someone is in it), so the poll
            # parks in the same step that counts the reader as online. Into a
            # room the node has not opened, a poll reads the room's position
            # from the store first, and a message stored meanwhile is rightly
            # before its cursor.
            await sender.join(room)
            await send_all(sender, room, 1, 3)
            waiting = asyncio.ensure_future(http(
                server.address, "GET", f"/api/rooms/{room}/messages?since=1000&wait=10",
                token=tokens["reader"],
            ))
            # The poll counts the reader as online as it starts waiting: once
            # the room's members show it, message 4 is sure to come after.
            while "reader" not in (await http(
                server.address, "GET", f"/api/rooms/{room}/members", token=tokens["sender"]
            )).json()["members"]:
                pass
            await send_all(sender, room, 4, 4)
            body: dict[str, Any] = (await waiting).json()
            return body
        finally:
            await sender.close()

    body = run_async(scenario())
    assert [m["seq"] for m in body["messages"]] == [4], body


def test_long_poll_with_cursor_at_the_end_and_no_wait_answers_at_once(
    server: SquallProcess, tokens: dict[str, str], room: str
) -> None:
    response = run_async(http(
        server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=tokens["reader"]
    ))
    assert response.json() == {"messages": [], "seq": 0}


@pytest.mark.parametrize("how", ["last-event-id", "query"])
def test_sse_reconnects_with_its_last_event_id(
    server: SquallProcess, tokens: dict[str, str], room: str, how: str
) -> None:
    async def scenario() -> list[tuple[str | None, dict[str, Any]]]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        stream = await EventStream.open(server.address, room, tokens["reader"])
        again: EventStream | None = None
        try:
            assert (await stream.next_of("joined")).json()["seq"] == 0
            await send_all(sender, room, 1, 10)
            ids = [(await stream.next_of("message")).id for _ in range(10)]
            assert ids == [str(n) for n in range(1, 11)]
            stream.writer.transport.abort()
            await stream.close()

            await send_all(sender, room, 11, 20)
            live = asyncio.ensure_future(send_all(sender, room, 21, 30))
            if how == "query":
                again = await EventStream.open(server.address, room, tokens["reader"], since=10)
            else:
                again = await EventStream.open(server.address, room, tokens["reader"], last_event_id=10)
            joined = (await again.next_of("joined")).json()
            assert joined["seq"] >= 20, joined
            resumed: list[tuple[str | None, dict[str, Any]]] = []
            while not resumed or resumed[-1][1]["seq"] < 30:
                event = await again.next_of("message")
                resumed.append((event.id, event.json()))
            await live
            return resumed
        finally:
            await sender.close()
            await stream.close()
            if again is not None:
                await again.close()

    resumed = run_async(scenario())
    assert [message["seq"] for _id, message in resumed] == list(range(11, 31))
    assert [event_id for event_id, _message in resumed] == [str(n) for n in range(11, 31)]


def test_sse_query_since_wins_over_last_event_id(server: SquallProcess, tokens: dict[str, str], room: str) -> None:
    async def scenario() -> list[str | None]:
        sender = await ChatClient.connect(server.address, tokens["sender"])
        try:
            await send_all(sender, room, 1, 6)
        finally:
            await sender.close()
        stream = await EventStream.open(server.address, room, tokens["reader"], since=4, last_event_id=1)
        try:
            await stream.next_of("joined")
            return [(await stream.next_of("message")).id for _ in range(2)]
        finally:
            await stream.close()

    assert run_async(scenario()) == ["5", "6"]
