"""A storm of joins does not hold up a live message.

1500 WebSocket clients, already connected, join one room at once (each gets the
room's last 50 messages); right behind them an observer, live in another room,
asks to join 99 rooms more, and a message is sent to the room it is live in. The observer's socket carries both
its 99 ``joined`` replies and the message, in the order the server wrote them:
the server admits joins a batch per event-loop turn (squall/turns.py), so the
message goes out between batches, before the observer's joins — queued behind
the storm's — are all answered. Served all in one turn, as they were, every
join came first. The assertion is on that order, not on any time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

from websockets.frames import Frame, Opcode

from support import ChatClient, SquallProcess, http, run_async

STORM = 1500
BACKLOG = 60  # messages in the storm's room: each joiner gets the last 50 (history_on_join)
OWN_JOINS = 99  # the observer's: max_rooms_per_connection (100) with the room it is live in
SQUALL_ENV = {
    "SQUALL_JOIN_BURST_PER_USER": "1000", "SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000",
    "SQUALL_PRESENCE_INTERVAL": "0.001",
}


async def upgraded(server: SquallProcess, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*server.address)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: {server.address[0]}:{server.address[1]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def join_frame(room: str) -> bytes:
    return Frame(Opcode.TEXT, json.dumps({"type": "join", "room": room}).encode()).serialize(mask=True, extensions=[])


async def until_joined(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        _, length = await reader.readexactly(2)
        length &= 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        frame: dict[str, Any] = json.loads(await reader.readexactly(length))
        if frame.get("type") == "joined":
            return frame


def test_a_live_message_goes_out_between_batches_of_a_join_storm(server: SquallProcess, room: str) -> None:
    tokens = [server.session(f"storm{i}") for i in range(STORM)]
    observer_token, sender_token = server.session("observer"), server.session("sender")
    poller_token = server.session("poller")

    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        observer = await ChatClient.connect(server.address, observer_token)
        sender = await ChatClient.connect(server.address, sender_token)
        sockets = [await upgraded(server, token) for token in tokens]
        try:
            for n in range(BACKLOG):
                await sender.send_json({"type": "send", "room": room, "body": f"before {n}", "id": f"b{n}"})
            for _ in range(BACKLOG):
                await sender.recv_type("ack")
            await observer.join(f"{room}-live")
            for _reader, writer in sockets:
                writer.write(join_frame(room))
            await asyncio.gather(*(writer.drain() for _reader, writer in sockets))
            for n in range(OWN_JOINS):
                await observer.send_json({"type": "join", "room": f"{room}-own{n}"})
            polled = await http(server.address, "GET", f"/api/rooms/{room}-live/messages?since=0&wait=0",
                                token=poller_token)
            assert polled.status == 200
            await sender.send_json({"type": "send", "room": f"{room}-live", "body": "live during the storm", "id": "live"})
            order: list[str] = []
            while "message" not in order or "presence" not in order or order.count("joined") < OWN_JOINS:
                frame = await observer.recv_json()
                if frame["type"] == "joined":
                    order.append("joined")
                elif frame["type"] == "message":
                    order.append("message")
                elif frame["type"] == "presence" and {"nick": "poller", "state": "online"} in frame["changes"]:
                    order.append("presence")
            storm_joined = await asyncio.gather(*(until_joined(reader) for reader, _writer in sockets))
            return order, storm_joined
        finally:
            await observer.close()
            await sender.close()
            for _reader, writer in sockets:
                writer.close()

    order, storm_joined = run_async(scenario(), timeout=120)
    assert len(storm_joined) == STORM and all(j["room"] == room for j in storm_joined)
    assert max(j["count"] for j in storm_joined) == STORM
    where = {kind: order.index(kind) for kind in ("presence", "message")}
    assert order.count("message") == 1 and order.count("presence") == 1, where
    assert where["presence"] < OWN_JOINS, f"the live event waited until the storm's joins were all answered: {where}"
