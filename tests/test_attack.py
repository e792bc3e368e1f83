"""Squall attacked the way issue 10's findings attacked it, while two users keep chatting.

One ``squall run`` serves the whole module. Two healthy users, ``hana`` and
``kofi``, sit in one room over WebSocket; after every attack one of them says
something and the other must hear it next — not an attacker's message, not a
presence or typing event with an empty nick — and the room's history must hold
exactly what the pair said, each message once, with seqs 1, 2, 3, … So an
attack that stored anything in their room, broadcast anything to it, took
over one of their nicks or starved the node shows up as a broken exchange.

The attacks, each with its refusal asserted precisely:

1. unauthenticated WebSocket frames in the same segment as the upgrade
   request (no token, a forged one, one signed with another secret, one of an
   ended session): close 4001 and nothing else;
2. a client that floods frames that each earn an answer and never reads: the
   node stops reading it (or closes it, 4008) and stays small;
3. processor-link injection on the ``squall run`` child's private port (an
   HTTP request whose body is link lines, a ``process`` before ``hello``, a
   wrong proof): one error line, the close, nothing stored, logged once;
4. a poison batch over an authenticated link: each bad request ``rejected``
   with its code, every good one stored;
5. a second node started with 64 file descriptors and filled with idle
   connections: it backs off quietly and serves again afterwards;
6. look-alike, online and bidi nicks: ``409 nick_taken`` / ``400 bad_nick``;
7. a session flood from one address, one nick sending over several
   connections, a foreign ``Host``: ``rate_limited`` (with ``retry_after``) and
   ``bad_host``, each counted in ``/api/health``.

Rates are one token per 1000 s, so counts of accepted against refused are
exact whatever the machine's speed. Sessions from 127.0.0.1 (every test
client's address) share :data:`SESSION_BURST`: the whole module asks for 17 (refused
ones count too); the session flood comes from 127.0.0.2, another address
(Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from squall.handshake import new_nonce, web_hello
from squall.web.auth import make_token, new_session_id
from support import (
    PROCESSOR_LINE, TIMEOUT, ChatClient, LineClient, RawFrames, SquallProcess, client_frame, close_writer,
    http, read_head, run_async, squall_server, upgrade_request,
)

NEVER = "0.001"  # one token per 1000 s: none comes back while the module runs
SEND_BURST = 20
SESSION_BURST = 25
SQUALL_ENV = {
    "SQUALL_SEND_RATE": NEVER, "SQUALL_SEND_BURST": str(SEND_BURST),
    "SQUALL_SESSION_RATE_PER_IP": NEVER, "SQUALL_SESSION_BURST_PER_IP": str(SESSION_BURST),
    # The flooder reads its close frame only after the flood: no abort before.
    "SQUALL_CLOSE_TIMEOUT": "60",
}
PASSWORD = "correct horse battery"
REFUSAL_LINE = "refused a processor-link connection"
_T = TypeVar("_T")


# -- a loop that outlives each test, for the healthy pair ------------------------------


class LoopThread:
    """An event loop in a thread of its own: connections opened on it live across tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 4 * TIMEOUT) -> _T:
        async def bounded() -> _T:
            return await asyncio.wait_for(coroutine, timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()


class HealthyPair:
    """Two users in one room who must keep hearing each other, and nothing else."""

    ROOM = "healthy"

    def __init__(self, server: SquallProcess, loop: LoopThread) -> None:
        self.server = server
        self.loop = loop
        self.nicks = ("hana", "kofi")
        self.tokens = {nick: server.session(nick) for nick in self.nicks}
        self.clients: dict[str, ChatClient] = {}
        self.said: list[tuple[str, str]] = []  # (id, nick) of what the pair said, in the order stored
        self._turns = itertools.count()
        loop.run(self._open())

    async def _open(self) -> None:
        first, second = self.nicks
        for nick in self.nicks:
            self.clients[nick] = await ChatClient.connect(self.server.address, self.tokens[nick])
        joined = await self.clients[first].join(self.ROOM)
        assert joined["type"] == "joined" and joined["seq"] == 0, joined
        joined = await self.clients[second].join(self.ROOM)
        assert joined["type"] == "joined" and sorted(joined["members"]) == sorted(self.nicks), joined
        # Both hear, in the interval's batched presence event, that the second came;
        # after it, nothing is pending (the pair hears nothing else from here on).
        for nick in self.nicks:
            presence = await self.clients[nick].recv_json()
            while {"nick": second, "state": "online"} not in presence.get("changes", ()):
                assert presence["type"] == "presence" and presence["count"] == 1, presence
                presence = await self.clients[nick].recv_json()
            assert presence["type"] == "presence" and presence["count"] == 2, presence

    def token(self, nick: str) -> str:
        return self.tokens[nick]

    def assert_still_chatting(self, after: str) -> None:
        """One of the pair says something; the other hears it next, and it is stored once, with the next seq."""
        turn = next(self._turns)
        speaker, listener = self.nicks if turn % 2 == 0 else self.nicks[::-1]
        cid = f"after-{turn}"
        self.loop.run(self._exchange(speaker, listener, cid, seq=len(self.said) + 1, after=after))
        self.said.append((cid, speaker))
        history = self.server.history(self.ROOM, self.tokens[listener])
        stored = [(m["seq"], m["id"], m["nick"]) for m in history]
        expected = [(seq, said, nick) for seq, (said, nick) in enumerate(self.said, start=1)]
        assert stored == expected, f"after {after}, the pair's room holds {stored}"

    async def _exchange(self, speaker: str, listener: str, cid: str, *, seq: int, after: str) -> None:
        body = f"still chatting after {after}"
        await self.clients[speaker].send_json({"type": "send", "room": self.ROOM, "id": cid, "body": body})
        # Its ack and its own message, in either order, and nothing else.
        own = sorted([await self.clients[speaker].recv_json(), await self.clients[speaker].recv_json()],
                     key=lambda frame: frame["type"])
        assert [frame["type"] for frame in own] == ["ack", "message"], f"after {after}, {speaker} got {own}"
        ack, echo = own
        assert ack == {"type": "ack", "id": cid, "room": self.ROOM, "seq": seq}, f"after {after}, {speaker} got {own}"
        assert (echo["id"], echo["seq"]) == (cid, seq), f"after {after}, {speaker} got {own}"
        heard = await self.clients[listener].recv_json()
        assert heard["type"] == "message" and (heard["id"], heard["seq"], heard["nick"], heard["body"]) == (
            cid, seq, speaker, body
        ), f"after {after}, {listener} heard {heard} instead of {speaker}'s {cid}"

    def close(self) -> None:
        async def close_all() -> None:
            for client in self.clients.values():
                await client.close()

        self.loop.run(close_all())


@pytest.fixture(scope="module")
def pair(server: SquallProcess) -> Iterator[HealthyPair]:
    loop = LoopThread()
    try:
        healthy = HealthyPair(server, loop)
        try:
            healthy.assert_still_chatting("start-up")
            yield healthy
        finally:
            healthy.close()
    finally:
        loop.close()


def health(server: SquallProcess) -> dict[str, Any]:
    status, body = server.api("GET", "/api/health")
    assert status == 200, (status, body)
    return dict(body)


def rejected(server: SquallProcess, code: str, limit: str) -> int:
    """How many refusals of ``code`` for ``limit`` the node has counted since it started."""
    return int(health(server)["rejections"].get(code, {}).get(limit, 0))


# -- 1. unauthenticated frames in the upgrade segment ------------------------------------


def _ended_session(server: SquallProcess) -> str:
    token = server.session("ghost")
    assert server.api("POST", "/api/logout", token=token)[0] == 204
    return token


BAD_TOKENS = {
    "no token": lambda server, pair: None,
    "forged signature": lambda server, pair: pair.token("hana")[:-6] + "000000",
    # Well formed and current, for a nick that is online, but not signed with this server's secret.
    "another secret": lambda server, pair: make_token("not the server's secret", new_session_id(), "hana"),
    "ended session": lambda server, pair: _ended_session(server),
}


def _upgrade_with_frames(
    address: tuple[str, int], token: str | None, frames: list[dict[str, Any]]
) -> tuple[bytes, list[dict[str, Any]], int | None]:
    """The upgrade request and ``frames`` in one ``sendall``; what the server answered up to its close."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(address, token) + b"".join(client_frame(frame) for frame in frames))
        reader = RawFrames(sock)
        head = reader.read_head()
        answered, code = reader.until_close()
        return head, answered, code


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_frames_in_the_upgrade_segment_without_a_session_are_dropped(
    server: SquallProcess, pair: HealthyPair, kind: str
) -> None:
    token = BAD_TOKENS[kind](server, pair)
    room = HealthyPair.ROOM
    frames = [
        {"type": "join", "room": room, "since": 0},
        {"type": "send", "room": room, "id": "intruder", "body": "stored without a session"},
        {"type": "typing", "room": room},
        {"type": "ping"},
    ]
    head, answered, code = _upgrade_with_frames(server.address, token, frames)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (answered, code) == ([], 4001), f"a client without a session got {answered} and close {code}"
    # The pair hears nothing from it (no message, no presence) and its room stores nothing.
    pair.assert_still_chatting(f"frames with {kind}")


# -- 2. a flooder that never reads -----------------------------------------------------

# Frames that each earn an answer: bad JSON (an `error` 16x its size), a ping
# command (a `pong` frame) and an RFC 6455 ping (a pong from the framing layer).
FLOOD_UNIT = [client_frame(b"x"), client_frame(b'{"type":"ping"}'), client_frame(b"", opcode=0x9)]
FLOOD_BYTES = 13 * 1024 * 1024  # as much as the finding sent
STALL = 2.0  # seconds the flooder's socket stays unwritable: the node has stopped reading
RSS_BOUND = 8 * 1024 * 1024  # what the web node may grow by over the whole flood


def _frames_in(sent: int) -> int:
    """How many whole frames the first ``sent`` bytes of the flood hold."""
    unit = sum(map(len, FLOOD_UNIT))
    frames, rest = 3 * (sent // unit), sent % unit
    for frame in FLOOD_UNIT:
        if rest < len(frame):
            break
        frames, rest = frames + 1, rest - len(frame)
    return frames


def _flood(sock: socket.socket, web: psutil.Process, rss_before: int) -> tuple[str, int]:
    """Send up to FLOOD_BYTES without reading: ``("stalled" | "sent" | "reset", bytes sent)``."""
    chunk = b"".join(FLOOD_UNIT) * (64 * 1024 // sum(map(len, FLOOD_UNIT)))
    sock.setblocking(False)
    total = checked = 0
    while total < FLOOD_BYTES:
        view = memoryview(chunk)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                if not select.select([], [sock], [], STALL)[1]:
                    return "stalled", total
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "reset", total
            view, total = view[sent:], total + sent
        if total - checked >= 1024 * 1024:  # fail early rather than swap
            checked = total
            growth = web.memory_info().rss - rss_before
            assert growth < RSS_BOUND, f"the web node grew by {growth >> 20} MiB after {total >> 20} MiB of flood"
    return "sent", total


def _answers(reader: RawFrames, owed: int) -> tuple[int, int | None]:
    """Answers read (text frames and pongs) until ``owed`` of them, or the close frame's code."""
    answers, last = 0, None
    while answers < owed:
        frame = reader.next_frame()
        assert frame is not None, f"EOF after {answers} of {owed} answers"
        opcode, payload = frame
        if opcode == 0x8:
            assert last is not None and last.get("code") == "too_slow", last
            return answers, struct.unpack_from("!H", payload)[0]
        if opcode == 0x1:
            last = json.loads(payload)
        answers += 1
    return answers, None


def test_a_flooder_that_never_reads_is_paused_or_closed_and_the_node_stays_small(
    server: SquallProcess, pair: HealthyPair
) -> None:
    assert server.process is not None
    web = psutil.Process(server.process.pid)
    token = server.session("flooder")
    rss_before = web.memory_info().rss
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Our own send buffer small too: what the kernels hold on the way stays far below the flood.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(server.address)
        sock.sendall(upgrade_request(server.address, token))
        reader = RawFrames(sock)
        assert reader.read_head().startswith(b"HTTP/1.1 101")

        outcome, sent = _flood(sock, web, rss_before)
        growth = web.memory_info().rss - rss_before
        print(f"\nflood: {outcome} after {sent / 2**20:.1f} MiB; the web node grew by {growth / 2**20:.1f} MiB")
        assert growth < RSS_BOUND, f"the web node grew by {growth >> 20} MiB"
        assert outcome == "stalled", f"the node read all {sent} bytes of a client that reads nothing ({outcome})"

        pair.assert_still_chatting("a flood, with the flooder stalled")
        assert not select.select([], [sock], [], STALL)[1], "the node read from the flooder again"

        # Reading at last, the flooder finds every answer it was owed (it was
        # paused, then read again as it caught up) or `too_slow` and 4008.
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        owed = _frames_in(sent)
        answers, code = _answers(reader, owed)
        print(f"flood: {answers} answers to {owed} frames, close code {code}")
        assert code == 4008 if code is not None else answers == owed
    finally:
        sock.close()
    pair.assert_still_chatting("the flooder's close")


# -- 3. processor-link injection ------------------------------------------------------


def processor_port(server: SquallProcess) -> int:
    """The private port ``squall run`` gave its processor child, as it said and as the OS shows it."""
    line = server.wait_for_line(PROCESSOR_LINE)
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match is not None, line
    port = int(match.group(1))
    listening = {c.laddr.port for c in server.processor_child().net_connections(kind="tcp") if c.status == "LISTEN"}
    assert listening == {port}, (line, listening)
    return port


def _link_line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"


async def _refused_link(port: int, send: bytes | None, *, code: str, key: bytes | None = None) -> None:
    """On a fresh link connection: our ``hello`` (proved with ``key``) or nothing,
    then ``send``; the processor answers one error with ``code`` and closes."""
    client = await LineClient.connect(port)
    try:
        greeting = await client.recv()
        assert greeting["op"] == "hello" and greeting["role"] == "processor", greeting
        data = b""
        if key is not None:
            hello, _ = web_hello(greeting, key=key, our_nonce=new_nonce())
            data += _link_line(hello)
        client.send_raw(data + (send or b""))  # in one segment
        answer = await client.recv()
        assert answer["op"] == "error" and answer["code"] == code and answer["reason"], answer
        assert await client.read_to_eof() == b"", "the processor kept the connection open"
    finally:
        await client.close()


def test_link_injection_is_refused_and_stores_nothing(server: SquallProcess, pair: HealthyPair) -> None:
    port = processor_port(server)
    room, victim = HealthyPair.ROOM, "hana"
    injected = {"op": "process", "ref": 1, "room": room, "nick": victim, "id": "injected",
                "body": "stored as anyone", "ts": 1_700_000_000_000}
    forged_seen = {"op": "seen", "nick": "kofi", "room": room, "seq": 1_000_000}
    logged_before = server.count_lines(REFUSAL_LINE)

    # What a same-host SSRF sends: an HTTP request whose body holds link lines.
    body = _link_line(injected) + _link_line(forged_seen)
    ssrf = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    run_async(_refused_link(port, ssrf, code="hello_expected"))
    pair.assert_still_chatting("an HTTP request to the processor")

    run_async(_refused_link(port, _link_line(injected) + _link_line(forged_seen), code="hello_expected"))
    pair.assert_still_chatting("link lines before hello")

    # A hello whose HMAC proof was made with the wrong key, the injection riding in its segment.
    run_async(_refused_link(port, _link_line({**injected, "id": "injected-2"}), code="bad_proof", key=b"\x00" * 32))
    pair.assert_still_chatting("a hello with a wrong proof")

    logged = server.count_lines(REFUSAL_LINE) - logged_before
    assert logged <= 1, f"{logged} log lines for three refused link connections\n{server.output()}"


# -- 4. a poison batch ------------------------------------------------------------------

GOOD = 200
POISON = {
    "ts-2**63": ({"ts": 2**63}, "bad_ts"),
    "bad-room": ({"room": "Bad Room"}, "bad_room"),
    "id-66": ({"id": "x" * 66}, "bad_id"),
    "bad-nick": ({"nick": "bad nick!"}, "bad_nick"),
}


def test_a_poison_batch_costs_only_the_poison(server: SquallProcess, pair: HealthyPair) -> None:
    room = "batch"

    def process(ref: str, **fields: Any) -> dict[str, Any]:
        return {"op": "process", "ref": ref, "room": room, "nick": "bulk", "id": ref,
                "body": f"message {ref}", "ts": 1_700_000_000_000, **fields}

    good = [process(f"good-{n}") for n in range(GOOD)]
    requests = list(good)
    for n, (name, (fields, _code)) in enumerate(POISON.items(), start=1):
        requests.insert(n * GOOD // (len(POISON) + 1) + n - 1, process(name, **fields))  # spread through the batch

    async def scenario() -> dict[str, dict[str, Any]]:
        client = await LineClient.connect(processor_port(server))
        try:
            await client.authenticate(server.link_key())
            client.send(*requests)  # pipelined, in one write
            answers = [await client.recv() for _ in requests]
        finally:
            await client.close()
        return {answer["ref"]: answer for answer in answers}

    answers = run_async(scenario())
    for name, (_fields, code) in POISON.items():
        answer = answers[name]
        assert (answer["op"], answer["code"]) == ("rejected", code) and answer["reason"], answer
    processed = [answers[request["ref"]] for request in good]
    assert [a["op"] for a in processed] == ["processed"] * GOOD, [a for a in processed if a["op"] != "processed"][:3]
    assert sorted(a["message"]["seq"] for a in processed) == list(range(1, GOOD + 1))
    stored = server.history(room, pair.token("hana"))
    assert sorted(m["id"] for m in stored) == sorted(r["ref"] for r in good), "the store holds other than the good ones"
    pair.assert_still_chatting("a poison batch")


# -- 5. a node out of file descriptors ------------------------------------------------

FD_LIMIT = 64


def _limit_open_files() -> None:
    # Soft and hard, so that raising the soft limit at start-up cannot help.
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def _closed(reader: asyncio.StreamReader) -> None:
    """Returns once the server closes the connection (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass


def test_a_node_out_of_file_descriptors_backs_off_quietly_and_recovers(
    tmp_path: Path, pair: HealthyPair
) -> None:
    env = {"SQUALL_HEADER_TIMEOUT": "2", "SQUALL_IDLE_TIMEOUT": "5"}
    with squall_server(tmp_path, env=env, preexec_fn=_limit_open_files) as starved:
        assert starved.process is not None
        web = psutil.Process(starved.process.pid)
        token = starved.session("patient")

        async def scenario() -> None:
            idle = [await asyncio.open_connection(*starved.address) for _ in range(2 * FD_LIMIT)]
            try:
                await asyncio.to_thread(starved.wait_for_line, "Too many open files")
                cpu_before, started = web.cpu_times(), time.monotonic()
                # Out of descriptors until the header timeout closes the idle
                # connections it accepted: the window measured.
                closes = [asyncio.ensure_future(_closed(reader)) for reader, _writer in idle]
                done, _ = await asyncio.wait(closes, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                cpu_after, elapsed = web.cpu_times(), time.monotonic() - started
                for close in closes:
                    close.cancel()
                await asyncio.gather(*closes, return_exceptions=True)
                assert done, "the header timeout closed none of the idle connections"
                busy = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
                print(f"\nout of descriptors: {busy:.0%} of a CPU for {elapsed:.1f} s")
                assert busy < 0.25, f"the node used {busy:.0%} of a CPU while out of descriptors"
            finally:
                for _reader, writer in idle:
                    writer.close()
            client = await ChatClient.connect(starved.address, token)
            try:
                assert (await client.join("lobby"))["type"] == "joined"
                await client.send_json({"type": "send", "room": "lobby", "id": "back", "body": "served again"})
                message = await client.recv_type("message")
                assert (message["id"], message["seq"]) == ("back", 1), message
            finally:
                await client.close()

        run_async(scenario())
        reports = starved.count_lines("Too many open files")
        assert 1 <= reports <= 2, f"{reports} lines about running out of descriptors\n{starved.output()}"
        assert "Traceback" not in starved.output(), starved.output()
    pair.assert_still_chatting("another node ran out of descriptors")


# -- 6. confusable, online and bidi nicks -----------------------------------------------

CYRILLIC_A = "\u0430"  # looks like Latin a
FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(ord("a"), ord("z") + 1)})


def test_look_alike_online_and_bidi_nicks_are_refused(server: SquallProcess, pair: HealthyPair) -> None:
    status, body = server.api("POST", "/api/account", {"nick": "alice", "password": PASSWORD})
    assert status == 201 and body["registered"] is True, (status, body)

    def guest(nick: str) -> tuple[int, dict[str, Any]]:
        return server.api("POST", "/api/session", {"nick": nick})

    for nick in ("alice", "ALICE"):
        status, body = guest(nick)
        assert (status, body["code"]) == (409, "nick_taken") and "registered" in body["reason"], (nick, body)
    for nick in (CYRILLIC_A + "lice", "alice".translate(FULL_WIDTH), "AIice"):
        status, body = guest(nick)
        assert (status, body["code"]) == (409, "nick_taken"), (nick, status, body)
        assert "looks like the registered nick 'alice'" in body["reason"], (nick, body)
    status, body = server.api("POST", "/api/account", {"nick": CYRILLIC_A + "lice", "password": PASSWORD})
    assert (status, body["code"]) == (409, "nick_taken"), body

    # A healthy user's nick, online right now, and a look-alike of it.
    for nick in ("kofi", "k\u043efi"):  # the second with a Cyrillic o
        status, body = guest(nick)
        assert (status, body["code"]) == (409, "nick_taken") and "online right now" in body["reason"], (nick, body)

    for nick, point in (("ali\u202ece", "U+202E"), ("\u2066hana", "U+2066")):
        status, body = guest(nick)
        assert (status, body["code"]) == (400, "bad_nick") and point in body["reason"], (nick, body)
    pair.assert_still_chatting("look-alike nicks")


# -- 7. limits per address and per person, and the Host -----------------------------------


def test_a_session_flood_from_one_address_is_rate_limited(server: SquallProcess, pair: HealthyPair) -> None:
    """From 127.0.0.2: an address of its own, so the module's other sessions keep theirs."""
    refused_before = rejected(server, "rate_limited", "session_per_ip")
    answers = []
    for n in range(SESSION_BURST + 3):
        connection = HTTPConnection(*server.address, timeout=TIMEOUT, source_address=("127.0.0.2", 0))
        try:
            connection.request("POST", "/api/session", body=json.dumps({"nick": f"flood{n}"}).encode(),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answers.append((response.status, response.getheader("Retry-After"), json.loads(response.read())))
        finally:
            connection.close()

    assert [status for status, _, _ in answers] == [200] * SESSION_BURST + [429] * 3
    for _status, retry_after_header, body in answers[SESSION_BURST:]:
        assert (body["code"], body["limit"]) == ("rate_limited", "session_per_ip"), body
        assert body["retry_after"] > 0 and retry_after_header is not None, body
        assert int(retry_after_header) >= body["retry_after"], (retry_after_header, body)
    assert rejected(server, "rate_limited", "session_per_ip") - refused_before == 3
    server.session("bystander")  # another address is not locked out by the flood
    pair.assert_still_chatting("a session flood")


def test_one_nick_over_several_connections_gets_one_send_budget(server: SquallProcess, pair: HealthyPair) -> None:
    room, connections, each = "spam", 3, 10
    token = server.session("spammer")
    refused_before = rejected(server, "rate_limited", "send_per_user")

    async def scenario() -> tuple[list[dict[str, Any]], Any]:
        clients = [await ChatClient.connect(server.address, token) for _ in range(connections)]
        try:
            for c, client in enumerate(clients):
                for n in range(each):
                    await client.send_json({"type": "send", "room": room, "id": f"s{c}-{n}", "body": "spam"})
            answers = []
            for client in clients:
                answers += [await client.recv_until(lambda f: f["type"] in ("ack", "error")) for _ in range(each)]
            by_http = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                                 json_body={"id": "h0", "body": "spam"})
            for client in clients:
                await client.ping()  # refused, not cut off
            return answers, by_http
        finally:
            for client in clients:
                await client.close()

    answers, by_http = run_async(scenario())
    acks = [a for a in answers if a["type"] == "ack"]
    refusals = [a for a in answers if a["type"] == "error"]
    assert (len(acks), len(refusals)) == (SEND_BURST, connections * each - SEND_BURST)
    for refusal in refusals:
        assert (refusal["code"], refusal["limit"]) == ("rate_limited", "send_per_user"), refusal
        assert refusal["id"].startswith("s") and refusal["retry_after"] > 0, refusal
    assert by_http.status == 429, by_http
    assert (by_http.json()["code"], by_http.json()["limit"]) == ("rate_limited", "send_per_user")
    assert int(by_http.headers["retry-after"]) >= by_http.json()["retry_after"] > 0
    assert sorted(m["id"] for m in server.history(room, token)) == sorted(a["id"] for a in acks)
    assert rejected(server, "rate_limited", "send_per_user") - refused_before == len(refusals) + 1
    pair.assert_still_chatting("one nick's send flood")


async def _raw_request(address: tuple[str, int], head: str) -> tuple[int, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
    try:
        writer.write(head.encode("latin-1"))
        status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), TIMEOUT)
        return status, json.loads(body) if body else None
    finally:
        await close_writer(writer)


def test_a_foreign_host_is_refused(server: SquallProcess, pair: HealthyPair) -> None:
    """A DNS-rebinding page: its name now points at us, and its Origin matches its Host."""
    host = f"evil.example:{server.port}"
    token = pair.token("kofi")
    upgrade = upgrade_request(server.address, token).decode().replace(
        f"Host: 127.0.0.1:{server.port}", f"Host: {host}\r\nOrigin: http://{host}"
    )
    heads = {
        "page": f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n",
        "session": f"POST /api/session HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   'Content-Length: 16\r\n\r\n{"nick":"rebnd"}',
        "poll": f"GET /api/rooms/{HealthyPair.ROOM}/messages?since=0&wait=0 HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n",
        "upgrade": upgrade,
    }
    refused_before = rejected(server, "bad_host", "allowed_hosts")

    async def scenario() -> dict[str, tuple[int, Any]]:
        return {name: await _raw_request(server.address, head) for name, head in heads.items()}

    for name, (status, body) in run_async(scenario()).items():
        assert (status, body["code"]) == (421, "bad_host") and "evil.example" in body["reason"], (name, status, body)
    assert rejected(server, "bad_host", "allowed_hosts") - refused_before == len(heads)
    pair.assert_still_chatting("requests for a foreign host")
