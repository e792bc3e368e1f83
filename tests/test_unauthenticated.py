"""Nothing from a connection without a valid session is ever acted on.

An attacker's client sends the upgrade request with no token (or a forged
one) and its chat frames in the same ``sendall``, so that they arrive in the
same read as the request. The server must answer with nothing but close 4001:
no ``pong``, no ``error``, no ``joined``; store nothing; and tell the room
nothing (no message, no ``typing`` or ``online`` presence with an empty nick).

How absence is shown without waiting for it: an authenticated watcher in the
room sends a sentinel message after the attacker has had its close. Anything
the attacker's frames had caused (a stored message, a presence event) was set
off while its upgrade was being handled, before the close was written, so the
watcher would see it before its own sentinel; history must hold the sentinel
alone.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import pytest

from support import TIMEOUT, ChatClient, RawFrames, SquallProcess, client_frame, run_async, upgrade_request

from squall.web.auth import decode_token, make_token

SQUALL_ENV = {"SQUALL_SEND_RATE": "1000", "SQUALL_SEND_BURST": "1000"}


@pytest.fixture(scope="module")
def token(server: SquallProcess) -> str:
    return server.session("watcher")


def _forged(token: str) -> str:
    return token[:-4] + ("0000" if not token.endswith("0000") else "1111")  # signature broken


def _frames(room: str, kinds: str) -> list[dict[str, Any]]:
    frames = {
        "send": {"type": "send", "room": room, "id": "intruder", "body": "stored without a session"},
        "typing": {"type": "typing", "room": room},
        "join": {"type": "join", "room": room, "since": 0},
        "ping": {"type": "ping"},
        "bad": {"type": "send", "room": "Bad Room", "id": "x", "body": "x"},
    }
    return [frames[kind] for kind in kinds.split("+")]


def _attack(server: SquallProcess, bad_token: str | None, payload: bytes, later: bytes = b"") -> tuple[list[dict[str, Any]], int | None]:
    """Send the upgrade and ``payload`` in one ``sendall`` (then ``later``);
    return what the server sent back up to its close frame."""
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(server.address, bad_token) + payload)
        if later:
            sock.sendall(later)
        reader = RawFrames(sock)
        head = reader.read_head()
        assert head.startswith(b"HTTP/1.1 101"), head
        frames, code = reader.until_close()
        sock.sendall(client_frame(b"\x0f\xa1", opcode=0x8))  # our close reply, 4001
        return frames, code


@pytest.mark.parametrize("kinds", ["send", "typing", "join", "ping", "bad", "join+send+typing+ping"])
@pytest.mark.parametrize("token_kind", ["none", "empty", "garbage", "forged"])
def test_frames_in_the_upgrade_segment_are_not_acted_on(
    server: SquallProcess, token: str, room: str, kinds: str, token_kind: str
) -> None:
    bad_token = {"none": None, "empty": "", "garbage": "garbage", "forged": _forged(token)}[token_kind]
    payload = b"".join(client_frame(frame) for frame in _frames(room, kinds))

    async def scenario() -> None:
        watcher = await ChatClient.connect(server.address, token)
        try:
            joined = await watcher.join(room)
            assert joined["type"] == "joined" and joined["seq"] == 0, joined
            # The watcher's own arrival, batched within presence_interval: from
            # here on, the room has nothing to say but what the intruder causes.
            presence = await watcher.recv_type("presence")
            assert presence["changes"] == [{"nick": "watcher", "state": "online"}], presence

            frames, code = await asyncio.to_thread(_attack, server, bad_token, payload)
            assert code == 4001
            assert frames == [], f"an unauthenticated client was answered: {frames}"

            await watcher.send_json({"type": "send", "room": room, "id": "sentinel", "body": "after"})
            while True:
                frame = await watcher.recv_json()
                if frame["type"] == "message" and frame["id"] == "sentinel":
                    break
                assert frame["type"] == "ack" and frame["id"] == "sentinel", (
                    f"the room heard from an unauthenticated client: {frame}"
                )
        finally:
            await watcher.close()

    run_async(scenario())
    assert [m["id"] for m in server.history(room, token)] == ["sentinel"]


def test_frames_after_the_upgrade_segment_are_not_acted_on(server: SquallProcess, token: str, room: str) -> None:
    """The same frames, in a later segment (a later read, usually)."""
    later = b"".join(client_frame(frame) for frame in _frames(room, "join+send+typing+ping"))
    frames, code = _attack(server, None, b"", later)
    assert (frames, code) == ([], 4001)
    assert server.history(room, token) == []



def test_a_validly_signed_token_for_an_empty_nick_is_no_session() -> None:
    secret = "s" * 32
    now = time.time()
    assert decode_token(secret, make_token(secret, "sid1", ""), max_age_days=1, now=now) is None
    session = decode_token(secret, make_token(secret, "sid1", "ann"), max_age_days=1, now=now)
    assert session is not None and session.nick == "ann"


def test_pipelined_http_requests_are_each_authenticated(server: SquallProcess, token: str, room: str) -> None:
    """One connection, one segment: a valid poll, then polls and writes with no
    token or a forged one. The lean poll path and Tornado's handlers each
    refuse the latter before doing anything for them."""
    other = f"{room}-b"
    body = b'{"body":"stored without a session","id":"p1"}'
    host = f"Host: {server.address[0]}\r\n"
    requests = [
        f"GET /api/rooms/{room}/messages?since=0&wait=0 HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n\r\n",
        f"GET /api/rooms/{other}/messages?since=0&wait=0 HTTP/1.1\r\n{host}\r\n",
        f"GET /api/rooms/{other}/messages?since=0&wait=0&token={_forged(token)} HTTP/1.1\r\n{host}\r\n",
        f"POST /api/rooms/{other}/messages HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body.decode()}",
        f"POST /api/rooms/{other}/typing HTTP/1.1\r\n{host}Authorization: Bearer {_forged(token)}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n",
    ]
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.sendall("".join(requests).encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 401, 401, 401, 401], answer
    assert server.api("GET", f"/api/rooms/{other}/members", token=token)[1]["members"] == []
    assert server.history(other, token) == []
