"""Connections that hold a file descriptor for nothing are closed, and a node
out of file descriptors backs off quietly instead of spinning.

* Header timeout (``header_timeout``): a connection that says nothing, or
  sends a request head slowly (slowloris), is closed — on Tornado's
  connections and on the node's own long-poll connections.
* Idle timeout (``idle_timeout``): a kept-alive connection waiting for its next
  request is closed after it; a parked long-poll is not idle.
* File descriptors: a node started with a hard limit of 64 open files is
  filled with idle connections until ``accept()`` fails with EMFILE. It logs
  that once, not thousands of times, stays nearly idle on the CPU, and once the
  idle connections are gone a healthy client connects and chats.

Every wait is on the event (the server's close, a log line), never a sleep;
the timeouts under test are small so that the events come quickly.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import psutil

from support import TIMEOUT, ChatClient, SquallProcess, close_writer, read_head, run_async, squall_server

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 4.0
# The node sweeps its own long-poll connections once a second.
SWEEP = 1.0
SQUALL_ENV = {"SQUALL_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "SQUALL_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}


async def _closed_after(reader: asyncio.StreamReader, since: float) -> float:
    """Seconds from ``since`` until the server closes the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), TIMEOUT):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {TIMEOUT} s") from None
    return time.monotonic() - since


async def _poll_once(server: SquallProcess, token: str, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A kept-alive connection that has made one poll: the node now serves it itself."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(
        f"GET /api/rooms/{room}/messages?since=0&wait=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
    await reader.readexactly(int(headers["content-length"]))
    assert status == 200
    return reader, writer


def test_a_silent_connection_is_closed_after_the_header_timeout(server: SquallProcess) -> None:
    async def scenario() -> None:
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            elapsed = await _closed_after(reader, opened)
            assert HEADER_TIMEOUT <= elapsed < IDLE_TIMEOUT, elapsed
        finally:
            await close_writer(writer)

    run_async(scenario())


def test_a_slowly_sent_head_is_closed_after_the_header_timeout(server: SquallProcess) -> None:
    """Slowloris on a fresh connection (Tornado's): part of a head, then nothing."""
    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sent = time.monotonic()
            elapsed = await _closed_after(reader, sent)
            assert elapsed < IDLE_TIMEOUT, elapsed
        finally:
            await close_writer(writer)

    run_async(scenario())


def test_a_slow_head_after_a_request_is_closed_after_the_header_timeout(server: SquallProcess) -> None:
    """Slowloris on a kept-alive Tornado connection: a request, then part of the next head."""
    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
            await reader.readexactly(int(headers["content-length"]))
            writer.write(b"GET /api/health HTTP/1.1\r\nHo")
            sent = time.monotonic()
            elapsed = await _closed_after(reader, sent)
            # First seen by one sweep, closed by a later one: well before the idle timeout.
            assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + 2 * SWEEP + 0.5 < IDLE_TIMEOUT, elapsed
        finally:
            await close_writer(writer)

    run_async(scenario())


def test_a_slow_head_after_a_poll_is_closed_after_the_header_timeout(server: SquallProcess, room: str) -> None:
    """Slowloris on a long-poll connection the node serves itself."""
    token = server.session("slow-poller")

    async def scenario() -> None:
        reader, writer = await _poll_once(server, token, room)
        try:
            writer.write(b"GET /api/rooms/x/messages?since=0 HTTP/1.1\r\nHo")
            sent = time.monotonic()
            elapsed = await _closed_after(reader, sent)
            assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + SWEEP + 0.5 < IDLE_TIMEOUT, elapsed
        finally:
            await close_writer(writer)

    run_async(scenario())


def test_kept_alive_connections_are_closed_after_the_idle_timeout(server: SquallProcess, room: str) -> None:
    """Between requests a connection may wait ``idle_timeout``, longer than a head may take."""
    token = server.session("idler")

    async def scenario() -> None:
        # The node's idle clock starts when it has written its answer: after
        # we asked, and before we have read it (by as long as this loaded
        # machine takes to schedule us). So the close comes at least
        # IDLE_TIMEOUT after asking, and soon after IDLE_TIMEOUT after reading.
        # A long-poll connection, served by the node.
        asked = time.monotonic()
        reader, writer = await _poll_once(server, token, room)
        answered = time.monotonic()
        try:
            elapsed = await _closed_after(reader, answered)
            assert IDLE_TIMEOUT <= elapsed + (answered - asked), (elapsed, answered - asked)
            assert elapsed < IDLE_TIMEOUT + SWEEP + 0.5, elapsed
        finally:
            await close_writer(writer)
        # A connection Tornado serves (no poll on it).
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            asked = time.monotonic()
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
            await reader.readexactly(int(headers["content-length"]))
            answered = time.monotonic()
            elapsed = await _closed_after(reader, answered)
            assert IDLE_TIMEOUT <= elapsed + (answered - asked), (elapsed, answered - asked)
            assert elapsed < IDLE_TIMEOUT + 1.0, elapsed
        finally:
            await close_writer(writer)

    run_async(scenario())


def test_a_parked_poll_is_not_idle(server: SquallProcess, room: str) -> None:
    """A poll waiting longer than ``idle_timeout`` is answered, not cut off."""
    token = server.session("patient")
    wait = IDLE_TIMEOUT + SWEEP + 0.5

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(
                f"GET /api/rooms/{room}/messages?since=0&wait={wait} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
            body = await reader.readexactly(int(headers["content-length"]))
            assert status == 200 and body == b'{"messages":[],"seq":0}', (status, body)
        finally:
            await close_writer(writer)

    run_async(scenario())


# -- running out of file descriptors --------------------------------------------------

FD_LIMIT = 64


def _limit_open_files() -> None:
    # Soft and hard, so that raising the soft limit at start-up cannot help.
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_a_node_out_of_file_descriptors_backs_off_and_recovers(tmp_path: Path) -> None:
    env = {"SQUALL_HEADER_TIMEOUT": "2", "SQUALL_IDLE_TIMEOUT": "5"}
    with squall_server(tmp_path, env=env, preexec_fn=_limit_open_files) as server:
        token = server.session("healthy")
        web_node = psutil.Process(server.process.pid if server.process else 0)

        async def scenario() -> None:
            idle = [await asyncio.open_connection(*server.address) for _ in range(2 * FD_LIMIT)]
            try:
                await asyncio.to_thread(server.wait_for_line, "Too many open files")
                cpu_before, started = web_node.cpu_times(), time.monotonic()
                # Out of descriptors until the header timeout closes the idle
                # connections it accepted: the window measured.
                first_closed = [asyncio.ensure_future(_closed_after(r, started)) for r, _w in idle]
                done, _pending = await asyncio.wait(first_closed, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                cpu_after, elapsed = web_node.cpu_times(), time.monotonic() - started
                for future in first_closed:
                    future.cancel()
                await asyncio.gather(*first_closed, return_exceptions=True)

                reports = server.count_lines("Too many open files")
                assert reports <= 2, f"{reports} lines about running out of descriptors\n{server.output()}"
                assert "Traceback" not in server.output(), server.output()
                busy = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
                assert busy < 0.25, f"the node used {busy:.0%} of a CPU while out of descriptors"
                assert done, "the header timeout did not close the idle connections"
            finally:
                for _reader, writer in idle:
                    writer.close()
            # The descriptors come back: a healthy client connects and chats.
            client = await ChatClient.connect(server.address, token)
            try:
                assert (await client.join("lobby"))["type"] == "joined"
                await client.send_json({"type": "send", "room": "lobby", "id": "after", "body": "still here"})
                assert (await client.recv_type("message"))["body"] == "still here"
            finally:
                await client.close()

        run_async(scenario())


def test_the_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = 256, 512

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with squall_server(tmp_path, env={"SQUALL_LOG_LEVEL": "info"}, preexec_fn=limit) as server:
        assert server.process is not None
        for process in (psutil.Process(server.process.pid), server.processor_child()):
            assert process.rlimit(psutil.RLIMIT_NOFILE) == (hard, hard), process
        assert server.count_lines(f"open files limit raised from {soft} to {hard}") >= 1, server.output()
