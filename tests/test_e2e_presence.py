"""Presence at scale, end to end: batched events, counts only in big rooms, paged members.

A ``squall run`` with a long ``presence_interval`` (1 s) and small thresholds, so
that "many joins" is tens of clients. Joiners come over WebSocket and by
long-polling; watchers listen over WebSocket and SSE. Nothing waits a fixed time:
assertions are on what arrived, and on how many events came for the time that
passed (the server sends a room at most one presence event per interval, however
fast or slow the machine).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from support import ChatClient, EventStream, SquallProcess, http, run_async

INTERVAL = 1.0
DETAIL_MAX = 40
PAGE = 7
SQUALL_ENV = {
    "SQUALL_PRESENCE_INTERVAL": str(INTERVAL),
    "SQUALL_PRESENCE_DETAIL_MAX": str(DETAIL_MAX),
    "SQUALL_MEMBERS_PAGE": str(PAGE),
    "SQUALL_MEMBERS_LIMIT_MAX": "50",
}


async def poll_once(server: SquallProcess, room: str, token: str) -> None:
    """One long-poll: its nick is online in ``room`` for poll_grace (30 s) after it."""
    answer = await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=token)
    assert answer.status == 200, answer


async def members(server: SquallProcess, room: str, token: str, query: str = "") -> Any:
    return await http(server.address, "GET", f"/api/rooms/{room}/members{query}", token=token)


def test_many_joins_are_few_batched_events_on_websocket_and_sse(server: SquallProcess, room: str) -> None:
    ws_tokens = [server.session(f"ws{i}") for i in range(15)]
    poll_tokens = [server.session(f"lp{i}") for i in range(15)]
    watcher_token, sse_token = server.session("watcher"), server.session("sse-watcher")
    joiners = {f"ws{i}" for i in range(15)} | {f"lp{i}" for i in range(15)}

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
        watcher = await ChatClient.connect(server.address, watcher_token)
        stream = await EventStream.open(server.address, room, sse_token)
        clients: list[ChatClient] = []
        try:
            await watcher.join(room)
            await stream.next_of("joined")
            started = time.monotonic()
            clients = await asyncio.gather(*(ChatClient.connect(server.address, t) for t in ws_tokens))
            await asyncio.gather(*(c.join(room) for c in clients), *(poll_once(server, room, t) for t in poll_tokens))

            async def collect(next_presence: Any) -> list[dict[str, Any]]:
                events, seen = [], set()
                while not joiners <= seen:
                    event = await next_presence()
                    events.append(event)
                    seen |= {c["nick"] for c in event["changes"] if c["state"] == "online"}
                return events

            ws_events, sse_events = await asyncio.gather(
                collect(lambda: watcher.recv_type("presence")),
                collect(lambda: _sse_json(stream, "presence")),
            )
            return ws_events, sse_events, time.monotonic() - started
        finally:
            for client in (*clients, watcher):
                await client.close()
            await stream.close()

    ws_events, sse_events, elapsed = run_async(scenario())
    for events in (ws_events, sse_events):
        # At most one event per interval, whatever the machine's speed.
        assert len(events) <= elapsed / INTERVAL + 2, (len(events), elapsed)
        # 30 joins, each reported once, with the count of the room after them.
        changes = [c for e in events for c in e["changes"]]
        assert sorted(c["nick"] for c in changes if c["nick"] in joiners) == sorted(joiners)
        assert events[-1]["count"] == 32  # the joiners and both watchers
    assert [e["changes"] for e in ws_events] == [e["changes"] for e in sse_events]


async def _sse_json(stream: EventStream, kind: str) -> dict[str, Any]:
    return (await stream.next_of(kind)).json()  # type: ignore[no-any-return]


def test_a_room_over_the_threshold_gets_counts_only(server: SquallProcess, room: str) -> None:
    tokens = [server.session(f"crowd{i}") for i in range(DETAIL_MAX + 5)]
    watcher_token = server.session("count-watcher")

    async def scenario() -> list[dict[str, Any]]:
        watcher = await ChatClient.connect(server.address, watcher_token)
        try:
            await watcher.join(room)
            await asyncio.gather(*(poll_once(server, room, t) for t in tokens))
            events = []
            while not events or events[-1]["count"] < len(tokens) + 1:
                events.append(await watcher.recv_type("presence"))
            return events
        finally:
            await watcher.close()

    events = run_async(scenario())
    last = events[-1]
    assert last == {"type": "presence", "room": room, "count": DETAIL_MAX + 6}
    assert all(("changes" in e) == (e["count"] <= DETAIL_MAX) for e in events)


def test_joined_has_a_first_page_and_the_cursor_pages_through_everyone_once(server: SquallProcess, room: str) -> None:
    nicks = [f"M{i:02d}" if i % 3 == 0 else f"m{i:02d}" for i in range(30)]
    tokens = [server.session(n) for n in nicks]
    joiner_token = server.session("m99")

    async def scenario() -> tuple[dict[str, Any], list[Any], Any]:
        await asyncio.gather(*(poll_once(server, room, t) for t in tokens))
        client = await ChatClient.connect(server.address, joiner_token)
        stream = await EventStream.open(server.address, room, joiner_token)
        try:
            joined = await client.join(room)
            sse_joined = (await stream.next_of("joined")).json()
            pages, cursor = [], None
            while True:
                query = "?limit=5" + (f"&cursor={cursor}" if cursor else "")
                answer = await members(server, room, joiner_token, query)
                assert answer.status == 200, answer
                pages.append(answer.json())
                cursor = pages[-1]["next"]
                if cursor is None:
                    return joined, pages, sse_joined
        finally:
            await client.close()
            await stream.close()

    joined, pages, sse_joined = run_async(scenario())
    everyone = sorted([*nicks, "m99"], key=str.casefold)
    assert joined["count"] == 31 and joined["members"] == everyone[:PAGE]
    assert joined["next"] == everyone[PAGE - 1].casefold()
    assert sse_joined["count"] == 31 and sse_joined["members"] == everyone[:PAGE]
    listed = [nick for page in pages for nick in page["members"]]
    assert listed == everyone  # every member exactly once, in casefolded order
    assert all(page["count"] == 31 for page in pages) and len(pages) == 7


@pytest.mark.parametrize("query, why", [
    ("?cursor=", "cursor"),
    ("?cursor=Alice", "cursor"),  # not casefolded: no page gave it
    ("?cursor=" + "a" * 97, "cursor"),
    ("?limit=0", "limit"),
    ("?limit=51", "limit"),
    ("?limit=ten", "limit"),
])
def test_a_bad_cursor_or_limit_is_refused_with_a_reason(server: SquallProcess, room: str, query: str, why: str) -> None:
    token = server.session("asker")
    answer = run_async(members(server, room, token, query))
    assert answer.status == 400
    body = answer.json()
    assert body["code"] == "bad_param" and why in body["reason"], body
