"""Fan-out end to end: one room, every transport, many senders, real processes.

50 WebSocket members (5 of them also send), 10 long-pollers and 5 SSE streams
are in one room of a ``squall run`` while 500 messages go in. Each of the 65
must see seq 1..500 exactly once and in order, and each sender an ack for
every message it sent, with the seq the room shows for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from support import ChatClient, EventStream, SquallProcess, http, run_async

SQUALL_ENV = {"SQUALL_SEND_RATE": "10000", "SQUALL_SEND_BURST": "10000"}

WS_MEMBERS = 50
SENDERS = 5  # the first SENDERS WebSocket members
LONG_POLLERS = 10
SSE_STREAMS = 5
MESSAGES = 500
PER_SENDER = MESSAGES // SENDERS


def test_every_member_gets_every_message_once_in_order(server: SquallProcess, room: str) -> None:
    ws_tokens = [server.session(f"ws{i}") for i in range(WS_MEMBERS)]
    poll_tokens = [server.session(f"poll{i}") for i in range(LONG_POLLERS)]
    sse_tokens = [server.session(f"sse{i}") for i in range(SSE_STREAMS)]
    result = run_async(_fan_out(server, room, ws_tokens, poll_tokens, sse_tokens))

    sent = {(f"ws{s}", f"m{s}-{i}") for s in range(SENDERS) for i in range(PER_SENDER)}
    seq_of: dict[tuple[str, str], int] = {}
    for name, messages in result["received"].items():
        seqs = [m["seq"] for m in messages]
        assert seqs == list(range(1, MESSAGES + 1)), f"{name} got seqs {_summary(seqs)}"
        assert {(m["nick"], m["id"]) for m in messages} == sent, name
        for m in messages:
            assert seq_of.setdefault((m["nick"], m["id"]), m["seq"]) == m["seq"], (name, m)

    acked: dict[tuple[str, str], int] = {}
    for sender, acks in result["acks"].items():
        assert set(acks) == {f"m{sender}-{i}" for i in range(PER_SENDER)}, f"sender {sender}"
        for cid, seq in acks.items():
            acked[(f"ws{sender}", cid)] = seq
    assert acked == seq_of
    assert result["errors"] == []


def _summary(seqs: list[int]) -> str:
    wanted = set(range(1, MESSAGES + 1))
    missing = sorted(wanted - set(seqs))
    duplicates = sorted({s for s in seqs if seqs.count(s) > 1})
    disorder = any(a > b for a, b in zip(seqs, seqs[1:]))
    return f"count={len(seqs)} missing={missing[:20]} duplicates={duplicates[:20]} out_of_order={disorder}"


async def _fan_out(
    server: SquallProcess, room: str,
    ws_tokens: list[str], poll_tokens: list[str], sse_tokens: list[str],
) -> dict[str, Any]:
    address = server.address
    members = await asyncio.gather(*(ChatClient.connect(address, t) for t in ws_tokens))
    streams: list[EventStream] = []
    try:
        for joined in await asyncio.gather(*(m.join(room) for m in members)):
            assert joined["type"] == "joined" and joined["seq"] == 0, joined
        streams = list(await asyncio.gather(*(EventStream.open(address, room, t) for t in sse_tokens)))
        for stream in streams:
            joined_event = (await stream.next_of("joined")).json()
            assert joined_event["seq"] == 0, joined_event

        errors: list[dict[str, Any]] = []
        ws_tasks = [
            asyncio.ensure_future(_collect_ws(m, acks_expected=PER_SENDER if i < SENDERS else 0, errors=errors))
            for i, m in enumerate(members)
        ]
        poll_tasks = [asyncio.ensure_future(_long_poll(server, room, t)) for t in poll_tokens]
        sse_tasks = [asyncio.ensure_future(_collect_sse(s)) for s in streams]

        for sender in range(SENDERS):
            for i in range(PER_SENDER):
                await members[sender].send_json(
                    {"type": "send", "room": room, "id": f"m{sender}-{i}", "body": f"message {i} from {sender}"}
                )

        ws_results = await asyncio.gather(*ws_tasks)
        poll_results = await asyncio.gather(*poll_tasks)
        sse_results = await asyncio.gather(*sse_tasks)

        # Anything still in flight to a member (a late duplicate) arrives before its pong.
        for member, (messages, _acks) in zip(members, ws_results):
            await member.send_json({"type": "ping"})
            late = await member.recv_until(lambda f: f["type"] in ("pong", "message", "ack", "error"))
            assert late["type"] == "pong", f"after seq {messages[-1]['seq']}: {late}"

        received: dict[str, list[dict[str, Any]]] = {}
        for i, (messages, _acks) in enumerate(ws_results):
            received[f"ws{i}"] = messages
        for i, messages in enumerate(poll_results):
            received[f"poll{i}"] = messages
        for i, messages in enumerate(sse_results):
            received[f"sse{i}"] = messages
        return {
            "received": received,
            "acks": {i: ws_results[i][1] for i in range(SENDERS)},
            "errors": errors,
        }
    finally:
        await asyncio.gather(*(m.close() for m in members), *(s.close() for s in streams))


async def _collect_ws(
    member: ChatClient, *, acks_expected: int, errors: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    messages: list[dict[str, Any]] = []
    acks: dict[str, int] = {}
    while (not messages or messages[-1]["seq"] < MESSAGES) or len(acks) + len(errors) < acks_expected:
        frame = await member.recv_json()
        if frame["type"] == "message":
            messages.append(frame)
        elif frame["type"] == "ack":
            assert frame["id"] not in acks, f"second ack for {frame}"
            acks[frame["id"]] = frame["seq"]
        elif frame["type"] == "error":
            errors.append(frame)
            if "id" not in frame:
                raise AssertionError(f"unexpected error frame {frame}")
    return messages, acks


async def _long_poll(server: SquallProcess, room: str, token: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    cursor = 0
    while cursor < MESSAGES:
        response = await http(
            server.address, "GET", f"/api/rooms/{room}/messages?since={cursor}&wait=10&limit=1000",
            token=token,
        )
        assert response.status == 200, response
        page = response.json()["messages"]
        received.extend(page)
        if page:
            cursor = page[-1]["seq"]
    return received


async def _collect_sse(stream: EventStream) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or received[-1]["seq"] < MESSAGES:
        event = await stream.next_of("message")
        message = event.json()
        assert event.id == str(message["seq"]), event
        received.append(message)
    return received
