"""Hundreds of clients vanishing at once leave the room, and the server, sound.

Each vanished member leaves its room, which tells the others it went offline;
telling a member that is itself gone must not recurse into its own goodbye, or
a mass disconnect (a network blip, a proxy restart) runs out of stack halfway
and leaves members "online" forever.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct

from websockets.frames import Frame, Opcode

from support import ChatClient, SquallProcess, http, run_async

VANISHING = 300
SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}


async def joined_socket(server: SquallProcess, token: str, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket that has joined ``room``."""
    reader, writer = await asyncio.open_connection(*server.address)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: {server.address[0]}:{server.address[1]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    join = json.dumps({"type": "join", "room": room}).encode()
    writer.write(Frame(Opcode.TEXT, join).serialize(mask=True, extensions=[]))
    while True:  # frames up to our "joined"
        first, length = await reader.readexactly(2)
        length &= 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        frame = json.loads(await reader.readexactly(length))
        if frame.get("type") == "joined":
            return reader, writer


def reset(writer: asyncio.StreamWriter) -> None:
    """Vanish: close with a TCP reset, as a crashed peer or a dropped NAT entry does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def test_a_mass_disconnect_leaves_only_the_living_in_the_room(server: SquallProcess, room: str) -> None:
    observer_token = server.session("observer")
    tokens = [server.session(f"ghost{i}") for i in range(VANISHING)]

    async def members() -> list[str]:
        answer = await http(server.address, "GET", f"/api/rooms/{room}/members", token=observer_token)
        result: list[str] = answer.json()["members"]
        return result

    async def scenario() -> None:
        ghosts = [await joined_socket(server, token, room) for token in tokens]
        # The observer joins last, so every goodbye reaches the ghosts before it.
        observer = await ChatClient.connect(server.address, observer_token)
        try:
            assert (await observer.join(room))["count"] == VANISHING + 1
            # All at once, as far as the server can tell: it is paused meanwhile,
            # so it meets every dead peer while telling the first one's goodbye.
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                for _reader, writer in ghosts:
                    reset(writer)
            finally:
                server.process.send_signal(signal.SIGCONT)

            gone: set[str] = set()
            while len(gone) < VANISHING:
                event = await observer.recv_type("presence")
                gone |= {c["nick"] for c in event["changes"] if c["state"] == "offline"}
            assert gone == {f"ghost{i}" for i in range(VANISHING)}
            assert await members() == ["observer"]
            await observer.send_json({"type": "send", "room": room, "id": "after", "body": "still here?"})
            message = await observer.recv_type("message")
            assert message["body"] == "still here?"
        finally:
            await observer.close()
        errors = [line for line in server.lines if "Traceback" in line or "Error" in line]
        assert not errors, "\n".join(server.lines[-30:])

    run_async(scenario())
