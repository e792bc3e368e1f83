"""What one message costs, and what an idle connection holds, measured apart.

Three scenarios, each the figure an issue-14 goal is judged on:

``lone-message``
    One room of N subscribers (2000) and one sender with **one message in
    flight**: the next is sent once every subscriber has the last one and the
    sender has its ack. No coalescing can happen, so this is the per-message
    path alone. The headline is server CPU per delivery, Squall's web node and
    processor together. The ceiling's row adds its processor ceiling
    (``bench/ceiling_processor.py``) driven with the same messages one at a time
    after the fan-out, so that both rows pay for storing the message; the
    fan-out part alone is reported beside it (``fanout_cpu_us_per_delivery``).
    Squall's row is split by process (``web_*`` and ``processor_*``).

``lone-processor``
    One processor, one request at a time (the next once the last is answered):
    CPU milliseconds per message, and the round trip's p50/p99.

``idle-10k``
    10,000 WebSockets joined to **one** room, then idle: RSS growth of the web
    node alone per connection (Squall's processor holds nothing per
    connection), with the whole tree's beside it.

``bench/scenarios.py`` imports this module and registers its scenarios (their
goals are in ``bench/report.py``); import that one, not this.

CPU is process CPU time (user + system, from psutil), never wall time, so a
busy machine makes a run slower but not dearer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from .link import START_TIMEOUT_S, ProcessorClient
from .loadgen import Tally, WSClient, connect_many
from .scenarios import (
    BODY,
    SETUP_TIMEOUT,
    STALL_TIMEOUT,
    Options,
    Scenario,
    _counts,
    _Meter,
    _percentiles,
    _ws_clients,
)
from .targets import CeilingTarget, Running, Target

__all__ = ["COST_SCENARIOS", "lone_message", "lone_processor", "idle_joined"]

LONE_MEMBERS = 2000
LONE_WARM_UP = 50  # requests before lone-processor measures: first transaction, caches
IDLE_CONNECTIONS = 10_000
# Seconds the joined connections sit idle before RSS is read: joins, presence
# and catch-up must be over, and the allocator settled.
IDLE_SETTLE_S = 2.0


def _process_cpu(server: Running) -> list[float]:
    """CPU seconds of each process of the server's tree, root (the web node) first."""
    cpu = []
    for proc in server._tree():
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            cpu.append(0.0)
            continue
        cpu.append(times.user + times.system)
    return cpu


def _process_rss(server: Running) -> list[int]:
    rss = []
    for proc in server._tree():
        try:
            rss.append(proc.memory_info().rss)
        except psutil.NoSuchProcess:
            rss.append(0)
    return rss


async def _one_at_a_time_processor(server: Running, count: int, *, first: int = 0) -> dict[str, Any]:
    """Send ``count`` process requests, each once the last is answered; CPU and round trips.

    Client ids are ``m<first>`` on: a processor refuses or deduplicates one it has seen.
    """
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[dict[str, Any]] | None = None

    def on_answer(answer: dict[str, Any], now: float) -> None:
        if answered is not None and not answered.done():
            answered.set_result(answer)

    _, client = await loop.create_connection(lambda: ProcessorClient(on_answer), server.host, server.port)
    try:
        await asyncio.wait_for(client.ready, START_TIMEOUT_S)
        rejected: list[Any] = []
        latencies: list[float] = []
        meter = _Meter(server)
        for ref in range(first, first + count):
            answered = loop.create_future()
            started = time.perf_counter()
            client.process(ref, "lone", "sender", f"m{ref}", BODY + str(ref))
            answer = await asyncio.wait_for(answered, STALL_TIMEOUT)
            latencies.append(time.perf_counter() - started)
            if answer.get("op") != "processed":
                rejected.append(answer)
        figures = meter.figures()
    finally:
        client.close()
    return {
        "messages": count,
        "processor_cpu_ms_per_message": round(figures["server_cpu_s"] / count * 1e3, 3),
        **{f"round_trip_{k}": v for k, v in _percentiles(latencies).items()},
        "rejected": [repr(r) for r in rejected[:5]],
        "ok": not rejected,
    }


async def lone_message(target: Target, options: Options) -> dict[str, Any]:
    n = options.clients or LONE_MEMBERS
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        tally = Tally(n)
        acked: dict[str, int] = {}
        ack_waiter: list[asyncio.Future[None]] = []

        def on_ack(client: WSClient, cid: str, seq: int) -> None:
            acked[cid] = seq
            if ack_waiter and not ack_waiter[0].done():
                ack_waiter[0].set_result(None)

        clients = await _ws_clients(
            target, server, [f"sub{i}" for i in range(n)] + ["sender"], ["lone"] * (n + 1),
            lambda i, path: WSClient(server.host, path, tally=tally) if i < n
            else WSClient(server.host, path, on_ack=on_ack),
        )
        sender = clients[n]
        loop = asyncio.get_running_loop()
        cpu_before = _process_cpu(server)
        meter = _Meter(server)
        end = meter.start + options.duration
        sent = 0
        stalled = False
        while time.perf_counter() < end:
            cid = f"m{sent}"
            ack_waiter[:] = [loop.create_future()]
            sender.send_message("lone", cid, BODY + str(sent))
            sent += 1
            if not await tally.wait_completed(sent, STALL_TIMEOUT):
                stalled = True
                break
            if cid not in acked:
                try:
                    await asyncio.wait_for(ack_waiter[0], STALL_TIMEOUT)
                except TimeoutError:
                    stalled = True
                    break
        figures = meter.figures()
        cpu_after = _process_cpu(server)
        result: dict[str, Any] = {"clients": n, "messages": sent, **figures}
        result |= _counts(clients[:n], [sent] * n)
        result["ok"] = result["ok"] and not stalled and not sender.errors
        deliveries = max(int(result["deliveries"]), 1)
        messages = max(sent, 1)
        fanout_cpu = figures["server_cpu_s"]
        result["fanout_cpu_us_per_delivery"] = round(fanout_cpu / deliveries * 1e6, 3)
        per_process = [after - before for before, after in zip(cpu_before, cpu_after)]
        if len(per_process) > 1:  # Squall: the web node, then its processor
            result["web_cpu_us_per_delivery"] = round(per_process[0] / deliveries * 1e6, 3)
            result["web_cpu_ms_per_message"] = round(per_process[0] / messages * 1e3, 3)
            result["processor_cpu_ms_per_message"] = round(sum(per_process[1:]) / messages * 1e3, 3)
        total_cpu = fanout_cpu
        if isinstance(target, CeilingTarget) and sent:
            # The ceiling's fan-out stores nothing: add its processor's cost for as many messages.
            processor = await target.start("processor")
            try:
                stored = await _one_at_a_time_processor(processor, sent)
            finally:
                await processor.stop()
            result["processor_cpu_ms_per_message"] = stored["processor_cpu_ms_per_message"]
            result["ok"] = result["ok"] and stored["ok"]
            total_cpu += stored["processor_cpu_ms_per_message"] / 1e3 * sent
        result["cpu_us_per_delivery"] = round(total_cpu / deliveries * 1e6, 3)
        result["cpu_ms_per_message"] = round(total_cpu / messages * 1e3, 3)
        return result
    finally:
        for client in clients:
            client.close()
        await server.stop()


async def lone_processor(target: Target, options: Options) -> dict[str, Any]:
    server = await target.start("processor")
    try:
        # Warm up (first transaction, caches), then measure.
        await _one_at_a_time_processor(server, LONE_WARM_UP)
        count = max(LONE_WARM_UP, int(options.duration * 200))
        result = await _one_at_a_time_processor(server, count, first=LONE_WARM_UP)
        return result
    finally:
        await server.stop()


async def idle_joined(target: Target, options: Options, *, room_size: int | None = None) -> dict[str, Any]:
    """``room_size`` None puts every connection in one room."""
    n = options.clients or IDLE_CONNECTIONS
    size = room_size or n
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        nicks = [f"idle{i}" for i in range(n)]
        tokens = await target.tokens(server, nicks)
        await asyncio.sleep(IDLE_SETTLE_S)
        rss_before = _process_rss(server)
        setup = time.perf_counter()
        clients = await connect_many(
            lambda i: WSClient(server.host, target.ws_path(tokens[i])), server.host, server.port, n
        )
        for i, client in enumerate(clients):
            client.join(f"idle{i // size}")
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in clients)), SETUP_TIMEOUT * 10)
        setup_s = time.perf_counter() - setup
        await asyncio.sleep(IDLE_SETTLE_S)
        rss_after = _process_rss(server)
        errors = [e for c in clients for e in c.errors][:5]
        web = rss_after[0] - rss_before[0]
        tree = sum(rss_after) - sum(rss_before)
        return {
            "clients": n,
            "room_size": size,
            "setup_s": round(setup_s, 2),
            "rss_before": rss_before,
            "rss_after": rss_after,
            "web_bytes_per_conn": round(web / n),
            "web_kib_per_conn": round(web / n / 1024, 2),
            "kib_per_conn": round(tree / n / 1024, 2),
            "errors": [repr(e) for e in errors],
            "ok": not errors,
        }
    finally:
        for client in clients:
            client.close()
        await server.stop()


COST_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("lone-message", "ws", lone_message, "cpu_us_per_delivery", "CPU us/delivery", False,
                 "one message in flight to 2000 subscribers: CPU per delivery, web node + processor",
                 (("fanout_cpu_us_per_delivery", "fan-out only us"), ("cpu_ms_per_message", "ms/msg"),
                  ("web_cpu_ms_per_message", "web ms/msg"),
                  ("processor_cpu_ms_per_message", "processor ms/msg"))),
        Scenario("lone-processor", "processor", lone_processor, "processor_cpu_ms_per_message",
                 "CPU ms/msg", False, "one processor, one request at a time: CPU per message",
                 (("round_trip_p50_ms", "p50 ms"), ("round_trip_p99_ms", "p99 ms"))),
        Scenario("idle-10k", "ws", idle_joined, "web_kib_per_conn", "KiB/conn", False,
                 "web node RSS growth per idle WebSocket, 10,000 joined to one room",
                 (("kib_per_conn", "whole tree KiB"), ("setup_s", "set-up s"))),
    ]
}
