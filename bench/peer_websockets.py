"""The peer: the same chat subset on the ``websockets`` library and its ``broadcast()``.

This is what a careful developer would write with the best-known asyncio
WebSocket library: one handler coroutine per connection, the envelope encoded
once per message, and ``websockets.asyncio.server.broadcast`` to write it to
every member without waiting on any of them (``docs/topics/broadcast.rst``).
Compression is off, as it is for the ceiling and for the load generator; the
library's keepalive pings stay on, at their defaults.

Run it alone with ``python -m bench.peer_websockets --port 8002``.
"""

from __future__ import annotations

import argparse
import html
import time
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from .serving import BACKLOG, announce, serve_main

__all__ = ["start"]


class _Room:
    __slots__ = ("members", "seq")

    def __init__(self) -> None:
        self.members: dict[ServerConnection, str] = {}
        self.seq = 0


async def start(args: argparse.Namespace) -> Server:
    """Listen on ``args.host``:``args.port`` and announce the port."""
    rooms: dict[str, _Room] = {}

    async def handler(ws: ServerConnection) -> None:
        target = ws.request.path if ws.request is not None else "/"
        nick = parse_qs(urlsplit(target).query).get("token", ["anonymous"])[0]
        joined: list[_Room] = []
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                kind = msg.get("type")
                if kind == "send":
                    name = msg["room"]
                    room = rooms.get(name)
                    if room is None or ws not in room.members:
                        error = {"type": "error", "id": msg["id"], "code": "not_joined"}
                        await ws.send(orjson.dumps(error), text=True)
                        continue
                    room.seq += 1
                    body = msg["body"]
                    envelope = {
                        "type": "message",
                        "room": name,
                        "seq": room.seq,
                        "id": msg["id"],
                        "nick": nick,
                        "body": body,
                        "html": html.escape(body),
                        "mentions": [],
                        "links": [],
                        "ts": int(time.time() * 1000),
                    }
                    broadcast(room.members, orjson.dumps(envelope), text=True)
                    ack = {"type": "ack", "id": msg["id"], "room": name, "seq": room.seq}
                    await ws.send(orjson.dumps(ack), text=True)
                elif kind == "join":
                    name = msg["room"]
                    room = rooms.setdefault(name, _Room())
                    room.members[ws] = nick
                    joined.append(room)
                    reply = {
                        "type": "joined",
                        "room": name,
                        "seq": room.seq,
                        "members": list(room.members.values()),
                    }
                    await ws.send(orjson.dumps(reply), text=True)
        except ConnectionClosed:
            pass  # a client that hangs up without a close frame is not an error here
        finally:
            for room in joined:
                room.members.pop(ws, None)

    server = await serve(handler, args.host, args.port, compression=None, backlog=BACKLOG)
    announce(next(iter(server.sockets)).getsockname()[1])
    return server


if __name__ == "__main__":
    serve_main("websockets.broadcast() fan-out peer.", start)
