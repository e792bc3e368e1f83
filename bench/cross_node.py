"""Cross-node delivery: what the Redis hop costs a member on another web node.

Two ``squall web --bus redis://…`` nodes share one ``squall processor`` and
one SQLite file, as docs/deployment.md runs them. The sender is on node A.
Room ``same`` has its members on A; room ``other`` has as many on B. Sends go
to the two rooms in turn, 2 messages a second to each, a quarter second apart,
so no two fan-outs overlap (both nodes run on the server core): each member's
send → arrival time differs between the rooms only by the way there — stored,
published to Redis by A, received and fanned out by B, rather than fanned out
by A itself. ``extra_p50_ms`` is that difference at the median (goal: at most
1 ms). The machine's Redis on 127.0.0.1:6379 is used, with a channel prefix of
this run's own; without it the scenario is skipped.

On a machine shared with other work the two rooms' medians move by more than
the hop itself, so the scenario also times the hop alone: two
:class:`~squall.bus.redis.RedisBus` in this process, one broadcast at a time,
from ``publish`` on one to ``receive_all`` on the other (``hop_p50_ms``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .loadgen import HTTPClient, HTTPError, Tally, WSClient, connect_many
from .targets import SQUALL_BENCH_ENV, Target, _pinned, free_port, stop_process

__all__ = ["cross_node", "REDIS_URL"]

REDIS_URL = os.environ.get("SQUALL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SETUP_TIMEOUT = 120.0
STALL_TIMEOUT = 10.0
BODY = "The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet, message "


def _redis_reachable() -> bool:
    host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
    port = int(rest.partition("/")[0] or 6379)
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Cluster:
    """One processor and two web nodes on a Redis bus, in a temporary data folder."""

    def __init__(self, command: str, *, pin: bool, loop: str) -> None:
        self.command = command
        self.pin = pin
        self.loop = loop
        self.workdir = tempfile.TemporaryDirectory(prefix="bench-cross-node-")
        self.data_dir = Path(self.workdir.name) / "data"
        self.data_dir.mkdir()
        self.processes: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        self.env = {
            **os.environ, **SQUALL_BENCH_ENV, "SQUALL_BUS": REDIS_URL,
            "SQUALL_BUS_PREFIX": f"bench-{os.getpid()}-{time.monotonic_ns()}:",
        }

    async def start(self) -> None:
        processor_port = free_port()
        await self._spawn("processor", ["processor", "--listen", f"127.0.0.1:{processor_port}"], processor_port)
        for name in ("a", "b"):
            port = free_port()
            await self._spawn(name, ["web", "--port", str(port), "--processor", f"127.0.0.1:{processor_port}"], port)
            self.ports.append(port)

    async def _spawn(self, name: str, args: list[str], port: int) -> None:
        argv = [self.command, *args, "--data-dir", str(self.data_dir), "--loop", self.loop]
        with open(Path(self.workdir.name) / f"{name}.log", "wb") as log:
            process = await asyncio.create_subprocess_exec(
                *_pinned(argv, self.pin), stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # no machine-readable ready line: watch the port
            if process.returncode is not None:
                raise RuntimeError(f"squall {name} exited with {process.returncode} on start")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"squall {name} did not listen within {START_TIMEOUT}s") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def wait_subscribed(self) -> None:
        """Until each web node has its processor link and its Redis subscription."""
        for port in self.ports:
            client = await HTTPClient.connect("127.0.0.1", port)
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while True:
                    status, health = await client.request("GET", "/api/health")
                    if status == 200 and health["processor"] == "connected" and health["bus"].get("subscribed"):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"web node on {port} not ready: {health}")
                    await asyncio.sleep(0.05)
            finally:
                await client.close()

    async def tokens(self, port: int, nicks: list[str]) -> list[str]:
        client = await HTTPClient.connect("127.0.0.1", port)
        try:
            tokens = []
            for nick in nicks:
                status, answer = await client.request("POST", "/api/session", {"nick": nick})
                if status != 200 or not isinstance(answer, dict) or "token" not in answer:
                    raise HTTPError(f"POST /api/session for {nick!r} answered {status}: {answer!r}")
                tokens.append(answer["token"])
            return tokens
        finally:
            await client.close()

    async def stop(self) -> None:
        for process in reversed(self.processes):
            await stop_process(process, STOP_TIMEOUT)
        self.workdir.cleanup()


class _Room:
    """One room's members (all on one node), its sender (on node A) and its clock."""

    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.n = n
        self.tally = Tally(n)
        self.arrivals: list[tuple[int, float]] = []
        self.sent_at: dict[str, float] = {}
        self.seq_sent_at: dict[int, float] = {}
        self.members: list[WSClient] = []
        self.sender: WSClient | None = None
        self.expected_acks = 0
        self.all_acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ack(self, client: WSClient, cid: str, seq: int) -> None:
        self.seq_sent_at[seq] = self.sent_at[cid]
        if len(self.seq_sent_at) >= self.expected_acks and not self.all_acked.done():
            self.all_acked.set_result(None)

    async def drain(self, count: int, acks: int | None = None, timeout: float = STALL_TIMEOUT) -> bool:
        """Wait until ``count`` messages have reached every member, and ``acks``
        (default ``count``) acks have come since the clock was restarted."""
        self.expected_acks = count if acks is None else acks
        self.all_acked = asyncio.get_running_loop().create_future()
        if len(self.seq_sent_at) >= self.expected_acks:
            self.all_acked.set_result(None)
        if not await self.tally.wait_completed(count, timeout):
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self.all_acked), timeout)
        except TimeoutError:
            return False
        return True

    async def connect(self, cluster: _Cluster, member_port: int, sender_port: int) -> None:
        nicks = [f"{self.name}{i}" for i in range(self.n)]
        tokens = await cluster.tokens(member_port, nicks)
        [sender_token] = await cluster.tokens(sender_port, [f"{self.name}-sender"])
        self.members = await connect_many(
            lambda i: WSClient("127.0.0.1", f"/ws?token={tokens[i]}", tally=self.tally, latencies=self.arrivals),
            "127.0.0.1", member_port, self.n,
        )
        [self.sender] = await connect_many(
            lambda i: WSClient("127.0.0.1", f"/ws?token={sender_token}", on_ack=self.on_ack),
            "127.0.0.1", sender_port, 1,
        )
        for client in (*self.members, self.sender):
            client.join(self.name)
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in (*self.members, self.sender))), SETUP_TIMEOUT)

    def restart_clock(self) -> None:
        """Forget what has been timed so far (the warm-up)."""
        self.arrivals.clear()
        self.seq_sent_at.clear()

    def send(self, k: int) -> None:
        assert self.sender is not None
        cid = f"m{k}"
        self.sent_at[cid] = time.perf_counter()
        self.sender.send_message(self.name, cid, BODY + str(k))

    def latencies(self) -> list[float]:
        return [t - self.seq_sent_at[seq] for seq, t in self.arrivals if seq in self.seq_sent_at]

    def close(self) -> None:
        for client in (*self.members, *([self.sender] if self.sender else [])):
            client.close()


class _HopReceiver:
    """The receiving bus's receiver: wakes the timer at each arrival."""

    def __init__(self) -> None:
        self.arrived: asyncio.Future[float] | None = None

    def receive_all(self, broadcasts: Any) -> None:
        if self.arrived is not None and not self.arrived.done():
            self.arrived.set_result(time.perf_counter())

    def resync(self, rooms: Any) -> None:
        pass

    def sessions_ended(self, session_ids: Any) -> None:
        pass


async def _bus_hop(count: int) -> list[float]:
    """Seconds from publish on one Redis bus to arrival on another, one at a time."""
    from squall.bus.redis import RedisBus
    from squall.frames import Broadcast

    prefix = f"bench-hop-{os.getpid()}-{time.monotonic_ns()}:"
    sender, receiver = RedisBus(REDIS_URL, prefix=prefix), RedisBus(REDIS_URL, prefix=prefix)
    inbox = _HopReceiver()
    await sender.start(_HopReceiver())
    await receiver.start(inbox)
    try:
        for bus in (sender, receiver):
            await asyncio.wait_for(bus.live.wait(), START_TIMEOUT)
        await receiver.subscribe("hop")
        payload = b'{"type":"message","room":"hop","seq":%d,"body":"' + BODY.encode() + b'"}'
        hops = []
        for seq in range(1, count + 1):
            inbox.arrived = asyncio.get_running_loop().create_future()
            sent = time.perf_counter()
            sender.publish(Broadcast("hop", seq, payload % seq))
            hops.append(await asyncio.wait_for(inbox.arrived, STALL_TIMEOUT) - sent)
        return hops
    finally:
        await sender.close()
        await receiver.close()


async def cross_node(target: Target, options: Any, *, rate: float = 2.0) -> dict[str, Any]:
    from .scenarios import _collector_paused, _percentiles  # the latency scenario's own tools

    if not _redis_reachable():
        return {"skipped": f"no Redis at {REDIS_URL} (apt-get install redis-server)", "ok": True}
    command = getattr(target, "_command")()
    n = options.clients or 2000
    count = max(1, int(options.latency_duration * rate))
    cluster = _Cluster(command, pin=target.pin, loop=target.loop)
    same, other = _Room("same", n), _Room("other", n)
    try:
        await cluster.start()
        await cluster.wait_subscribed()
        a, b = cluster.ports
        connecting = time.perf_counter()
        await same.connect(cluster, a, a)
        await other.connect(cluster, b, a)
        setup_s = time.perf_counter() - connecting
        # One message each first, not measured: it waits behind the joins'
        # presence storm (every join is announced to every member), and once
        # it has arrived everywhere the storm is over.
        for room in (same, other):
            room.send(-1)
            if not await room.drain(1, timeout=SETUP_TIMEOUT):
                raise RuntimeError(f"room {room.name}: the warm-up message did not arrive")
            room.restart_clock()
        turn = 1.0 / (2 * rate)
        with _collector_paused():
            start = time.perf_counter()
            for k in range(count):
                for i, room in enumerate((same, other) if k % 2 == 0 else (other, same)):
                    await asyncio.sleep(max(0.0, start + (2 * k + i) * turn - time.perf_counter()))
                    room.send(k)
            drained = [await room.drain(count + 1, count) for room in (same, other)]
        result: dict[str, Any] = {"clients": 2 * n, "members_per_room": n, "messages": 2 * count, "rate": rate,
                                  "setup_s": round(setup_s, 3)}
        ok = all(drained)
        for room in (same, other):
            latencies = room.latencies()
            figures = _percentiles(latencies)
            result |= {f"{room.name}_{key}": value for key, value in figures.items()}
            received = sum(c.received for c in room.members) - n  # less the warm-up
            problems = sum(c.duplicates + c.gaps + len(c.errors) for c in room.members)
            result[f"{room.name}_deliveries"] = received
            ok = ok and received == n * count and problems == 0 and len(latencies) == received
        hops = await _bus_hop(max(100, count))
        result |= {f"hop_{key}": value for key, value in _percentiles(hops).items()}
        if "same_p50_ms" in result and "other_p50_ms" in result:
            result["extra_p50_ms"] = round(result["other_p50_ms"] - result["same_p50_ms"], 3)
            result["extra_p99_ms"] = round(result["other_p99_ms"] - result["same_p99_ms"], 3)
        result["ok"] = ok
        return result
    finally:
        same.close()
        other.close()
        await cluster.stop()
