"""The servers under test, started as child processes pinned to the server core.

A :class:`Target` knows how to start one kind of server (``ws``, ``longpoll``
or ``processor``) and how to get a token for a nick. It returns a
:class:`Running` server, which measures its own process tree (CPU seconds and
RSS through psutil) and stops it. Four targets exist:

- ``ceiling``: the raw asyncio servers in this package, each message its own
  write; the WebSocket and long-poll ones with the processor ceiling as a
  child process, as ``squall run`` has its processor;
- ``ceiling-coalescing``: the same servers with ``--coalesce`` (the messages of
  one processor read go to each member in one write, as Squall's do). It is
  the reference of the scenarios that keep several messages in flight, and
  runs only in those (:attr:`Target.reference_only`);
- ``websockets``: :mod:`bench.peer_websockets` (WebSocket only; it stores
  nothing and has no processor);
- ``squall``: ``squall run`` (WebSocket and long-poll) and ``squall processor``.

Pinning: where ``taskset`` exists, a server runs on :data:`SERVER_CORE` and
the harness pins itself to the other cores (:func:`pin_self`), so the load
generator and the server never fight over a core. Children of the server (the
Squall processor) inherit the pinning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from .loadgen import HTTPClient, HTTPError, run_delay_seconds
from .serving import BENCH_SECRET

__all__ = ["COALESCING_CEILING", "TARGETS", "Running", "Target", "free_port", "pin_self", "SERVER_CORE", "stop_process"]

SERVER_CORE = 0
COALESCING_CEILING = "ceiling-coalescing"
START_TIMEOUT = 30.0  # seconds for a server to start listening
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

# Squall's rate limits protect a chat from a flooding client; the bench *is* a
# flooding client. These values make the limits irrelevant to every scenario.
SQUALL_BENCH_ENV = {
    "SQUALL_SEND_RATE": "1000000",
    "SQUALL_SEND_BURST": "1000000",
    "SQUALL_SECRET": BENCH_SECRET,
    # Every load-generator client comes from 127.0.0.1.
    "SQUALL_SEND_RATE_PER_IP": "1000000",
    "SQUALL_SEND_BURST_PER_IP": "1000000",
    "SQUALL_SESSION_RATE_PER_IP": "1000000",
    "SQUALL_SESSION_BURST_PER_IP": "1000000",
    # One client asks every search (bench/search.py).
    "SQUALL_SEARCH_RATE": "1000000",
    "SQUALL_SEARCH_BURST": "1000000",
    "SQUALL_MAX_CONNECTIONS_PER_IP": "1000000",
    "SQUALL_MAX_CONNECTIONS": "1000000",
    "SQUALL_MAX_HTTP_CONNECTIONS_PER_IP": "1000000",
    "SQUALL_MAX_HTTP_CONNECTIONS": "1000000",
    "SQUALL_JOIN_BURST": "1000000",
    "SQUALL_JOIN_BURST_PER_USER": "1000000",
}


def pin_self() -> str | None:
    """Move this process off the server core; return a description, or None if not possible."""
    if not hasattr(os, "sched_setaffinity") or shutil.which("taskset") is None:
        return None
    cores = os.sched_getaffinity(0) - {SERVER_CORE}
    if not cores:
        return None
    os.sched_setaffinity(0, cores)
    return f"server on core {SERVER_CORE}, load generator on cores {sorted(cores)}"


def free_port() -> int:
    """Return a TCP port that was free a moment ago (for servers that cannot report one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Running:
    """A started server: where it listens, and its process tree for measurements.

    ``processor`` says where the server's processor runs, so that its CPU can
    be told apart: ``"child"`` (every descendant of the web node),
    ``"self"`` (the server *is* a processor) or None (there is none).
    """

    name: str
    host: str
    port: int
    process: asyncio.subprocess.Process
    workdir: tempfile.TemporaryDirectory[str]
    log_path: Path | None = None
    processor: str | None = "child"

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the server and its children."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """User + system CPU seconds used so far by the web node and by the processor."""
        per_process = []
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                times = None
            per_process.append(0.0 if times is None else times.user + times.system)
        if not per_process:
            return 0.0, 0.0
        if self.processor == "self":
            return 0.0, sum(per_process)
        if self.processor is None:
            return sum(per_process), 0.0
        return per_process[0], sum(per_process[1:])

    def run_delay_seconds(self) -> float | None:
        """Seconds the server's threads spent runnable but waiting for a CPU (None if unknown)."""
        total = 0.0
        for proc in self._tree():
            delay = run_delay_seconds(proc.pid)
            if delay is None:
                return None
            total += delay
        return total

    def rss(self) -> int:
        """Resident set size of the server and its children, in bytes."""
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def processes(self) -> int:
        return len(self._tree())

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        if self.process.returncode is None:
            # Squall's processor is a child; take the whole tree down.
            children = [p for p in self._tree()[1:]]
            await stop_process(self.process)
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        self.workdir.cleanup()


async def stop_process(process: asyncio.subprocess.Process, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()


def _pinned(argv: list[str], pin: bool) -> list[str]:
    if pin and shutil.which("taskset") is not None:
        return ["taskset", "-c", str(SERVER_CORE), *argv]
    return argv


async def _spawn_announcing(
    name: str, module: str, *, pin: bool, loop: str, extra: tuple[str, ...] = (), processor: str | None
) -> Running:
    """Start ``python -m module`` and wait for its ``listening <port>`` line."""
    workdir = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
    argv = _pinned([sys.executable, "-m", module, "--port", "0", "--loop", loop, *extra], pin)
    argv = [a.replace("{workdir}", workdir.name) for a in argv]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line.startswith(b"listening "):
        process.kill()
        await process.wait()
        workdir.cleanup()
        raise RuntimeError(f"{module} did not start (said {line!r})")
    return Running(name, "127.0.0.1", int(line.split()[1]), process, workdir, processor=processor)


class Target:
    """A server implementation the bench can measure. Subclasses fill in the kinds they have."""

    name = ""
    kinds: frozenset[str] = frozenset()
    # Runs only in the scenarios whose reference it is (Scenario.reference).
    reference_only = False

    def __init__(self, *, pin: bool, loop: str) -> None:
        self.pin = pin
        self.loop = loop

    def unavailable(self) -> str | None:
        """Return why this target cannot run here, or None if it can."""
        return None

    async def start(self, kind: str) -> Running:
        raise NotImplementedError

    async def tokens(self, server: Running, nicks: list[str]) -> list[str]:
        """Return a token per nick; the bench servers take the nick itself."""
        return list(nicks)

    def ws_path(self, token: str) -> str:
        return f"/ws?token={token}"


class CeilingTarget(Target):
    name = "ceiling"
    kinds = frozenset({"ws", "longpoll", "processor"})
    coalesce = False

    async def start(self, kind: str) -> Running:
        module = {"ws": "bench.ceiling_ws", "longpoll": "bench.ceiling_longpoll",
                  "processor": "bench.ceiling_processor"}[kind]
        extra: tuple[str, ...] = ("--data-dir", "{workdir}")
        if self.coalesce:
            extra += ("--coalesce",)
        return await _spawn_announcing(self.name, module, pin=self.pin, loop=self.loop, extra=extra,
                                       processor="self" if kind == "processor" else "child")


class CoalescingCeilingTarget(CeilingTarget):
    name = COALESCING_CEILING
    kinds = frozenset({"ws", "longpoll"})
    coalesce = True
    reference_only = True


class WebsocketsTarget(Target):
    name = "websockets"
    kinds = frozenset({"ws"})

    async def start(self, kind: str) -> Running:
        return await _spawn_announcing(self.name, "bench.peer_websockets", pin=self.pin, loop=self.loop,
                                       processor=None)


class SquallTarget(Target):
    name = "squall"
    # "events": edits and reactions, which only Squall speaks.
    kinds = frozenset({"ws", "longpoll", "processor", "processors", "cluster", "events"})

    def _command(self) -> str | None:
        sibling = Path(sys.executable).with_name("squall")
        if sibling.exists():
            return str(sibling)
        return shutil.which("squall")

    def unavailable(self) -> str | None:
        command = self._command()
        if command is None:
            return "the `squall` command is not installed"
        try:
            result = subprocess.run([command, "run", "--help"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`squall run --help` failed: {exc}"
        if result.returncode != 0:
            last = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()[-1:]
            return f"`squall run --help` exited with {result.returncode}: {' '.join(last)}"
        return None

    async def start(self, kind: str, *, env: dict[str, str] | None = None) -> Running:
        """Start ``squall`` for ``kind``; ``env`` adds settings (``SQUALL_DATABASE``…)."""
        command = self._command()
        assert command is not None
        workdir = tempfile.TemporaryDirectory(prefix="bench-squall-")
        data_dir = Path(workdir.name) / "data"
        data_dir.mkdir()
        port = free_port()
        if kind == "processor":
            argv = [command, "processor", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
                    "--loop", self.loop]
        else:
            argv = [command, "run", "--port", str(port), "--processor-port", str(free_port()),
                    "--data-dir", str(data_dir), "--loop", self.loop]
        log_path = Path(workdir.name) / "squall.log"
        environment = {**os.environ, **SQUALL_BENCH_ENV, **(env or {})}
        with open(log_path, "wb") as log:
            process = await asyncio.create_subprocess_exec(
                *_pinned(argv, self.pin), stdout=log, stderr=subprocess.STDOUT, env=environment
            )
        running = Running(self.name, "127.0.0.1", port, process, workdir, log_path,
                          processor="self" if kind == "processor" else "child")
        # `squall run` prints no machine-readable ready line, so watch the port,
        # and give up at once if the process dies.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.returncode is not None:
                tail = running.log_tail()
                workdir.cleanup()
                raise RuntimeError(f"squall exited with {process.returncode} on start:\n{tail}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    await running.stop()
                    raise RuntimeError(f"squall did not listen on port {port} within {START_TIMEOUT}s") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return running

    async def tokens(self, server: Running, nicks: list[str]) -> list[str]:
        clients = [await HTTPClient.connect(server.host, server.port) for _ in range(min(8, len(nicks)))]
        tokens: list[str] = [""] * len(nicks)

        async def worker(client: HTTPClient, indexes: range) -> None:
            for i in indexes:
                status, answer = await client.request("POST", "/api/session", {"nick": nicks[i]})
                if status != 200 or not isinstance(answer, dict) or "token" not in answer:
                    raise HTTPError(f"POST /api/session for {nicks[i]!r} answered {status}: {answer!r}")
                tokens[i] = answer["token"]

        try:
            step = len(clients)
            await asyncio.gather(*(worker(c, range(k, len(nicks), step)) for k, c in enumerate(clients)))
        finally:
            for client in clients:
                await client.close()
        return tokens


TARGETS: dict[str, type[Target]] = {
    "ceiling": CeilingTarget,
    COALESCING_CEILING: CoalescingCeilingTarget,
    "websockets": WebsocketsTarget,
    "squall": SquallTarget,
}
