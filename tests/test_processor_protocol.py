"""The processor's line protocol, spoken on a raw socket to ``squall processor``.

One JSON object per line each way. The processor greets first with a nonce; a
web node must answer with its own hello carrying a proof of the link key
(docs/protocol.md §6) before anything else is acted on, and the processor
proves itself in its ``welcome``. Requests are pipelined and answered by
``ref`` in whatever order they finish. A bad line from an authenticated peer is
answered with an error and the connection stays usable, except a line over
``max_line_bytes`` (64 KiB), after which the processor closes the connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from support import LineClient, SquallProcess, run_async, squall_server

_counter = itertools.count(1)


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("processor"), "processor") as instance:
        yield instance


def process(room: str, ref: Any, *, nick: str = "alice", cid: str | None = None, body: str = "hello") -> dict[str, Any]:
    return {
        "op": "process", "ref": ref, "room": room, "nick": nick,
        "id": cid or f"c{next(_counter)}", "body": body, "ts": 1_700_000_000_000,
    }


async def greeted(processor: SquallProcess) -> LineClient:
    """A connection past the authenticated hello exchange."""
    client = await LineClient.connect(processor.processor_port)
    await client.authenticate(processor.link_key())
    return client


async def still_usable(client: LineClient) -> None:
    client.send({"op": "ping"})
    assert await client.recv() == {"op": "pong"}


def test_hello_exchange_then_ping(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            await still_usable(client)
        finally:
            await client.close()

    run_async(scenario())


def test_pipelined_requests_are_all_answered_by_ref(processor: SquallProcess) -> None:
    count = 300

    async def scenario() -> None:
        client = await greeted(processor)
        try:
            refs = [f"r{i}" for i in range(count)]
            client.send(*(process("pipelined", ref) for ref in refs))  # one write
            answers = [await client.recv() for _ in refs]
            assert {a["op"] for a in answers} == {"processed"}
            assert sorted(a["ref"] for a in answers) == sorted(refs)
            seqs = sorted(a["message"]["seq"] for a in answers)
            assert seqs == list(range(1, count + 1))
            for answer in answers:
                assert answer["message"]["room"] == "pipelined" and "duplicate" not in answer
            await still_usable(client)  # nothing more was queued behind the answers
        finally:
            await client.close()

    run_async(scenario())


def test_processed_message_is_rendered(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(process("rendered", 1, body="  see https://example.org/a <b>  "))
            answer = await client.recv()
            message = answer["message"]
            assert message["body"] == "see https://example.org/a <b>"  # trimmed
            assert message["links"] == ["https://example.org/a"]
            assert "<b>" not in message["html"] and "&lt;b&gt;" in message["html"]
        finally:
            await client.close()

    run_async(scenario())


@pytest.mark.parametrize("line", [
    b"not json\n",
    b"{\n",
    b'{"op": "ping"\n',
    b"\xff\xfe\n",
    b"[1, 2]\n",
    b'"ping"\n',
])
def test_malformed_line_is_answered_and_the_connection_stays(processor: SquallProcess, line: bytes) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send_raw(line)
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == "bad_json", answer
            assert answer["reason"]
            await still_usable(client)
        finally:
            await client.close()

    run_async(scenario())


def test_blank_lines_are_ignored(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send_raw(b"\n\n   \n\r\n")
            await still_usable(client)  # the pong is the very next line
        finally:
            await client.close()

    run_async(scenario())


@pytest.mark.parametrize(("request_line", "ref"), [
    ({"op": "dance", "ref": 7}, 7),
    ({"op": "dance"}, None),
    ({"op": None}, None),
    ({"no_op": True}, None),
    ({"op": ["process"], "ref": "x"}, "x"),
])
def test_unknown_op(processor: SquallProcess, request_line: dict[str, Any], ref: Any) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(request_line)
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == "unknown_op", answer
            assert answer.get("ref") == ref
            await still_usable(client)
        finally:
            await client.close()

    run_async(scenario())


def _without(field: str) -> dict[str, Any]:
    request = process("fields", 5)
    del request[field]
    return request


@pytest.mark.parametrize(("request_line", "ref"), [
    (_without("room"), 5),
    (_without("nick"), 5),
    (_without("id"), 5),
    (_without("body"), 5),
    (_without("ts"), 5),
    (_without("ref"), None),
    ({**process("fields", 6), "body": 3}, 6),
    ({**process("fields", 6), "body": None}, 6),
    ({**process("fields", 6), "ts": "now"}, 6),
    ({**process("fields", 6), "ts": True}, 6),
    ({**process("fields", 6), "ts": 1.5}, 6),
    ({**process("fields", 6), "nick": ["alice"]}, 6),
])
def test_process_with_bad_fields(processor: SquallProcess, request_line: dict[str, Any], ref: Any) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(request_line)
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == "bad_field", answer
            assert answer.get("ref") == ref
            await still_usable(client)
        finally:
            await client.close()

    run_async(scenario())


@pytest.mark.parametrize(("body", "code"), [
    ("", "empty_body"),
    (" \n\t ", "empty_body"),
    ("x" * 4001, "body_too_long"),
    ("bell\x07", "bad_body"),
    ("nul\x00", "bad_body"),
    ("\x1b[31mred", "bad_body"),
])
def test_rejected(processor: SquallProcess, body: str, code: str) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(process("rejects", 9, body=body))
            answer = await client.recv()
            assert answer["op"] == "rejected" and answer["code"] == code and answer["ref"] == 9, answer
            assert answer["reason"]
            await still_usable(client)
        finally:
            await client.close()

    run_async(scenario())


def test_longest_body_and_allowed_controls_are_accepted(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(process("limits", 1, body="x" * 4000), process("limits", 2, body="a\tb\nc"))
            answers = {a["ref"]: a for a in [await client.recv(), await client.recv()]}
            assert answers[1]["op"] == answers[2]["op"] == "processed", answers
            assert answers[2]["message"]["body"] == "a\tb\nc"
        finally:
            await client.close()

    run_async(scenario())


def test_oversized_line_is_refused_and_the_connection_closed(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send_raw(b'{"op":"ping","pad":"' + b"x" * (70 * 1024) + b'"}\n')
            answer = await client.recv()
            assert answer["op"] == "error" and answer["code"] == "line_too_long", answer
            assert await client.read_to_eof() == b""
        finally:
            await client.close()
        fresh = await greeted(processor)
        try:
            await still_usable(fresh)  # the processor itself is fine
        finally:
            await fresh.close()

    run_async(scenario())


def test_oversized_line_without_newline_is_refused_too(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send_raw(b"x" * (80 * 1024))  # never ends: must not be buffered forever
            answer = await client.recv()
            assert answer["code"] == "line_too_long", answer
            assert await client.read_to_eof() == b""
        finally:
            await client.close()

    run_async(scenario())


def test_duplicate_is_answered_with_the_original_seq(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(process("dupes", 1, cid="same", body="first"))
            first = await client.recv()
            client.send(process("dupes", 2, cid="same", body="second"))
            second = await client.recv()
            client.send(process("dupes", 3, nick="ALICE", cid="same", body="third"))
            third = await client.recv()
            client.send(process("dupes", 4, nick="bob", cid="same"))
            other = await client.recv()
            assert first["message"]["seq"] == second["message"]["seq"] == third["message"]["seq"] == 1
            assert "duplicate" not in first
            assert second["duplicate"] is True and third["duplicate"] is True
            assert second["message"]["body"] == "first"  # the stored original
            assert other["message"]["seq"] == 2 and "duplicate" not in other
        finally:
            await client.close()

    run_async(scenario())


def test_duplicates_in_one_batch_get_one_seq(processor: SquallProcess) -> None:
    async def scenario() -> None:
        client = await greeted(processor)
        try:
            client.send(*(process("batch-dupes", ref, cid="one") for ref in range(20)))
            answers = [await client.recv() for _ in range(20)]
            assert {a["message"]["seq"] for a in answers} == {1}
            assert sum("duplicate" not in a for a in answers) == 1
        finally:
            await client.close()

    run_async(scenario())


def test_duplicate_across_connections(processor: SquallProcess) -> None:
    async def scenario() -> None:
        one, two = await greeted(processor), await greeted(processor)
        try:
            one.send(process("cross", "a", cid="x"))
            two.send(process("cross", "b", cid="x"))
            first, second = await one.recv(), await two.recv()
            assert first["message"]["seq"] == second["message"]["seq"] == 1
            assert ("duplicate" in first) != ("duplicate" in second)
        finally:
            await one.close()
            await two.close()

    run_async(scenario())
