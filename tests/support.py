"""Shared test helpers: Squall as real subprocesses, and lean clients for it.

Nothing here sleeps to wait. A server is ready when it has printed its
"running" line (read by a thread from its piped stdout) and ``/api/health``
reports the processor connected; clients wait on frames, lines and events
under a deadline of :data:`TIMEOUT` seconds, which ``SQUALL_TEST_SLOWDOWN``
scales for slow machines.

* :class:`SquallProcess` — ``squall run``, ``squall web`` or ``squall processor``
  on free ports with a temporary data folder; always killed on teardown.
* :func:`http` — one HTTP/1.1 request over a fresh asyncio connection.
* :class:`EventStream` — an SSE response read event by event.
* :class:`ChatClient` — a WebSocket chat connection (``websockets`` asyncio client).
* :class:`LineClient` — the processor's newline-delimited JSON protocol on a raw socket.
* :class:`RedisServer` — a ``redis-server`` of the test's own on a free port, for
  tests that stop and restart it (never the machine's shared one on 6379).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from http.client import HTTPConnection
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect

from squall.store import Store, open_store

__all__ = [
    "TIMEOUT", "PROCESSOR_LINE", "free_port", "SquallProcess", "squall_server", "run_async",
    "HTTPResponse", "http", "EventStream", "SSEEvent", "ChatClient", "LineClient",
    "upgrade_request", "client_frame", "RawFrames", "REDIS_URL", "REDIS_SKIP", "redis_reachable",
    "RedisServer", "squall_cluster",
]

# Every wait in the tests is bounded by this many seconds; a wait only takes
# this long when the test is failing anyway.
TIMEOUT = 15.0 * float(os.environ.get("SQUALL_TEST_SLOWDOWN", "1"))
STOP_TIMEOUT = 10.0

# Every test client connects from 127.0.0.1, as users behind one NAT would: the
# per-address limits are loosened unless a test sets them itself.
LOOSE_ADDRESS_LIMITS = {
    "SQUALL_SEND_RATE_PER_IP": "1000000", "SQUALL_SEND_BURST_PER_IP": "1000000",
    "SQUALL_SESSION_RATE_PER_IP": "1000000", "SQUALL_SESSION_BURST_PER_IP": "1000000",
    "SQUALL_MAX_CONNECTIONS_PER_IP": "100000", "SQUALL_MAX_HTTP_CONNECTIONS_PER_IP": "100000",
}

READY_LINE = re.compile(r"Squall is running at http://([\d.]+):(\d+)/")
PROCESSOR_LINE = "squall processor listening on"


def free_port() -> int:
    """A port nothing listens on right now (the OS picked it for a socket we closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_async(coroutine: Any, timeout: float = 4 * TIMEOUT) -> Any:
    """Run ``coroutine`` in a fresh event loop, failing it after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# -- processes -----------------------------------------------------------------


class SquallProcess:
    """One ``squall`` command as a subprocess, its output collected line by line.

    ``command`` is ``run`` (processor child plus web node), ``web`` or
    ``processor``. Settings go in as ``SQUALL_*`` variables through ``env``.
    Call :meth:`start`, then :meth:`stop` in a ``finally`` (or use
    :func:`squall_server`).
    """

    def __init__(
        self,
        data_dir: Path,
        command: str = "run",
        *,
        processor_port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.python = python  # the interpreter whose installed squall runs
        self.command = command
        # `squall run` and `squall cluster` pick private ports for their processors.
        self.processor_port = processor_port or (0 if command in ("run", "cluster") else free_port())
        self.env = dict(env or {})
        self.args = args
        self.preexec_fn = preexec_fn  # run in the child before exec, e.g. to set resource limits
        self.port = 0  # known once the web node has said where it listens
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------

    def start(self, *, connected: bool = True) -> None:
        """Spawn the command and return once it serves (see :meth:`wait_ready`).

        ``connected=False`` does not wait for a web node's processor link.
        """
        argv = [self.python, "-m", "squall", self.command, "--data-dir", str(self.data_dir)]
        if self.command == "processor":
            argv += ["--listen", f"127.0.0.1:{self.processor_port}"]
        elif self.command == "web":
            argv += ["--port", "0", "--processor", f"127.0.0.1:{self.processor_port}"]
        elif self.command == "cluster":
            pass  # `args` give --web, --processors and --port; self.port is the first node's
        else:
            argv += ["--port", "0"]
            if self.processor_port:
                argv += ["--processor-port", str(self.processor_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
        env.update({"PYTHONUNBUFFERED": "1", "SQUALL_LOG_LEVEL": "warning", **LOOSE_ADDRESS_LIMITS, **self.env})
        self.process = subprocess.Popen(
            [*argv, *self.args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, text=True, errors="replace", preexec_fn=self.preexec_fn,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        try:
            self.wait_ready(connected=connected)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = TIMEOUT, *, connected: bool = True) -> None:
        if self.command == "processor":
            self.wait_for_line(PROCESSOR_LINE, timeout=timeout)
            return
        match = READY_LINE.search(self.wait_for_line(READY_LINE.pattern, timeout=timeout, regex=True))
        assert match is not None
        self.port = int(match.group(2))
        if connected:
            self.wait_connected(timeout=timeout)

    def wait_connected(self, timeout: float = TIMEOUT) -> None:
        """Poll ``/api/health`` until the web node has its processor link."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            self._check_alive()
            try:
                status, body = self.api("GET", "/api/health")
                if status == 200 and body.get("processor") == "connected":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"processor not connected after {timeout} s\n{self.output()}")
            time.sleep(pause)  # between polls of an event we cannot subscribe to
            pause = min(pause * 2, 0.1)

    def wait_health(self, accept: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Poll ``/api/health`` until ``accept`` approves of its body; returns it."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            self._check_alive()
            status, body = self.api("GET", "/api/health")
            if status == 200 and accept(body):
                return dict(body)
            if time.monotonic() > deadline:
                raise AssertionError(f"/api/health never approved after {timeout} s: {body}\n{self.output()}")
            time.sleep(pause)  # between polls of an event we cannot subscribe to
            pause = min(pause * 2, 0.1)

    def stop(self) -> None:
        """SIGTERM the command (and any child it left), SIGKILL after a timeout."""
        process = self.process
        if process is None:
            return
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(children, timeout=STOP_TIMEOUT)
            if self._reader is not None:
                self._reader.join(STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()

    def link_key(self) -> bytes:
        """The processor-link key of this instance (its ``secret``, else its data folder's)."""
        from squall.handshake import link_key

        secret = self.env.get("SQUALL_SECRET") or (self.data_dir / "secret").read_text().strip()
        return link_key(secret)

    # -- the processor child of `squall run` ----------------------------------

    def processor_child(self) -> psutil.Process:
        assert self.process is not None and self.command == "run"
        children = psutil.Process(self.process.pid).children()
        assert len(children) == 1, f"expected one processor child, found {children}"
        return children[0]

    def kill_processor(self) -> int:
        """SIGKILL the processor child; returns how many processors had started before."""
        started = self.count_lines(PROCESSOR_LINE)
        child = self.processor_child()
        child.kill()
        child.wait(STOP_TIMEOUT)
        return started

    # -- output ---------------------------------------------------------------

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def count_lines(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for_line(
        self, pattern: str, *, count: int = 1, timeout: float = TIMEOUT, regex: bool = False
    ) -> str:
        """The ``count``-th output line containing ``pattern``, once it has been printed."""
        matches: Callable[[str], bool] = (
            (lambda line: re.search(pattern, line) is not None) if regex else (lambda line: pattern in line)
        )
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if matches(line)]
                if len(found) >= count:
                    return found[count - 1]
                if self.process is not None and self.process.poll() is not None and not (
                    self._reader and self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"squall {self.command} exited with {self.process.returncode}"
                        f" before printing {pattern!r}\n{self.output()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {pattern!r} after {timeout} s\n{self.output()}")
                self._changed.wait(remaining)

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines[-200:])

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"squall {self.command} exited with {self.process.returncode}\n{self.output()}"
            )

    # -- synchronous HTTP, for fixtures and set-up ----------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def api(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """``(status, decoded JSON or None)`` for one request to the web node."""
        connection = HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"Bearer {token}"
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
        finally:
            connection.close()

    def session(self, nick: str, *, token: str | None = None) -> str:
        """A guest session token for ``nick``; with the ``token`` of its holder
        (a nick that is online is refused to anyone else)."""
        status, body = self.api("POST", "/api/session", {"nick": nick}, token=token)
        assert status == 200, (status, body)
        return str(body["token"])

    def history(self, room: str, token: str) -> list[dict[str, Any]]:
        """Every stored message of ``room`` (up to 1000), oldest first."""
        status, body = self.api("GET", f"/api/rooms/{room}/messages?since=0&limit=1000&wait=0", token=token)
        assert status == 200, (status, body)
        return list(body["messages"])


# A store at ``url`` (sqlite:///… or postgresql://…), open for the block.
@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def squall_server(data_dir: Path, command: str = "run", **kwargs: Any) -> Iterator[SquallProcess]:
    server = SquallProcess(data_dir, command, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def squall_cluster(
    data_dir: Path, *, web: int = 2, env: Mapping[str, str] | None = None,
) -> Iterator[list[SquallProcess]]:
    """One ``squall processor`` and ``web`` ``squall web`` nodes dialling it, all on
    one data folder (one SQLite file, one secret). Yields the web nodes, each
    started, linked to the processor and, with a Redis bus, subscribed."""
    processor = SquallProcess(data_dir, "processor", env=env)
    processor.start()
    nodes: list[SquallProcess] = []
    try:
        for _ in range(web):
            node = SquallProcess(data_dir, "web", processor_port=processor.processor_port, env=env)
            nodes.append(node)
            node.start()
            node.wait_health(lambda body: body["bus"].get("subscribed", True))
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        processor.stop()


# -- HTTP over asyncio ---------------------------------------------------------------


@dataclasses.dataclass
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(
    address: tuple[str, int], method: str, path: str, *, token: str | None,
    body: bytes | None, headers: Mapping[str, str] | None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); b"" for the last one."""
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size) if size else b""
    await reader.readexactly(2)
    return data


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a connection and wait for it; a peer that already reset it is fine."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def http(
    address: tuple[str, int], method: str, path: str, *, token: str | None = None,
    json_body: Any = None, body: bytes | None = None, headers: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> HTTPResponse:
    """One request on a fresh connection, read to the end of the response."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    try:
        writer.write(_request_bytes(address, method, path, token=token, body=body, headers=headers))

        async def read() -> HTTPResponse:
            status, response_headers = await read_head(reader)
            if response_headers.get("transfer-encoding", "").lower() == "chunked":
                parts = []
                while chunk := await _read_chunk(reader):
                    parts.append(chunk)
                data = b"".join(parts)
            elif "content-length" in response_headers:
                data = await reader.readexactly(int(response_headers["content-length"]))
            else:
                data = await reader.read()
            return HTTPResponse(status, response_headers, data)

        return await asyncio.wait_for(read(), timeout)
    finally:
        await close_writer(writer)


# -- Server-Sent Events -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """``GET /api/rooms/R/events`` read one event at a time (heartbeats skipped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self._buffer = b""
        self._events: list[SSEEvent] = []

    @classmethod
    async def open(
        cls, address: tuple[str, int], room: str, token: str, *,
        since: int | None = None, last_event_id: int | None = None,
    ) -> EventStream:
        path = f"/api/rooms/{room}/events" + (f"?since={since}" if since is not None else "")
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
        try:
            writer.write(_request_bytes(address, "GET", path, token=token, body=None, headers=headers))
            status, response_headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
            assert status == 200, status
            assert response_headers.get("transfer-encoding", "").lower() == "chunked", response_headers
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, status)

    async def next_event(self, timeout: float = TIMEOUT) -> SSEEvent:
        return await asyncio.wait_for(self._next_event(), timeout)

    async def _next_event(self) -> SSEEvent:
        while not self._events:
            chunk = await _read_chunk(self.reader)
            if not chunk:
                raise EOFError("the server ended the event stream")
            self._buffer += chunk
            while b"\n\n" in self._buffer:
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                event = self._parse(block.decode("utf-8"))
                if event is not None:
                    self._events.append(event)
        return self._events.pop(0)

    @staticmethod
    def _parse(block: str) -> SSEEvent | None:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue  # a comment: the heartbeat
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        if "data" not in fields:
            return None  # e.g. a lone `retry:`
        ids = fields.get("id")
        return SSEEvent(
            event=fields.get("event", ["message"])[-1], data="\n".join(fields["data"]),
            id=ids[-1] if ids else None,
        )

    async def next_of(self, kind: str, timeout: float = TIMEOUT) -> SSEEvent:
        """The next event of type ``kind``, skipping others (presence, typing)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            event = await self.next_event(deadline - asyncio.get_running_loop().time())
            if event.event == kind:
                return event

    async def close(self) -> None:
        await close_writer(self.writer)


# -- WebSocket ------------------------------------------------------------------------


class ChatClient:
    """A chat connection on ``/ws``, one JSON object per text frame."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def connect(
        cls, address: tuple[str, int], token: str | None, **kwargs: Any
    ) -> ChatClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        options: dict[str, Any] = {
            "compression": None, "proxy": None, "open_timeout": TIMEOUT,
            "close_timeout": TIMEOUT, "ping_interval": None, **kwargs,
        }
        connection = await connect(
            f"ws://{address[0]}:{address[1]}/ws", additional_headers=headers, **options
        )
        return cls(connection)

    async def send_json(self, value: Any) -> None:
        await self.connection.send(json.dumps(value))

    async def recv_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.connection.recv(), timeout)
        value: dict[str, Any] = json.loads(frame)
        return value

    async def recv_until(
        self, accept: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The next frame ``accept`` approves of; frames before it are dropped."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.recv_json(deadline - asyncio.get_running_loop().time())
            if accept(frame):
                return frame

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.recv_until(lambda frame: frame.get("type") == kind, timeout)

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        """Join ``room`` and return its ``joined`` frame."""
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await self.send_json(frame)
        return await self.recv_until(lambda f: f.get("type") in ("joined", "error"))

    async def ping(self) -> None:
        """Round-trip a ``ping`` command: proof the connection is still served."""
        await self.send_json({"type": "ping"})
        await self.recv_type("pong")

    async def close(self) -> None:
        await self.connection.close()


# -- the processor's line protocol ------------------------------------------------------


class LineClient:
    """A raw connection to a processor, speaking newline-delimited JSON."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> LineClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1024 * 1024), TIMEOUT
        )
        return cls(reader, writer)

    async def authenticate(self, key: bytes) -> dict[str, Any]:
        """Answer the processor's hello with a proof of ``key``; returns its checked welcome."""
        from squall.handshake import check_welcome, new_nonce, web_hello

        our_nonce = new_nonce()
        hello, their_nonce = web_hello(await self.recv(), key=key, our_nonce=our_nonce)
        self.send(hello)
        answer = await self.recv()
        check_welcome(answer, key=key, their_nonce=their_nonce, our_nonce=our_nonce)
        return answer

    def send(self, *values: Any) -> None:
        self.writer.write(b"".join(json.dumps(v).encode() + b"\n" for v in values))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("the processor closed the connection")
        value: dict[str, Any] = json.loads(line)
        return value

    async def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def close(self) -> None:
        await close_writer(self.writer)


# -- WebSocket on a raw socket, for peers no client library would be ----------------------


def upgrade_request(address: tuple[str, int], token: str | None) -> bytes:
    """The bytes of a WebSocket upgrade request for ``/ws`` (no token when None)."""
    target = f"/ws?token={token}" if token is not None else "/ws"
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {target} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(payload: bytes | str | dict[str, Any], opcode: int = 0x1) -> bytes:
    """One masked, final client frame (RFC 6455 §5.2); a dict is sent as JSON text."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload))
    elif len(payload) < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, len(payload))
    return header + mask + masked


class RawFrames:
    """Server frames read off a raw socket: the upgrade answer, then frame by frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.position = 0  # where the next frame starts in ``buffer``

    def _fill(self) -> bool:
        if self.position > 65536:
            del self.buffer[: self.position]
            self.position = 0
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_head(self) -> bytes:
        while (end := self.buffer.find(b"\r\n\r\n", self.position)) < 0:
            if not self._fill():
                raise EOFError(f"connection closed before the upgrade answer: {bytes(self.buffer)!r}")
        head = bytes(self.buffer[self.position : end])
        self.position = end + 4
        return head

    def next_frame(self) -> tuple[int, bytes] | None:
        """``(opcode, payload)`` of the next server frame, or None at EOF."""
        while True:
            start, available = self.position, len(self.buffer) - self.position
            if available >= 2:
                opcode, length = self.buffer[start] & 0x0F, self.buffer[start + 1] & 0x7F
                header = {126: 4, 127: 10}.get(length, 2)
                if available >= header:
                    if length == 126:
                        (length,) = struct.unpack_from("!H", self.buffer, start + 2)
                    elif length == 127:
                        (length,) = struct.unpack_from("!Q", self.buffer, start + 2)
                    if available >= header + length:
                        self.position = start + header + length
                        return opcode, bytes(self.buffer[start + header : self.position])
            if not self._fill():
                return None

    def until_close(self) -> tuple[list[dict[str, Any]], int | None]:
        """The JSON frames up to the server's close frame, and its close code (None at EOF)."""
        frames: list[dict[str, Any]] = []
        while (frame := self.next_frame()) is not None:
            opcode, payload = frame
            if opcode == 0x1:
                frames.append(json.loads(payload))
            elif opcode == 0x8:
                return frames, struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
        return frames, None


# -- Redis ----------------------------------------------------------------------------

# The machine's shared Redis, for tests that only need one running. Tests keep
# apart by channel prefix (the ``bus_prefix`` fixture), never by flushing it.
REDIS_URL = os.environ.get("SQUALL_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_SKIP = (
    f"Redis is not reachable at {REDIS_URL}: install and start it (Debian: `apt-get install"
    " redis-server`, then `redis-server --daemonize yes`) to run the Redis tests"
)
REDIS_SERVER_SKIP = (
    "redis-server is not on the PATH: install it (Debian: `apt-get install redis-server`)"
    " to run the tests that restart a Redis of their own"
)


def redis_reachable(url: str = REDIS_URL) -> bool:
    """Whether a Redis answers PING at ``url`` (host and port only)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` of the test's own, on a free port, without persistence.

    :meth:`stop` kills it (as a crash would); :meth:`start` brings it back on the
    same port, empty.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = TIMEOUT) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.starts += 1
        # redis-server must never block on its log; the thread ends at its exit.
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        pause = 0.01
        while not redis_reachable(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server on port {self.port} did not start within {timeout} s")
            time.sleep(pause)  # between polls of an event we cannot subscribe to
            pause = min(pause * 2, 0.1)

    @staticmethod
    def _drain(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for _ in process.stdout:
                pass

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
