"""The processor link authenticates its peer before acting on anything (issue 10, defect 5).

A real ``squall processor`` on 127.0.0.1, attacked over raw sockets: an HTTP
request whose body holds protocol lines (what a same-host SSRF sends), a
``process`` or ``ping`` before the hello, a hello with a wrong proof, a silent
connection. Each is answered with one error line and closed, nothing it carried
is stored, and a flood of them is logged once. Whether anything was stored is
read back through an authenticated connection: the room's next seq is 1 only if
nothing reached the store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squall.handshake import HELLO_TIMEOUT_SECONDS, new_nonce, web_hello
from support import TIMEOUT, LineClient, SquallProcess, free_port, http, run_async, squall_server

_ids = itertools.count(1)
REFUSAL_LINE = "refused a processor-link connection"


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("link-auth"), "processor") as instance:
        yield instance


def process(room: str, *, nick: str = "mallory", ref: Any = 1) -> dict[str, Any]:
    return {"op": "process", "ref": ref, "room": room, "nick": nick, "id": f"i{next(_ids)}",
            "body": "injected", "ts": 1_700_000_000_000}


async def next_seq(processor: SquallProcess, room: str) -> int:
    """Store one message in ``room`` over an authenticated link; its seq."""
    client = await LineClient.connect(processor.processor_port)
    try:
        await client.authenticate(processor.link_key())
        client.send({**process(room, nick="probe"), "ref": "probe"})
        answer = await client.recv()
        assert answer["op"] == "processed", answer
        return int(answer["message"]["seq"])
    finally:
        await client.close()


async def refused(processor: SquallProcess, data: bytes, *, code: str) -> None:
    """Send ``data`` on a fresh connection: one error line with ``code``, then the close."""
    client = await LineClient.connect(processor.processor_port)
    try:
        hello = await client.recv()
        assert hello["op"] == "hello" and hello["role"] == "processor" and len(hello["nonce"]) == 32
        client.send_raw(data)
        answer = await client.recv()
        assert answer["op"] == "error" and answer["code"] == code, answer
        assert answer["reason"]
        assert await client.read_to_eof() == b""
    finally:
        await client.close()


def test_http_request_with_protocol_lines_in_its_body_is_refused(processor: SquallProcess) -> None:
    lines = (
        json.dumps(process("ssrf")) + "\n"
        + json.dumps({"op": "seen", "nick": "alice", "room": "ssrf", "seq": 99}) + "\n"
    ).encode()
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        b"Content-Length: " + str(len(lines)).encode() + b"\r\n\r\n" + lines
    )

    async def scenario() -> None:
        await refused(processor, request, code="hello_expected")
        assert await next_seq(processor, "ssrf") == 1  # the injected message was not stored

    run_async(scenario())


@pytest.mark.parametrize("first", [process("early"), {"op": "ping"}, {"op": "seen", "nick": "a", "room": "early", "seq": 1}])
def test_anything_before_hello_is_refused_and_closed(processor: SquallProcess, first: dict[str, Any]) -> None:
    room = f"early{next(_ids)}"

    async def scenario() -> None:
        line = {**first, "room": room} if "room" in first else first
        await refused(processor, json.dumps(line).encode() + b"\n", code="hello_expected")
        assert await next_seq(processor, room) == 1

    run_async(scenario())


def test_hello_with_a_wrong_proof_is_refused(processor: SquallProcess) -> None:
    room = "forged"

    async def scenario() -> None:
        client = await LineClient.connect(processor.processor_port)
        try:
            wrong_key = b"\x00" * 32
            hello, _ = web_hello(await client.recv(), key=wrong_key, our_nonce=new_nonce())
            client.send(hello, process(room))  # the request rides in the same segment
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == "bad_proof", answer
            assert await client.read_to_eof() == b""
        finally:
            await client.close()
        assert await next_seq(processor, room) == 1

    run_async(scenario())


@pytest.mark.parametrize(("change", "code"), [
    ({"version": 1}, "bad_version"),
    ({"role": "processor"}, "bad_hello"),
    ({"nonce": "short"}, "bad_hello"),
    ({"proof": None}, "bad_proof"),
    ({"proof": "00" * 32}, "bad_proof"),
])
def test_malformed_hello_is_refused(processor: SquallProcess, change: dict[str, Any], code: str) -> None:
    async def scenario() -> None:
        client = await LineClient.connect(processor.processor_port)
        try:
            hello, _ = web_hello(await client.recv(), key=processor.link_key(), our_nonce=new_nonce())
            client.send({**hello, **change})
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == code, answer
            assert await client.read_to_eof() == b""
        finally:
            await client.close()

    run_async(scenario())


def test_a_proof_cannot_be_replayed_on_another_connection(processor: SquallProcess) -> None:
    async def scenario() -> None:
        first = await LineClient.connect(processor.processor_port)
        try:
            hello, _ = web_hello(await first.recv(), key=processor.link_key(), our_nonce=new_nonce())
        finally:
            await first.close()
        second = await LineClient.connect(processor.processor_port)
        try:
            await second.recv()  # a new nonce: the old proof answers the wrong challenge
            second.send(hello)
            answer = await second.recv()
            assert answer["op"] == "error" and answer["code"] == "bad_proof", answer
        finally:
            await second.close()

    run_async(scenario())


def test_valid_handshake_is_welcomed_with_the_processors_proof(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await LineClient.connect(processor.processor_port)
        try:
            welcome = await client.authenticate(processor.link_key())  # checks the proof
            assert welcome["op"] == "welcome"
            client.send(process("welcomed", nick="alice"))
            answer = await client.recv()
            assert answer["op"] == "processed" and answer["message"]["seq"] == 1, answer
        finally:
            await client.close()

    run_async(scenario())


def test_silent_connection_is_closed_after_the_hello_timeout(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await LineClient.connect(processor.processor_port)
        try:
            await client.recv()  # its hello; we say nothing
            answer = await client.recv(timeout=HELLO_TIMEOUT_SECONDS + TIMEOUT)
            assert answer["op"] == "error" and answer["code"] == "hello_timeout", answer
            assert await client.read_to_eof() == b""
        finally:
            await client.close()

    run_async(scenario())


def test_a_flood_of_refused_connections_is_logged_once(processor: SquallProcess) -> None:
    before = processor.count_lines(REFUSAL_LINE)

    async def scenario() -> None:
        for _ in range(50):
            await refused(processor, b"GET / HTTP/1.1\r\n\r\n", code="hello_expected")

    run_async(scenario())
    # At most one line per REFUSAL_LOG_SECONDS (60 s), however many connections.
    assert processor.count_lines(REFUSAL_LINE) - before <= 1, processor.output()
    assert processor.count_lines(REFUSAL_LINE) >= 1, processor.output()


class FakeProcessor:
    """A listener that greets like a processor but cannot prove the key.

    It records every line a web node sends after its ``hello``: a web node that
    checks the ``welcome`` sends none.
    """

    def __init__(self) -> None:
        self.hellos: list[dict[str, Any]] = []
        self.after_hello: list[bytes] = []
        self.greeted = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps({"op": "hello", "role": "processor", "version": 2,
                                 "nonce": new_nonce()}).encode() + b"\n")
        try:
            self.hellos.append(json.loads(await reader.readline()))
            writer.write(json.dumps({"op": "welcome", "proof": "0" * 64}).encode() + b"\n")
            self.greeted.set()
            while line := await reader.readline():
                self.after_hello.append(line)
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()


def test_web_node_sends_nothing_to_a_processor_that_cannot_prove_the_key(tmp_path: Path) -> None:
    """Mutual: a foreign processor (another instance's, or an impostor) never sees a send."""
    port = free_port()
    web = SquallProcess(tmp_path, "web", processor_port=port, env={"SQUALL_SEND_TIMEOUT": "1"})

    async def scenario() -> None:
        fake = FakeProcessor()
        server = await asyncio.start_server(fake.handle, "127.0.0.1", port)
        try:
            await asyncio.to_thread(web.start, connected=False)
            await asyncio.wait_for(fake.greeted.wait(), TIMEOUT)
            token = await asyncio.to_thread(web.session, "alice")
            response = await http(web.address, "POST", "/api/rooms/lobby/messages", token=token,
                                  json_body={"id": "m1", "body": "for my own processor only"})
            assert response.status == 503 and response.json()["code"] == "unavailable", response
            assert fake.hellos and all(hello.get("proof") for hello in fake.hellos)
            assert fake.after_hello == []
        finally:
            server.close()

    try:
        run_async(scenario())
        status, health = web.api("GET", "/api/health")
        assert health["processor"] != "connected", health
        assert web.count_lines("not authenticated") == 1, web.output()
    finally:
        web.stop()
