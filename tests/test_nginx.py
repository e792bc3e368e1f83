"""A real load balancer: nginx, configured as docs/deployment.md says, in front of
``squall cluster --web 2`` on the Redis bus.

The nginx configuration is read from docs/deployment.md, so the documented one
is the tested one; only its ports change. Through nginx, with no sticky sessions:

- client addresses reach the nodes through ``X-Forwarded-For`` (``trusted_proxies``):
  per-address limits tell two clients behind nginx apart;
- WebSocket, SSE and long-poll clients spread over both nodes each see every message
  once, in seq order, across ``kill -9`` of one web node: its clients reconnect
  through nginx and resume with ``since`` / ``Last-Event-ID``, the sender resends what
  was not acknowledged with the same id, and each message is stored once;
- ``/readyz`` answers through nginx.

Counts in every assertion; every wait is on a frame, an event or an answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from support import TIMEOUT, ChatClient, EventStream, SquallProcess, free_port, http, read_head, run_async

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NGINX_SKIP = "nginx is not installed: `apt-get install nginx` (Debian) to run the load-balancer test"
MESSAGES = 20  # half before the kill, half after


def documented_nginx_config() -> str:
    """The ```nginx block of docs/deployment.md's nginx section."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text[text.index("### nginx in front of two web nodes"):]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match, "docs/deployment.md has no nginx block"
    return match.group(1)


class Nginx:
    """nginx in the foreground on a free port, with the documented site config."""

    def __init__(self, folder: Path, upstreams: list[int]) -> None:
        self.folder = folder
        self.port = free_port()
        site = documented_nginx_config()
        for documented, port in zip(("127.0.0.1:8001", "127.0.0.1:8002"), upstreams, strict=True):
            assert documented in site, documented
            site = site.replace(documented, f"127.0.0.1:{port}")
        assert "listen 80;" in site
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        temp = "\n".join(f"    {kind}_temp_path {folder}/{kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (folder / "nginx.conf").write_text(
            f"worker_processes 1;\n"  # one round-robin: connections alternate between the nodes
            f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert NGINX is not None
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        threading.Thread(target=self.process.communicate, daemon=True).start()
        deadline = time.monotonic() + TIMEOUT
        pause = 0.01
        while True:  # nginx says nothing when it listens: connect until it answers
            try:
                with socket_to(("127.0.0.1", self.port)):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {self.errors()}") from None
            time.sleep(pause)  # between polls of an event we cannot subscribe to
            pause = min(pause * 2, 0.1)

    def errors(self) -> str:
        log = self.folder / "error.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def socket_to(address: tuple[str, int]) -> Any:
    import socket

    return socket.create_connection(address, timeout=1)


@pytest.fixture
def balanced(tmp_path: Path, redis_url: str, bus_prefix: str) -> Iterator[tuple[Nginx, SquallProcess, list[int]]]:
    if NGINX is None:
        pytest.skip(NGINX_SKIP)
    first = free_port()
    while not _free(first + 1):
        first = free_port()
    cluster = SquallProcess(
        tmp_path / "data", "cluster",
        args=("--web", "2", "--processors", "2", "--port", str(first)),
        env={
            "SQUALL_BUS": redis_url, "SQUALL_BUS_PREFIX": bus_prefix,
            "SQUALL_TRUSTED_PROXIES": "127.0.0.1/32",
            # One guest session per address and node, for good: the address the
            # nodes see decides who is refused.
            "SQUALL_SESSION_RATE_PER_IP": "0.001", "SQUALL_SESSION_BURST_PER_IP": "1",
            "SQUALL_RECONNECT_MIN": "0.01", "SQUALL_RECONNECT_MAX": "0.2",
        },
    )
    cluster.start()
    try:
        cluster.wait_for_line("Squall is running at", count=2)
        ports = [first, first + 1]
        nginx = Nginx(tmp_path, ports)
        nginx.start()
        try:
            yield nginx, cluster, ports
        finally:
            nginx.stop()
    finally:
        cluster.stop()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- clients ------------------------------------------------------------------------


async def session_from(address: tuple[str, int], nick: str, source: str) -> tuple[int, dict[str, Any]]:
    """POST /api/session from the local address ``source`` (127.0.0.x)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*address, local_addr=(source, 0)), TIMEOUT)
    try:
        body = json.dumps({"nick": nick}).encode()
        writer.write(
            f"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
        data = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
        return status, json.loads(data)
    finally:
        writer.close()


async def connect_and_join(address: tuple[str, int], token: str, room: str, since: int) -> ChatClient:
    """A WebSocket through nginx, joined from ``since``; retried while no node takes it."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        try:
            client = await ChatClient.connect(address, token)
            joined = await client.join(room, since=since)
            assert joined["type"] == "joined", joined
            return client
        except (OSError, InvalidStatus, ConnectionClosed):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)  # back-off before redialling, as a client does


class Watcher:
    """A WebSocket member that reconnects and resumes from the last seq it has."""

    def __init__(self, address: tuple[str, int], token: str, room: str) -> None:
        self.address, self.token, self.room = address, token, room
        self.seqs: list[int] = []
        self.joined = asyncio.Event()
        self.reconnects = 0

    async def run(self) -> None:
        while len(self.seqs) < MESSAGES:
            client = await connect_and_join(self.address, self.token, self.room, self.seqs[-1] if self.seqs else 0)
            self.joined.set()
            try:
                while len(self.seqs) < MESSAGES:
                    frame = await client.recv_json(timeout=4 * TIMEOUT)
                    if frame.get("type") == "message" and frame.get("room") == self.room:
                        self.seqs.append(frame["seq"])
            except ConnectionClosed:
                self.reconnects += 1
            finally:
                await client.close()


class SSEWatcher:
    """An event stream that reconnects with ``Last-Event-ID``."""

    def __init__(self, address: tuple[str, int], token: str, room: str) -> None:
        self.address, self.token, self.room = address, token, room
        self.seqs: list[int] = []
        self.joined = asyncio.Event()

    async def run(self) -> None:
        while len(self.seqs) < MESSAGES:
            try:
                stream = await EventStream.open(
                    self.address, self.room, self.token,
                    **({"last_event_id": self.seqs[-1]} if self.seqs else {"since": 0}))
            except (OSError, AssertionError):
                await asyncio.sleep(0.05)  # nginx had no node for it this instant; redial
                continue
            self.joined.set()
            try:
                while len(self.seqs) < MESSAGES:
                    event = await stream.next_of("message", timeout=4 * TIMEOUT)
                    self.seqs.append(json.loads(event.data)["seq"])
            except (EOFError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                await stream.close()


async def long_poll(address: tuple[str, int], token: str, room: str) -> list[int]:
    """Polls through nginx (each may reach either node) until every message is in."""
    seqs: list[int] = []
    deadline = asyncio.get_running_loop().time() + 6 * TIMEOUT
    while len(seqs) < MESSAGES:
        assert asyncio.get_running_loop().time() < deadline, seqs
        since = seqs[-1] if seqs else 0
        try:
            response = await http(address, "GET", f"/api/rooms/{room}/messages?since={since}&wait=5", token=token)
        except (OSError, asyncio.IncompleteReadError):
            continue  # the node it reached died under it: poll again
        if response.status == 502:
            continue  # nginx found no node this instant
        assert response.status == 200, (response.status, response.body)
        seqs += [message["seq"] for message in json.loads(response.body)["messages"]]
    return seqs


class Sender:
    """Sends messages with ids, each until acknowledged, resending across reconnects."""

    def __init__(self, address: tuple[str, int], token: str, room: str) -> None:
        self.address, self.token, self.room = address, token, room
        self.client: ChatClient | None = None
        self.acked: list[int] = []
        self.resent = 0

    async def send(self, number: int) -> None:
        message_id = f"n{number}"
        while True:
            if self.client is None:
                self.client = await connect_and_join(self.address, self.token, self.room, 0)
            try:
                await self.client.send_json({"type": "send", "room": self.room, "id": message_id, "body": f"#{number}"})
                ack = await self.client.recv_until(lambda f: f.get("id") == message_id and f.get("type") in ("ack", "error"))
                assert ack["type"] == "ack", ack
                self.acked.append(ack["seq"])
                return
            except ConnectionClosed:
                self.resent += 1
                self.client = None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def web_node_on(cluster: SquallProcess, port: int) -> psutil.Process:
    assert cluster.process is not None
    for child in psutil.Process(cluster.process.pid).children(recursive=True):
        if "web" in child.cmdline() and any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp")
        ):
            return child
    raise AssertionError(f"no web node listens on {port}")


# -- the test -------------------------------------------------------------------------


def test_clients_behind_nginx_survive_a_killed_web_node(
    balanced: tuple[Nginx, SquallProcess, list[int]], room: str,
) -> None:
    nginx, cluster, ports = balanced
    address = ("127.0.0.1", nginx.port)

    async def scenario() -> None:
        # X-Forwarded-For: each node allows one session per client address. The
        # four requests from 127.0.0.2 alternate between the nodes: two pass and
        # two are refused; 127.0.0.3 is a client of its own and passes. Were the
        # nodes to see nginx's address instead, it would be refused too.
        statuses = [(await session_from(address, f"x{i}", "127.0.0.2"))[0] for i in range(4)]
        assert sorted(statuses) == [200, 200, 429, 429], statuses
        assert (await session_from(address, "y", "127.0.0.3"))[0] == 200

        tokens = []
        for i in range(7):  # each member from an address of its own (one session each)
            status, body = await session_from(address, f"member{i}", f"127.0.1.{i + 1}")
            assert status == 200, body
            tokens.append(body["token"])
        watchers = [Watcher(address, tokens[i], room) for i in range(4)]
        sse = SSEWatcher(address, tokens[4], room)
        running = [asyncio.ensure_future(w.run()) for w in [*watchers, sse]]
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in [*watchers, sse])), TIMEOUT)
        polling = asyncio.ensure_future(long_poll(address, tokens[5], room))
        sender = Sender(address, tokens[6], room)

        # No sticky sessions: nginx spread the WebSockets over both nodes.
        sockets = [(await http(("127.0.0.1", port), "GET", "/api/health")) for port in ports]
        per_node = [json.loads(r.body)["connections"]["websocket"] for r in sockets]
        assert min(per_node) >= 1 and sum(per_node) == 4, per_node

        for number in range(1, MESSAGES // 2 + 1):
            await sender.send(number)
        victim = web_node_on(cluster, ports[0])
        victim.kill()  # kill -9: no goodbye to anyone
        victim.wait(TIMEOUT)
        for number in range(MESSAGES // 2 + 1, MESSAGES + 1):
            await sender.send(number)
        await sender.close()

        await asyncio.wait_for(asyncio.gather(*running), 6 * TIMEOUT)
        polled = await asyncio.wait_for(polling, 6 * TIMEOUT)
        expected = list(range(1, MESSAGES + 1))
        assert sender.acked == expected, sender.acked
        for watcher in watchers:
            assert watcher.seqs == expected, watcher.seqs
        assert sse.seqs == expected, sse.seqs
        assert polled == expected, polled
        # The killed node's members reconnected through nginx and resumed.
        assert sum(w.reconnects for w in watchers) >= per_node[0], [w.reconnects for w in watchers]

        history = await http(address, "GET", f"/api/rooms/{room}/messages?since=0&limit=100&wait=0",
                             token=tokens[0])
        assert [m["seq"] for m in json.loads(history.body)["messages"]] == expected
        ready = await http(address, "GET", "/readyz")
        assert ready.status == 200, ready.body

    run_async(scenario(), timeout=12 * TIMEOUT)
