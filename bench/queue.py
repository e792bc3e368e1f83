"""Several processors, two ways: TCP links and the Redis Streams queue, 1 and 2 processors.

Theory of operation. The bench process plays the web node: it drives Squall's
own web-node side (:class:`squall.processor.pool.ProcessorPool` for TCP,
:class:`squall.queue.client.QueueClient` for the queue) against one or two real
``squall processor`` processes sharing one SQLite file, so every figure includes
the real pipeline, the real store and, for the queue, the real Redis round
trips (the ``XADD`` script, ``XREADGROUP``, the script with the reply ``XADD``,
``XACK`` and ``XDEL``, the reply ``XREAD``). Sends go to 10 rooms from 50 users,
``WINDOW`` in flight; then one at a time at ``RATE`` per second for the
per-message latency (send to answer), which carries no batching.

The processors are not pinned: with two cores, the load generator, Redis and
the processors share both, and the figures say how busy each was (in cores),
so that a reader sees what limited the second processor. Redis is the
machine's own on 127.0.0.1:6379, under a key prefix of this run that is
deleted afterwards; without it the queue rows are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from squall.handshake import link_key
from squall.processor.pool import ProcessorPool
from squall.queue.client import QueueClient

from .loadgen import run_delay_seconds
from .serving import BENCH_SECRET
from .targets import SQUALL_BENCH_ENV, Target, free_port

__all__ = ["processors", "REDIS_URL"]

REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 256  # sends in flight in the throughput phase
RATE = 100.0  # sends per second in the latency phase
START_TIMEOUT = 30.0
STALL_TIMEOUT = 30.0  # seconds without an answer before a run counts as failed
ROOMS, USERS = 10, 50
BODY = "The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet, message "
Link = ProcessorPool | QueueClient


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    last = len(values) - 1
    return {f"p{p}_ms": round(values[min(last, int(last * p / 100 + 0.5))] * 1000, 3) for p in (50, 99)}


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _waited(processes: list[psutil.Process]) -> float:
    """Seconds the processes were runnable but had no CPU (another program had it)."""
    return sum(run_delay_seconds(process.pid) or 0.0 for process in processes)


def _redis_server() -> list[psutil.Process]:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "redis-server":
            return [process]
    return []


async def _redis_unavailable() -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # any failure means: no queue rows in this run
        return f"no Redis on 127.0.0.1:6379 ({type(exc).__name__}: {exc})"
    finally:
        await client.aclose()
    return None


async def _delete_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _start_processors(command: str, count: int, data_dir: Path, mode_args: Callable[[int], list[str]],
                            loop: str) -> list[asyncio.subprocess.Process]:
    started: list[asyncio.subprocess.Process] = []
    env = {**SQUALL_BENCH_ENV, "SQUALL_LOG_LEVEL": "warning"}
    import os

    try:
        for index in range(count):  # one after the other: the first creates the database
            process = await asyncio.create_subprocess_exec(
                command, "processor", "--data-dir", str(data_dir), "--loop", loop, *mode_args(index),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, **env},
            )
            started.append(process)
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
            if b"listening on" not in line:
                raise RuntimeError(f"squall processor did not start (said {line!r})")
    except BaseException:
        await _stop(started)
        raise
    return started


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _drive(
    link: Link, duration: float, published: list[int], measured: Callable[[float, int], dict[str, Any]]
) -> dict[str, Any]:
    """Throughput with WINDOW in flight for ``duration`` s, then latency at RATE per second.

    ``measured(elapsed, messages)`` is called at the end of the throughput phase
    and returns the CPU figures of that phase.
    """
    numbers = itertools.count()
    failures: list[str] = []
    answered = 0

    async def send(n: int) -> None:
        nonlocal answered
        try:
            await link.process(room=f"room{n % ROOMS}", nick=f"user{n % USERS}", id=f"m{n}",
                               body=BODY + str(n), ts=int(time.time() * 1000))
            answered += 1
        except Exception as exc:
            if len(failures) < 5:
                failures.append(f"{type(exc).__name__}: {exc}")

    async def worker(end: float) -> None:
        while time.perf_counter() < end:
            await send(next(numbers))  # no wait_for per send: it would delay each by a loop turn

    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker(start + duration) for _ in range(WINDOW))), duration + STALL_TIMEOUT
    )
    elapsed = time.perf_counter() - start
    throughput = answered
    cpu = measured(elapsed, throughput)
    latencies: list[float] = []
    count = max(1, int(min(duration, 5.0) * RATE))
    begin = time.perf_counter()
    for k in range(count):
        await asyncio.sleep(max(0.0, begin + k / RATE - time.perf_counter()))
        sent = time.perf_counter()
        await asyncio.wait_for(send(next(numbers)), STALL_TIMEOUT)
        latencies.append(time.perf_counter() - sent)
    return {
        "messages": throughput, "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(throughput / elapsed), "latency_messages": count,
        **cpu, **_percentiles(latencies), "failures": failures,
        "ok": not failures and sum(published) == answered,
    }


async def _run_mode(target: Target, mode: str, count: int, duration: float) -> dict[str, Any]:
    command = getattr(target, "_command", lambda: shutil.which("squall"))()
    assert command is not None, "the squall command is not installed"
    key = link_key(BENCH_SECRET)
    published = [0]

    def on_processed(messages: list[dict[str, Any]]) -> None:
        published[0] += len(messages)

    workdir = tempfile.TemporaryDirectory(prefix=f"bench-{mode}-")
    prefix = f"squall-bench-{secrets.token_hex(4)}"
    link: Link
    if mode == "tcp":
        ports = [free_port() for _ in range(count)]
        mode_args: Callable[[int], list[str]] = lambda i: ["--listen", f"127.0.0.1:{ports[i]}"]
        link = ProcessorPool([("127.0.0.1", port) for port in ports], key=key, on_processed=on_processed,
                             max_pending=4 * WINDOW, send_timeout=STALL_TIMEOUT)
    else:
        mode_args = lambda i: ["--queue", REDIS_URL, "--queue-prefix", prefix]
        link = QueueClient(REDIS_URL, key=key, prefix=prefix, on_processed=on_processed,
                           max_pending=4 * WINDOW, send_timeout=STALL_TIMEOUT)
    processes = await _start_processors(command, count, Path(workdir.name), mode_args, target.loop)
    try:
        link.start()
        await asyncio.wait_for(link.connected.wait(), START_TIMEOUT)
        if isinstance(link, ProcessorPool):
            while not all(state["state"] == "connected" for state in link.states()):
                await asyncio.sleep(0.01)
        # "web": this process, Squall's web-node side of the link plus the driver.
        parts = {"processor": [psutil.Process(p.pid) for p in processes], "web": [psutil.Process()]}
        if mode == "queue":
            parts["redis"] = _redis_server()
        before = {name: _cpu(group) for name, group in parts.items()}
        waited = {name: _waited(group) for name, group in parts.items()}

        def measured(elapsed: float, messages: int) -> dict[str, Any]:
            # Cores busy, and CPU microseconds per message: the second holds on
            # a machine whose other load slows everything down, the first not.
            figures: dict[str, Any] = {}
            for name, group in parts.items():
                used = _cpu(group) - before[name]
                figures[f"{name}_cpu"] = round(used / elapsed, 3)
                figures[f"{name}_us_per_msg"] = round(used / max(messages, 1) * 1e6, 1)
                figures[f"{name}_wait"] = round((_waited(group) - waited[name]) / elapsed, 3)
            return figures

        return await _drive(link, duration, published, measured)
    finally:
        await link.close(timeout=5)
        await _stop(processes)
        workdir.cleanup()
        if mode == "queue":
            await _delete_prefix(prefix)


async def processors(target: Target, options: Any) -> dict[str, Any]:
    """TCP links and the queue, each with 1 then 2 processors; the headline is the queue with 1."""
    no_redis = await _redis_unavailable()
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("tcp", "queue"):
        for count in (1, 2):
            name = f"{mode}_{count}"
            if mode == "queue" and no_redis:
                runs[name] = {"skipped": no_redis}
                continue
            runs[name] = await _run_mode(target, mode, count, options.duration)
    result: dict[str, Any] = {"runs": runs}
    for name, run in runs.items():
        if "msgs_per_s" in run:
            result[f"{name}_msgs_per_s"] = run["msgs_per_s"]
    for mode in ("tcp", "queue"):
        one, two = runs[f"{mode}_1"].get("msgs_per_s"), runs[f"{mode}_2"].get("msgs_per_s")
        if one and two:
            result[f"{mode}_factor"] = round(two / one, 2)
    for name in ("tcp_1", "queue_1"):
        for figure in ("p50_ms", "p99_ms", "processor_us_per_msg", "web_us_per_msg", "redis_us_per_msg"):
            if figure in runs[name]:
                result[f"{name}_{figure}"] = runs[name][figure]
    result["msgs_per_s"] = runs["queue_1"].get("msgs_per_s", runs["tcp_1"].get("msgs_per_s"))
    if no_redis:
        result["queue_skipped"] = no_redis
    result["ok"] = all(run.get("ok", True) for run in runs.values())
    return result
