"""The keyword filter end to end: ``squall run`` with a filter file, WebSocket clients.

A masked word reaches every client as ``*`` in ``body`` and never appears in
``html``; a rejected message answers its sender with ``filtered`` and is seen
by nobody. SIGHUP makes the processor re-read the file: a good new list is in
force for the next message, a bad one is refused and the old list stays.
The processor's log lines ("filter list loaded", "keeping previous filter
list") are the events the test waits on after sending the signal.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_support import Inbox, connect
from support import SquallProcess, run_async, squall_server

FIRST_LIST = "# test list\ndarn mask\nfrack reject\n"
LOADED = "filter list loaded:"
KEPT = "keeping previous filter list:"


@pytest.fixture
def filter_file(tmp_path: Path) -> Path:
    path = tmp_path / "filter.txt"
    path.write_text(FIRST_LIST, encoding="utf-8")
    return path


@pytest.fixture
def server(tmp_path: Path, filter_file: Path) -> Iterator[SquallProcess]:
    env = {"SQUALL_FILTER_FILE": str(filter_file), "SQUALL_LOG_LEVEL": "info"}
    with squall_server(tmp_path / "data", env=env) as instance:
        yield instance


def _sighup(server: SquallProcess) -> None:
    server.processor_child().send_signal(signal.SIGHUP)


def test_masked_word_reaches_everyone_masked_and_rejected_message_nobody(
    server: SquallProcess, room: str
) -> None:
    alice, bob = server.session("alice"), server.session("bob")

    async def scenario() -> None:
        sender = await connect(server, alice, room)
        reader = await connect(server, bob, room)
        try:
            ack = await sender.send(room, "well darn it, DARN", "m1")
            assert ack["type"] == "ack" and ack["seq"] == 1, ack
            for inbox in (sender, reader):
                message = await inbox.message("m1")
                assert message["body"] == "well **** it, ****", message
                assert "darn" not in message["html"].lower(), message
                assert "well **** it, ****" in message["html"], message

            refused = await sender.send(room, "what the frack", "m2")
            assert refused["type"] == "error" and refused["code"] == "filtered", refused
            assert "frack" not in refused["reason"], refused  # the reason never echoes the word

            # Barrier: the next message goes through with the very next seq,
            # so "m2" was never stored, and by now each client would have it.
            ack = await sender.send(room, "after", "m3")
            assert ack["type"] == "ack" and ack["seq"] == 2, ack
            for inbox in (sender, reader):
                assert (await inbox.message("m3"))["seq"] == 2
                _assert_never_saw(inbox, "frack")
        finally:
            await sender.close()
            await reader.close()

    run_async(scenario())
    history = server.history(room, alice)
    assert [(m["id"], m["body"]) for m in history] == [("m1", "well **** it, ****"), ("m3", "after")]


def test_sighup_reloads_the_list_and_a_bad_file_keeps_the_old_one(
    server: SquallProcess, room: str, filter_file: Path
) -> None:
    alice = server.session("alice")

    async def scenario() -> None:
        sender = await connect(server, alice, room)
        try:
            ack = await sender.send(room, "oh heck", "m1")
            assert (await sender.message("m1"))["body"] == "oh heck", ack  # not listed yet

            filter_file.write_text(FIRST_LIST + "heck mask\n", encoding="utf-8")
            _sighup(server)
            await asyncio.to_thread(server.wait_for_line, LOADED)
            await sender.send(room, "oh heck, darn", "m2")
            message = await sender.message("m2")
            assert message["body"] == "oh ****, ****", message
            assert "heck" not in message["html"], message

            # A bad file: a new term, and a line with an unknown action.
            filter_file.write_text(FIRST_LIST + "heck mask\ngadzooks mask\nfoo bar baz\n", encoding="utf-8")
            _sighup(server)
            error_line = await asyncio.to_thread(server.wait_for_line, KEPT)
            assert f"{filter_file}:6:" in error_line, error_line
            await sender.send(room, "heck and gadzooks", "m3")
            assert (await sender.message("m3"))["body"] == "**** and gadzooks"
            refused = await sender.send(room, "frack", "m4")
            assert refused["type"] == "error" and refused["code"] == "filtered", refused
        finally:
            await sender.close()

    run_async(scenario())
    # One successful reload: the bad file was never taken in.
    assert server.count_lines(LOADED) == 1, server.output()


def _assert_never_saw(inbox: Inbox, word: str) -> None:
    for frame in inbox.frames:
        assert word not in str(frame).lower(), frame
