"""The scenarios: what each measures, against one target, in one fresh server.

Every scenario is a coroutine ``run(target, options) -> dict`` that starts its
own server (so no scenario inherits another's rooms, buffers or heap), drives
it, stops it, and returns flat, JSON-ready figures. ``latency`` is the one
exception: it runs every target at once, side by side (see there), and returns
such a dict per target. Each result carries ``ok`` and the counts behind it: a
run that lost, duplicated or reordered a message is reported as failed,
whatever its speed.

CPU is process CPU time (user + system, from the kernel), never wall time: a
server that shares its core with other programs is charged only for what it
ran. CPU *rates* are in *cores*: CPU seconds divided by wall seconds over the
measured interval, so 1.0 is one core saturated. A server's CPU is its whole
process tree: the web node and its processor (``web_cpu_s`` and
``processor_cpu_s`` apart); ``cpu_us_per_delivery`` divides the sum by the
deliveries, ``processor_cpu_us_per_message`` the processor's part by the
messages. ``loadgen_cpu`` near 1.0 means the load generator, not the server,
set the pace; the table flags it. ``server_wait`` and ``loadgen_wait`` are
the same kind of figure for the time each was runnable but had no CPU (another
program held its core): a server whose ``server_cpu + server_wait`` is near 1.0
always had work, and one whose sum is well below 1.0 sat idle waiting for a
round trip. ``other_cpu`` is what the rest of the machine used meanwhile, in
cores. The kernel counts CPU time in 10 ms steps: a figure over a short or
idle interval carries that much error.

Set-up is reported for every scenario, apart from the measured interval:
``setup_s`` is the wall time to connect every client and have every one joined
(``connect_s`` + ``join_s``); ``tokens_s``, getting a session token per client
(Squall only: the other targets take the nick as token), is not part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import os
import random
import socket
import string
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .link import connect_processor
from .loadgen import (
    HTTPClient,
    Poller,
    Tally,
    WSClient,
    connect_many,
    run_delay_seconds,
    self_cpu_seconds,
)
from . import queue as _queue
from .cross_node import cross_node
from .uploads import upload_latency
from .targets import COALESCING_CEILING, Running, Target

__all__ = ["FANOUT_WINDOW", "SCENARIOS", "Options", "Scenario", "machine_busy_seconds"]

STALL_TIMEOUT = 10.0  # seconds without a completed message before a run is declared stalled
SETUP_TIMEOUT = 120.0  # seconds for all clients to connect and join
# A fan-out sender waits for its oldest message to reach every subscriber, so
# the window must cover the round trip sender -> server -> slowest subscriber
# -> load generator's tally -> sender, or the server idles between bursts. 64
# messages hold 150 ms or more of a server's work at 500 subscribers, cost at
# most ~20 KiB per subscriber socket, and leave room for the read batching
# below (8, the first default, did not).
FANOUT_WINDOW = 64
# Subscribers of a fan-out wake for at most one read per this many bytes
# (SO_RCVLOWAT, about 7 messages), so that the load generator's per-read cost,
# larger than its per-frame cost, does not saturate its core before the
# server's. Only with a window this many messages wide or wider, so the mark is
# always reached: a window shorter than the batch would deadlock.
READ_BATCH_BYTES = 2048
READ_BATCH_MIN_WINDOW = 32
# The long-poll poster's window is its own: a bigger one would batch more
# messages into each poll response and change what the figure measures.
LONGPOLL_WINDOW = 8
BODY = "The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet, message "


@dataclasses.dataclass(frozen=True)
class Options:
    """How hard and how long to push; one object for every scenario of a run.

    ``clients`` replaces each scenario's own client count when set (the smoke
    test uses a handful). ``window`` is how many messages a fan-out sender may
    have that not every subscriber has received yet; ``longpoll_window`` is the
    same for the long-poll poster.
    """

    duration: float = 10.0
    # Longer than the others: one message is 2000 deliveries, so over 20 messages
    # p99 is the tail of the slowest one or two fan-outs, whatever the rest did.
    latency_duration: float = 60.0
    clients: int | None = None
    window: int = FANOUT_WINDOW
    longpoll_window: int = LONGPOLL_WINDOW
    idle_connections: int = 5000
    idle_room_size: int = 50
    filter_terms: int = 10_000
    filter_messages: int = 20_000
    search_messages: int = 1_000_000  # stored messages the search scenario searches (bench/search.py)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named measurement: the server kind it needs, and which figure is the headline.

    ``figure`` says in words what the headline is, for the printed table.
    ``reference`` is the target whose headline the others are divided by:
    the plain ceiling where one message is in flight at a time, the coalescing
    ceiling where several are (Squall then writes several per ``send``, and so
    does that ceiling; the plain one writes each alone).
    """

    name: str
    kind: str  # "ws", "longpoll", "processor", "processors", "cluster" (several Squall processes) or "local"
    # One target per run, or (``together``) every target in one run, results by target name.
    run: Callable[[Target, Options], Awaitable[dict[str, Any]]] | None
    metric: str
    unit: str
    higher_is_better: bool
    description: str
    details: tuple[tuple[str, str], ...] = ()  # (result key, label) shown beside the headline
    together: Callable[[list[Target], Options], Awaitable[dict[str, dict[str, Any]]]] | None = None
    figure: str = ""
    reference: str = "ceiling"


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    last = len(values) - 1
    return {
        f"p{p}_ms": round(values[min(last, int(last * p / 100 + 0.5))] * 1000, 3)
        for p in (50, 90, 99)
    } | {"max_ms": round(values[-1] * 1000, 3)}


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy (or stolen by the hypervisor)."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


class _Meter:
    """Wall time, server (web node, processor) and load-generator CPU and run-queue wait
    over one measured interval."""

    def __init__(self, server: Running) -> None:
        self._server = server
        self.start = time.perf_counter()
        self._server_cpu = server.cpu_split()
        self._self_cpu = self_cpu_seconds()
        self._server_wait = server.run_delay_seconds()
        self._self_wait = run_delay_seconds()
        self._machine = machine_busy_seconds()

    def figures(self, end: float | None = None) -> dict[str, float]:
        end = time.perf_counter() if end is None else end
        wall = max(time.perf_counter() - self.start, 1e-9)
        web_now, processor_now = self._server.cpu_split()
        web_cpu_s, processor_cpu_s = web_now - self._server_cpu[0], processor_now - self._server_cpu[1]
        server_cpu_s = web_cpu_s + processor_cpu_s
        self_cpu_s = self_cpu_seconds() - self._self_cpu
        figures = {
            "elapsed_s": round(max(end - self.start, 1e-9), 3),
            "server_cpu_s": round(server_cpu_s, 4),
            "web_cpu_s": round(web_cpu_s, 4),
            "server_cpu": round(server_cpu_s / wall, 3),
            "loadgen_cpu": round(self_cpu_s / wall, 3),
        }
        if self._server.processor is not None:
            figures["processor_cpu_s"] = round(processor_cpu_s, 4)
        server_wait, self_wait = self._server.run_delay_seconds(), run_delay_seconds()
        if server_wait is not None and self._server_wait is not None:
            figures["server_wait"] = round((server_wait - self._server_wait) / wall, 3)
        if self_wait is not None and self._self_wait is not None:
            figures["loadgen_wait"] = round((self_wait - self._self_wait) / wall, 3)
        machine = machine_busy_seconds()
        if machine is not None and self._machine is not None:
            other = machine - self._machine - server_cpu_s - self_cpu_s
            figures["other_cpu"] = round(max(0.0, other) / wall, 3)
        return figures


async def _ws_clients(
    target: Target,
    server: Running,
    nicks: list[str],
    rooms: list[str],
    make: Callable[[int, str], WSClient],
    timings: dict[str, float] | None = None,
) -> list[WSClient]:
    """Connect a client per nick, join client ``i`` to ``rooms[i]``, wait for every ``joined``.

    With ``timings``, record in it ``tokens_s``, ``connect_s``, ``join_s`` and
    ``setup_s`` (connect + join) in seconds.
    """
    started = time.perf_counter()
    tokens = await target.tokens(server, nicks)
    tokens_done = time.perf_counter()
    clients: list[WSClient] = await connect_many(
        lambda i: make(i, target.ws_path(tokens[i])), server.host, server.port, len(nicks)
    )
    connected = time.perf_counter()
    for client, room in zip(clients, rooms):
        client.join(room)
    await asyncio.wait_for(asyncio.gather(*(c.joined for c in clients)), SETUP_TIMEOUT)
    if timings is not None:
        timings |= _setup_timings(started, tokens_done, connected, time.perf_counter())
    return clients


def _setup_timings(started: float, tokens_done: float, connected: float, joined: float) -> dict[str, float]:
    """Set-up figures from the moments it began, had its tokens, had connected and had joined."""
    return {
        "tokens_s": round(tokens_done - started, 3),
        "connect_s": round(connected - tokens_done, 3),
        "join_s": round(joined - connected, 3),
        "setup_s": round(joined - tokens_done, 3),
    }


def _close_all(clients: list[Any]) -> None:
    for client in clients:
        client.close()


def _counts(clients: list[Any], expected_each: list[int]) -> dict[str, Any]:
    received = sum(c.received for c in clients)
    expected = sum(expected_each)
    duplicates = sum(c.duplicates for c in clients)
    gaps = sum(c.gaps for c in clients)
    errors = [e for c in clients for e in c.errors][:5]
    exact = all(c.received == e for c, e in zip(clients, expected_each))
    return {
        "deliveries": received,
        "expected": expected,
        "missing": expected - received,
        "duplicates": duplicates,
        "gaps": gaps,
        "errors": [repr(e) for e in errors],
        "ok": exact and duplicates == 0 and gaps == 0 and not errors,
    }


def _per_delivery(figures: dict[str, float], deliveries: int, messages: int) -> dict[str, float]:
    """Server (web node + processor) and load-generator CPU microseconds per delivery,
    and the processor's per message.

    Fairer than deliveries/s when two servers were not equally saturated: it
    does not care how long a server waited, only what each delivery cost it.
    """
    deliveries = max(deliveries, 1)
    wall = figures["elapsed_s"]
    result = {
        "cpu_us_per_delivery": round(figures["server_cpu_s"] / deliveries * 1e6, 3),
        "web_cpu_us_per_delivery": round(figures["web_cpu_s"] / deliveries * 1e6, 3),
        "loadgen_cpu_us_per_delivery": round(figures["loadgen_cpu"] * wall / deliveries * 1e6, 2),
    }
    if "processor_cpu_s" in figures:
        result["processor_cpu_us_per_message"] = round(figures["processor_cpu_s"] / max(messages, 1) * 1e6, 1)
    return result


# Fan-out: one room, N subscribers, one sender as fast as delivery allows.


async def _fanout(target: Target, options: Options, n: int) -> dict[str, Any]:
    n = options.clients or n
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        tally = Tally(n)
        nicks = [f"sub{i}" for i in range(n)] + ["sender"]
        timings: dict[str, float] = {}
        clients = await _ws_clients(
            target, server, nicks, ["fanout"] * (n + 1),
            lambda i, path: WSClient(server.host, path, tally=tally if i < n else None), timings,
        )
        subscribers, sender = clients[:n], clients[n]
        batching = options.window >= READ_BATCH_MIN_WINDOW
        if batching:
            for subscriber in subscribers:
                subscriber.batch_reads(READ_BATCH_BYTES)
        meter = _Meter(server)
        end = meter.start + options.duration
        sent = 0
        stalled = False
        while time.perf_counter() < end:
            if sent - tally.completed >= options.window:
                if not await tally.wait_completed(sent - options.window + 1, STALL_TIMEOUT):
                    stalled = True
                    break
                continue
            sender.send_message("fanout", f"m{sent}", BODY + str(sent))
            sent += 1
        if batching:
            # The last frames may not fill a batch.
            for subscriber in subscribers:
                subscriber.batch_reads(1)
        drained = not stalled and await tally.wait_completed(sent, STALL_TIMEOUT)
        figures = meter.figures(tally.completed_at if drained else None)
        result = {"clients": n, "messages": sent, **timings, **figures}
        result |= _counts(subscribers, [sent] * n)
        result["ok"] = result["ok"] and drained and not sender.errors
        result["deliveries_per_s"] = round(result["deliveries"] / figures["elapsed_s"])
        result["messages_per_s"] = round(sent / figures["elapsed_s"], 1)
        result |= _per_delivery(figures, int(result["deliveries"]), sent)
        result["window"] = options.window
        result["read_batch_bytes"] = READ_BATCH_BYTES if batching else 1
        return result
    finally:
        _close_all(clients)
        await server.stop()


async def fanout_500(target: Target, options: Options) -> dict[str, Any]:
    return await _fanout(target, options, 500)


async def fanout_2000(target: Target, options: Options) -> dict[str, Any]:
    return await _fanout(target, options, 2000)


class _SendClock:
    """Send → arrival latencies: the sender stamps each send by client id, its ``ack``
    names the seq, and subscribers append ``(seq, arrival time)`` to :attr:`arrivals`."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, float]] = []
        self._sent_at: dict[str, float] = {}
        self._seq_sent_at: dict[int, float] = {}

    @property
    def acked(self) -> int:
        return len(self._seq_sent_at)

    def send(self, sender: WSClient, room: str, cid: str, body: str) -> None:
        self._sent_at[cid] = time.perf_counter()
        sender.send_message(room, cid, body)

    def send_frame(self, sender: WSClient, frame: dict[str, Any]) -> None:
        """Any frame with an ``id`` that is acked like a send (a reaction, an edit)."""
        self._sent_at[str(frame["id"])] = time.perf_counter()
        sender.send_json(frame)

    def on_ack(self, client: WSClient, cid: str, seq: int) -> None:
        self._seq_sent_at[seq] = self._sent_at[cid]

    def latencies(self, first_arrival: int = 0) -> list[float]:
        """Seconds from send to arrival, for every arrival from ``first_arrival`` on whose ack came."""
        sent = self._seq_sent_at
        return [t - sent[seq] for seq, t in self.arrivals[first_arrival:] if seq in sent]

    def arrival_spread(self) -> dict[str, float]:
        """Per message, the first and the last subscriber's send -> arrival; their medians, in ms.

        The first arrival is the server's hops before its fan-out (the processor
        round trip, for a server that stores); last minus first is the fan-out
        loop itself.
        """
        sent = self._seq_sent_at
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for seq, at in self.arrivals:
            if seq not in sent:
                continue
            if seq not in first or at < first[seq]:
                first[seq] = at
            if at > last.get(seq, 0.0):
                last[seq] = at
        if not first:
            return {}
        firsts = sorted(first[seq] - sent[seq] for seq in first)
        lasts = sorted(last[seq] - sent[seq] for seq in last)
        return {
            "first_arrival_p50_ms": round(firsts[len(firsts) // 2] * 1000, 3),
            "last_arrival_p50_ms": round(lasts[len(lasts) // 2] * 1000, 3),
        }


def _timed_clients(
    target: Target, server: Running, n: int, room: str, tally: Tally, clock: _SendClock,
    on_ack: Callable[[WSClient, str, int], None], timings: dict[str, float] | None = None,
) -> Awaitable[list[WSClient]]:
    """``n`` subscribers that stamp arrivals on ``clock``, then a sender whose acks go to ``on_ack``."""
    return _ws_clients(
        target, server, [f"sub{i}" for i in range(n)] + ["sender"], [room] * (n + 1),
        lambda i, path: (
            WSClient(server.host, path, tally=tally, latencies=clock.arrivals) if i < n
            else WSClient(server.host, path, on_ack=on_ack)
        ),
        timings,
    )


# One in flight: one room, N subscribers, and the sender sends its next message
# only once every subscriber has the last one and its ack is back. Nothing can
# be coalesced, so this is the per-message cost of a server: CPU per delivery,
# and send -> arrival latencies back to back. The targets run one after the
# other (the `latency` scenario is the side-by-side one): CPU per delivery does
# not mind, the latencies carry the machine's drift.


class _OneAtATime:
    """The loop of the one-in-flight scenarios: each send waits until every
    subscriber has it and its ack is back."""

    def __init__(self, n: int) -> None:
        self.tally = Tally(n)
        self.clock = _SendClock()
        self.sent = 0
        self._acked: asyncio.Future[None] | None = None

    def on_ack(self, client: WSClient, cid: str, seq: int) -> None:
        self.clock.on_ack(client, cid, seq)
        if self._acked is not None and not self._acked.done():
            self._acked.set_result(None)

    async def step(self, send: Callable[[], None]) -> bool:
        """Send one (``send()``) and wait for its deliveries and its ack; False if it stalled."""
        self._acked = asyncio.get_running_loop().create_future()
        send()
        self.sent += 1
        if not await self.tally.wait_completed(self.sent, STALL_TIMEOUT):
            return False
        try:
            await asyncio.wait_for(self._acked, STALL_TIMEOUT)
        except TimeoutError:
            return False
        return True


async def _one_in_flight(target: Target, options: Options, n: int) -> dict[str, Any]:
    n = options.clients or n
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        solo = _OneAtATime(n)
        clock = solo.clock
        timings: dict[str, float] = {}
        clients = await _timed_clients(target, server, n, "solo", solo.tally, clock, solo.on_ack, timings)
        sender = clients[n]
        stalled = False
        with _collector_paused():
            meter = _Meter(server)
            end = meter.start + options.duration
            while time.perf_counter() < end:
                if not await solo.step(lambda: clock.send(sender, "solo", f"m{solo.sent}", BODY + str(solo.sent))):
                    stalled = True
                    break
            figures = meter.figures()
        sent = solo.sent
        latencies = clock.latencies()
        result = {"clients": n, "messages": sent, **timings, **figures}
        result |= _counts(clients[:n], [sent] * n)
        result["ok"] = result["ok"] and not stalled and not sender.errors and len(latencies) == len(clock.arrivals)
        result["messages_per_s"] = round(sent / figures["elapsed_s"], 1)
        result["deliveries_per_s"] = round(result["deliveries"] / figures["elapsed_s"])
        result |= _per_delivery(figures, int(result["deliveries"]), sent)
        result |= _percentiles(latencies) | clock.arrival_spread()
        return result
    finally:
        _close_all(clients)
        await server.stop()


async def one_in_flight_500(target: Target, options: Options) -> dict[str, Any]:
    return await _one_in_flight(target, options, 500)


async def one_in_flight_2000(target: Target, options: Options) -> dict[str, Any]:
    return await _one_in_flight(target, options, 2000)


# Message events: one room, N subscribers, ONE in flight as in one-in-flight;
# first new messages, then reactions (react and unreact by turns) to the first
# message. A change is a room event like a message (docs/protocol.md,
# "Changes"): the same path through processor, store, bus and fan-out, and a
# frame of about the same size (the target's state, here a short message with
# one reaction). So per delivery a reaction should cost what a message does;
# the headline is the ratio.

EVENTS_EMOJI = "\U0001f44d"


async def _events(target: Target, options: Options, n: int) -> dict[str, Any]:
    n = options.clients or n
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        solo = _OneAtATime(n)
        clock = solo.clock
        timings: dict[str, float] = {}
        clients = await _timed_clients(target, server, n, "events", solo.tally, clock, solo.on_ack, timings)
        sender = clients[n]
        stalled = False
        phases: dict[str, dict[str, Any]] = {}

        def send_message() -> None:
            clock.send(sender, "events", f"m{solo.sent}", BODY + str(solo.sent))

        def send_reaction(first: int) -> None:
            kind = "react" if (solo.sent - first) % 2 == 0 else "unreact"
            clock.send_frame(sender, {
                "type": kind, "room": "events", "id": f"c{solo.sent}", "target": 1, "emoji": EVENTS_EMOJI,
            })

        with _collector_paused():
            for phase in ("message", "change"):
                meter = _Meter(server)
                end = meter.start + options.duration / 2
                first_sent, first_arrival = solo.sent, len(clock.arrivals)
                send = send_message if phase == "message" else functools.partial(send_reaction, first_sent)
                while time.perf_counter() < end and not stalled:
                    stalled = not await solo.step(send)
                figures = meter.figures()
                count = solo.sent - first_sent
                phases[phase] = {
                    "messages": count, **figures, **_per_delivery(figures, count * n, count),
                    **_percentiles(clock.latencies(first_arrival)),
                }
        sent = solo.sent
        result = {"clients": n, "messages": sent, **timings}
        result |= _counts(clients[:n], [sent] * n)
        result["ok"] = result["ok"] and not stalled and not sender.errors and phases["change"]["messages"] > 0
        for phase, figures in phases.items():
            for key in ("cpu_us_per_delivery", "web_cpu_us_per_delivery", "p50_ms", "p99_ms", "messages"):
                if key in figures:
                    result[f"{phase}_{key}"] = figures[key]
        total_s = sum(figures["elapsed_s"] for figures in phases.values())
        total = {
            "elapsed_s": total_s,
            "server_cpu_s": sum(f["server_cpu_s"] for f in phases.values()),
            "web_cpu_s": sum(f["web_cpu_s"] for f in phases.values()),
            "loadgen_cpu": sum(f["loadgen_cpu"] * f["elapsed_s"] for f in phases.values()) / max(total_s, 1e-9),
        }
        if all("processor_cpu_s" in f for f in phases.values()):
            total["processor_cpu_s"] = sum(f["processor_cpu_s"] for f in phases.values())
            result["processor_cpu_s"] = round(total["processor_cpu_s"], 4)
        result |= _per_delivery(total, int(result["deliveries"]), sent)
        result["change_vs_message"] = round(
            phases["change"]["cpu_us_per_delivery"] / max(phases["message"]["cpu_us_per_delivery"], 1e-9), 3
        )
        return result
    finally:
        _close_all(clients)
        await server.stop()


async def events_2000(target: Target, options: Options) -> dict[str, Any]:
    return await _events(target, options, 2000)


# Latency: 2 messages a second to 2000 subscribers, send -> arrival at each.
#
# Every target runs at once, each with its own subscribers, and their messages
# take turns: turns are 1 / (rate x targets) apart and a fan-out takes tens of
# milliseconds, so no two overlap, and each server has its core to itself while
# it fans out. All targets thus meet the same moments of a shared machine. One
# after the other, they did not: a 2000-member fan-out loop here took 18 ms for
# stretches of several seconds and then 27 ms, for the ceiling as for Squall,
# and the ratio of two sequential runs measured that drift as much as the servers.


class _LatencySide:
    """One target's server, subscribers and sender in the side-by-side latency run."""

    def __init__(self, target: Target, server: Running, n: int, count: int) -> None:
        self.target = target
        self.server = server
        self.n = n
        self.count = count
        self.tally = Tally(n)
        self.clock = _SendClock()
        self.clients: list[WSClient] = []
        self.all_acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.meter: _Meter | None = None
        self.timings: dict[str, float] = {}

    def _on_ack(self, client: WSClient, cid: str, seq: int) -> None:
        self.clock.on_ack(client, cid, seq)
        if self.clock.acked == self.count and not self.all_acked.done():
            self.all_acked.set_result(None)

    async def connect(self) -> None:
        self.clients = await _timed_clients(
            self.target, self.server, self.n, "latency", self.tally, self.clock, self._on_ack, self.timings
        )

    def send(self, k: int) -> None:
        self.clock.send(self.clients[self.n], "latency", f"m{k}", BODY + str(k))

    async def drain(self) -> bool:
        """Wait for every message to reach every subscriber and be acknowledged."""
        if not await self.tally.wait_completed(self.count, STALL_TIMEOUT):
            return False
        try:
            await asyncio.wait_for(self.all_acked, STALL_TIMEOUT)
        except TimeoutError:
            return False
        return True

    def result(self, drained: bool) -> dict[str, Any]:
        assert self.meter is not None
        figures = self.meter.figures()
        latencies = self.clock.latencies()
        result = {"clients": self.n, "messages": self.count, **self.timings, **figures, **_percentiles(latencies)}
        result |= _counts(self.clients[: self.n], [self.count] * self.n)
        result["ok"] = result["ok"] and drained and len(latencies) == len(self.clock.arrivals)
        result |= _per_delivery(figures, int(result["deliveries"]), self.count)
        return result


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection in the load generator meanwhile: it keeps every
    arrival, and a collection walking them all (12 ms at 120,000 of them, with
    two targets' clients) would hold up the reads of whichever target has its turn."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def latency(
    targets: list[Target], options: Options, *, rate: float = 2.0
) -> dict[str, dict[str, Any]]:
    n = options.clients or 2000
    count = max(1, int(options.latency_duration * rate))
    sides: list[_LatencySide] = []
    try:
        for target in targets:
            side = _LatencySide(target, await target.start("ws"), n, count)
            sides.append(side)
            await side.connect()
        turn = 1.0 / (rate * len(sides))
        with _collector_paused():
            for side in sides:
                side.meter = _Meter(side.server)
            start = time.perf_counter()
            for k in range(count):
                # The order rotates, so that each target follows each other one
                # equally often: what a server leaves running after its fan-out
                # (its garbage collector, say) then slows every target alike.
                shift = k % len(sides)
                for i, side in enumerate(sides[shift:] + sides[:shift]):
                    await asyncio.sleep(max(0.0, start + (k * len(sides) + i) * turn - time.perf_counter()))
                    side.send(k)
            drained = [await side.drain() for side in sides]
        together = [side.target.name for side in sides]
        return {
            side.target.name: side.result(ok) | {"rate": rate, "side_by_side": together}
            for side, ok in zip(sides, drained)
        }
    finally:
        for side in sides:
            _close_all(side.clients)
            await side.server.stop()


# Many small rooms: everyone talks, each client one message in flight.


async def rooms(target: Target, options: Options, *, room_size: int = 10) -> dict[str, Any]:
    n = options.clients or 2000
    room_size = min(room_size, n)
    room_count = max(1, n // room_size)
    n = room_count * room_size
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        tallies = [Tally(room_size) for _ in range(room_count)]
        sent = [0] * room_count
        running = True

        def send_next(client: WSClient, index: int) -> None:
            room = index % room_count
            sent[room] += 1
            client.send_message(client.room, f"m{index}-{sent[room]}", BODY + str(sent[room]))

        def on_ack(client: WSClient, cid: str, seq: int) -> None:
            if running:
                send_next(client, int(cid[1:].partition("-")[0]))

        names = [f"room{i % room_count}" for i in range(n)]
        timings: dict[str, float] = {}
        clients = await _ws_clients(
            target, server, [f"user{i}" for i in range(n)], names,
            lambda i, path: WSClient(server.host, path, tally=tallies[i % room_count], on_ack=on_ack), timings,
        )
        meter = _Meter(server)
        for i, client in enumerate(clients):
            send_next(client, i)
        await asyncio.sleep(options.duration)
        running = False
        drained = all(await asyncio.gather(*(t.wait_completed(s, STALL_TIMEOUT) for t, s in zip(tallies, sent))))
        figures = meter.figures(max(t.completed_at for t in tallies) if drained else None)
        messages = sum(sent)
        result = {"clients": n, "rooms": room_count, "room_size": room_size, "messages": messages,
                  **timings, **figures}
        result |= _counts(clients, [sent[i % room_count] for i in range(n)])
        result["ok"] = result["ok"] and drained
        result["deliveries_per_s"] = round(result["deliveries"] / figures["elapsed_s"])
        result["messages_per_s"] = round(messages / figures["elapsed_s"], 1)
        result |= _per_delivery(figures, int(result["deliveries"]), messages)
        return result
    finally:
        _close_all(clients)
        await server.stop()


# Slow client: healthy subscribers at full speed, alone and then beside one
# client that never reads.


SLOW_BODY = "x" * 1000  # big enough that the never-reading client's backlog outgrows the kernel's buffers
WARM_UP_S = 1.0  # seconds of traffic before the first measured phase (joins' presence storm, first writes)
SLOTH_RECEIVE_BUFFER = 64 * 1024  # SO_RCVBUF of the client that never reads
SLOTH_CLOSE_WAIT_S = 2.0  # seconds the never-reading client, reading again, waits to see a close


async def _full_speed(
    sender: WSClient, tally: Tally, room: str, sent: int, seconds: float, window: int, clock: _SendClock,
) -> tuple[int, bool]:
    """Send to ``room`` for ``seconds`` as fast as every healthy member keeps up;
    returns how many messages have been sent in all, and whether delivery stalled."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if sent - tally.completed >= window:
            if not await tally.wait_completed(sent - window + 1, STALL_TIMEOUT):
                return sent, True
            continue
        clock.send(sender, room, f"m{sent}", SLOW_BODY + str(sent))
        sent += 1
    return sent, not await tally.wait_completed(sent, STALL_TIMEOUT)


async def _sloth(target: Target, server: Running, token: str, room: str) -> WSClient:
    """A client that joins ``room`` through a 64 KiB receive buffer, then stops reading.

    (Smaller buffers stall loopback: with a window under one MSS the receiver
    never advertises the space it frees, and the sender falls back to probes.)
    """
    [sloth] = await connect_many(
        lambda i: WSClient(server.host, target.ws_path(token)), server.host, server.port, 1
    )
    assert isinstance(sloth, WSClient) and sloth.transport is not None
    sloth.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOTH_RECEIVE_BUFFER)
    sloth.join(room)
    await asyncio.wait_for(sloth.joined, SETUP_TIMEOUT)
    sloth.transport.pause_reading()
    return sloth


async def slow_client(target: Target, options: Options) -> dict[str, Any]:
    """Three phases: healthy subscribers alone, beside a client that never reads, alone
    again. Comparing the middle one with the mean of the others cancels any drift
    (a server or load generator getting faster or slower as the run goes on)."""
    n = options.clients or 200
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        tally = Tally(n)
        clock = _SendClock()
        timings: dict[str, float] = {}
        clients = await _timed_clients(target, server, n, "slow", tally, clock, clock.on_ack, timings)
        [sloth_token] = await target.tokens(server, ["sloth"])
        sender = clients[n]
        phase = options.duration / 3
        phases: dict[str, dict[str, float]] = {}
        sloth_closed: bool | None = None
        sent, stalled = await _full_speed(sender, tally, "slow", 0, WARM_UP_S, options.window, clock)
        for name in ("alone", "with_slow", "alone_again"):
            if stalled:
                break
            sloth = await _sloth(target, server, sloth_token, "slow") if name == "with_slow" else None
            first, arrivals_from, rss_before = sent, len(clock.arrivals), server.rss()
            meter = _Meter(server)
            sent, stalled = await _full_speed(sender, tally, "slow", sent, phase, options.window, clock)
            figures = meter.figures(tally.completed_at)
            phases[name] = {
                "messages": sent - first,
                "deliveries_per_s": round((sent - first) * n / figures["elapsed_s"]),
                "rss_growth_mib": round((server.rss() - rss_before) / 2**20, 1),
                **figures, **_percentiles(clock.latencies(arrivals_from)),
            }
            if sloth is not None:
                # Did the server cut it off? Reading again shows a close, or only a backlog.
                assert sloth.transport is not None
                sloth.transport.resume_reading()
                try:
                    await asyncio.wait_for(asyncio.shield(sloth.closed), SLOTH_CLOSE_WAIT_S)
                    sloth_closed = True
                except TimeoutError:
                    sloth_closed = False
                sloth.close()
        result: dict[str, Any] = {"clients": n, "messages": sent, **timings, **phases,
                                  "slow_client_closed": sloth_closed}
        result |= _counts(clients[:n], [sent] * n)
        result["ok"] = result["ok"] and not stalled
        if len(phases) == 3:
            alone = [phases["alone"], phases["alone_again"]]
            with_slow = phases["with_slow"]
            alone_rate = sum(p["deliveries_per_s"] for p in alone) / 2
            result["deliveries_per_s"] = with_slow["deliveries_per_s"]
            result["vs_alone"] = round(with_slow["deliveries_per_s"] / max(alone_rate, 1), 3)
            result["p99_ms"] = with_slow.get("p99_ms")
            result["p99_ms_alone"] = round(sum(p.get("p99_ms", 0.0) for p in alone) / 2, 3)
            result["rss_growth_mib"] = with_slow["rss_growth_mib"]
            for key in ("server_cpu", "loadgen_cpu", "server_wait", "loadgen_wait", "other_cpu"):
                if key in with_slow:
                    result[key] = with_slow[key]
            result |= _per_delivery(with_slow, int(with_slow["messages"] * n), int(with_slow["messages"]))
        return result
    finally:
        _close_all(clients)
        await server.stop()


# Idle memory: server RSS growth per idle connection joined to a room.


async def idle_memory(target: Target, options: Options) -> dict[str, Any]:
    n = options.clients or options.idle_connections
    server = await target.start("ws")
    clients: list[WSClient] = []
    try:
        nicks = [f"idle{i}" for i in range(n)]
        rss_start = server.rss()
        started = time.perf_counter()
        tokens = await target.tokens(server, nicks)
        tokens_done = time.perf_counter()
        rss_before = server.rss()
        clients = await connect_many(
            lambda i: WSClient(server.host, target.ws_path(tokens[i])), server.host, server.port, n
        )
        connected = time.perf_counter()
        for i, client in enumerate(clients):
            client.join(f"idle{i // options.idle_room_size}")
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in clients)), SETUP_TIMEOUT)
        timings = _setup_timings(started, tokens_done, connected, time.perf_counter())
        # Let joins, presence and any lazy allocation settle before reading RSS.
        await asyncio.sleep(1.0)
        rss_after = server.rss()
        errors = [e for c in clients for e in c.errors][:5]
        return {
            "clients": n,
            "room_size": options.idle_room_size,
            **timings,
            "rss_start": rss_start,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "sessions_bytes_per_conn": round((rss_before - rss_start) / n),
            "bytes_per_conn": round((rss_after - rss_before) / n),
            "kib_per_conn": round((rss_after - rss_before) / n / 1024, 2),
            "processes": server.processes(),
            "errors": [repr(e) for e in errors],
            "ok": not errors,
        }
    finally:
        _close_all(clients)
        await server.stop()


# Long-poll: N pollers on one room, CPU per delivery.


async def longpoll(target: Target, options: Options) -> dict[str, Any]:
    n = options.clients or 500
    server = await target.start("longpoll")
    pollers: list[Poller] = []
    sender: HTTPClient | None = None
    try:
        started = time.perf_counter()
        tokens = await target.tokens(server, [f"poll{i}" for i in range(n)] + ["sender"])
        tokens_done = time.perf_counter()
        sender = await HTTPClient.connect(server.host, server.port)
        status, answer = await sender.request("GET", "/api/rooms/lp/messages?since=0&wait=0", token=tokens[n])
        if status != 200:
            raise RuntimeError(f"long-poll GET answered {status}: {answer!r}")
        since = answer["seq"]
        tally = Tally(n)
        host = f"{server.host}:{server.port}"
        connecting = time.perf_counter()
        pollers = await connect_many(
            lambda i: Poller(host, "lp", tokens[i], since, tally), server.host, server.port, n
        )
        # A poller has nothing to join: it is set up once connected, its first poll sent.
        connected = time.perf_counter()
        timings = {"tokens_s": round(tokens_done - started, 3), "connect_s": round(connected - connecting, 3),
                   "join_s": 0.0, "setup_s": round(connected - connecting, 3)}
        meter = _Meter(server)
        end = meter.start + options.duration
        sent = 0
        stalled = False
        while time.perf_counter() < end:
            if sent - tally.completed >= options.longpoll_window:
                if not await tally.wait_completed(sent - options.longpoll_window + 1, STALL_TIMEOUT):
                    stalled = True
                    break
                continue
            status, answer = await sender.request(
                "POST", "/api/rooms/lp/messages", {"body": BODY + str(sent), "id": f"m{sent}"}, token=tokens[n]
            )
            if status != 200:
                raise RuntimeError(f"long-poll POST answered {status}: {answer!r}")
            sent += 1
        drained = not stalled and await tally.wait_completed(sent, STALL_TIMEOUT)
        figures = meter.figures(tally.completed_at if drained else None)
        result = {"clients": n, "messages": sent, **timings, **figures}
        result |= _counts(pollers, [sent] * n)
        result["ok"] = result["ok"] and drained
        result["responses"] = sum(p.responses for p in pollers)
        result["deliveries_per_s"] = round(result["deliveries"] / figures["elapsed_s"])
        result |= _per_delivery(figures, int(result["deliveries"]), sent)
        return result
    finally:
        _close_all(pollers)
        if sender is not None:
            await sender.close()
        await server.stop()


# Processor: messages stored and acknowledged per second, then latency at 100/s.


async def processor(target: Target, options: Options, *, window: int = 256, rate: float = 100.0) -> dict[str, Any]:
    server = await target.start("processor")
    client = None
    try:
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        answered = {"processed": 0, "rejected": 0}
        reasons: list[Any] = []
        progress: asyncio.Future[None] | None = None

        def on_answers(answers: list[dict[str, Any]], now: float) -> None:
            nonlocal progress
            for answer in answers:
                op = answer.get("op")
                answered["processed" if op == "processed" else "rejected"] += 1
                if op != "processed" and len(reasons) < 5:
                    reasons.append(answer)
                started = sent_at.pop(answer.get("ref", -1), None)
                if started is not None:
                    latencies.append(now - started)
            if progress is not None and not progress.done():
                progress.set_result(None)

        loop = asyncio.get_running_loop()
        connecting = time.perf_counter()
        client = await connect_processor(server.host, server.port, on_answers)
        setup_s = round(time.perf_counter() - connecting, 3)

        def send(ref: int, track: bool) -> None:
            assert client is not None
            if track:
                sent_at[ref] = time.perf_counter()
            client.process(ref, f"room{ref % 10}", f"user{ref % 50}", f"m{ref}", BODY + str(ref))

        # Throughput: keep `window` requests in flight.
        meter = _Meter(server)
        end = meter.start + options.duration
        ref = 0
        while time.perf_counter() < end:
            while ref - sum(answered.values()) < window:
                send(ref, False)
                ref += 1
            progress = loop.create_future()
            await asyncio.wait_for(progress, STALL_TIMEOUT)
        while sum(answered.values()) < ref:
            progress = loop.create_future()
            await asyncio.wait_for(progress, STALL_TIMEOUT)
        throughput = meter.figures()
        total = ref
        processed = answered["processed"]
        # Latency and CPU per message: a steady `rate` per second, one at a time.
        count = max(1, int(min(options.duration, 5.0) * rate))
        one_at_a_time = _Meter(server)
        start = time.perf_counter()
        for k in range(count):
            await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
            send(ref, True)
            ref += 1
        while sum(answered.values()) < ref:
            progress = loop.create_future()
            await asyncio.wait_for(progress, STALL_TIMEOUT)
        paced = one_at_a_time.figures()
        return {
            "messages": total,
            "processed": processed,
            "rejected": answered["rejected"],
            "msgs_per_s": round(processed / throughput["elapsed_s"]),
            "setup_s": setup_s,
            **throughput,
            "processor_cpu_us_per_message": round(throughput["server_cpu_s"] / max(total, 1) * 1e6, 1),
            "latency_rate": rate,
            "latency_messages": count,
            "cpu_us_per_message_at_rate": round(paced["server_cpu_s"] / count * 1e6, 1),
            **_percentiles(latencies),
            "reasons": [repr(r) for r in reasons],
            "ok": answered["rejected"] == 0 and answered["processed"] == ref,
        }
    finally:
        if client is not None:
            client.close()
        await server.stop()



async def processor_postgres(target: Target, options: Options) -> dict[str, Any]:
    """``processor`` on the PostgreSQL store, SQLite beside it: bench/store_pg.py."""
    from .store_pg import processor_postgres as run

    return await run(target, options)


# Keyword filter: MB/s through 10,000 terms, against str.lower() on the same text.


def _filter_corpus(options: Options) -> tuple[list[str], list[str]]:
    rng = random.Random(1)
    letters = string.ascii_lowercase
    terms = sorted({"".join(rng.choices(letters, k=rng.randint(5, 12))) for _ in range(options.filter_terms * 2)})
    terms = terms[: options.filter_terms]
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(5000)]
    messages = []
    for _ in range(options.filter_messages):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 24))]
        if rng.random() < 0.05:
            words.insert(rng.randrange(len(words)), rng.choice(terms).upper())
        messages.append(" ".join(words).capitalize())
    return terms, messages


def _mb_per_s(fn: Callable[[str], object], messages: list[str], size: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for message in messages:
            fn(message)
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


async def keyword_filter(target: Target, options: Options) -> dict[str, Any]:
    """``target`` is only a label here: this runs in-process, off the event loop's hot path."""
    terms, messages = _filter_corpus(options)
    size = sum(len(m.encode()) for m in messages)
    result: dict[str, Any] = {"terms": len(terms), "messages": len(messages), "bytes": size}
    result["lower_mb_per_s"] = round(_mb_per_s(str.lower, messages, size), 1)
    find: Callable[[str], object]
    building = time.perf_counter()  # the filter's set-up: building its automaton from the terms
    match target.name:
        case "ceiling":
            find = _reference_filter(terms)
            result["setup_s"] = round(time.perf_counter() - building, 3)
            result["implementation"] = "pyahocorasick over str.lower()"
            hits = sum(1 for m in messages if find(m))
        case "squall":
            find = _squall_filter(terms)
            result["setup_s"] = round(time.perf_counter() - building, 3)
            result["implementation"] = "squall.pipeline.filter.KeywordFilter.apply"
            hits = sum(1 for m in messages if find(m) != m)
        case _:
            raise ValueError(f"no keyword filter for target {target.name!r}")
    result["hits"] = hits
    result["mb_per_s"] = round(_mb_per_s(find, messages, size), 1)
    result["vs_lower"] = round(result["mb_per_s"] / result["lower_mb_per_s"], 3)
    result["ok"] = hits > 0
    return result


def _reference_filter(terms: list[str]) -> Callable[[str], list[str]]:
    import ahocorasick  # type: ignore[import-not-found, unused-ignore]

    automaton = ahocorasick.Automaton()
    for term in terms:
        automaton.add_word(term, term)
    automaton.make_automaton()

    def find(message: str) -> list[str]:
        return [term for _, term in automaton.iter(message.lower())]

    return find


def _squall_filter(terms: list[str]) -> Callable[[str], object]:
    # The filter's API belongs to squall/pipeline; this adapter is the one place
    # that has to follow it. `apply` is what the processor calls per message
    # (normalise, scan, mask); every term masks, so nothing is rejected.
    from squall.pipeline.filter import KeywordFilter

    return KeywordFilter.from_words(terms).apply


# Per delivery: the server's whole tree (web node + processor), process CPU time.
_CPU_PER_DELIVERY = "CPU us per delivery: web node + processor CPU time / deliveries"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("one-in-flight-500", "ws", one_in_flight_500, "cpu_us_per_delivery", "CPU us/delivery", False,
                 "one room, 500 subscribers, ONE message in flight: the next is sent once every "
                 "subscriber has the last and its ack is back",
                 (("web_cpu_us_per_delivery", "web node us/deliv"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                  ("first_arrival_p50_ms", "first arrival p50 ms"), ("messages_per_s", "msgs/s")),
                 figure=_CPU_PER_DELIVERY + "; p50/p99: send -> arrival over every (message, subscriber)"),
        Scenario("one-in-flight-2000", "ws", one_in_flight_2000, "cpu_us_per_delivery", "CPU us/delivery", False,
                 "one room, 2000 subscribers, ONE message in flight: the next is sent once every "
                 "subscriber has the last and its ack is back",
                 (("web_cpu_us_per_delivery", "web node us/deliv"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                  ("first_arrival_p50_ms", "first arrival p50 ms"), ("messages_per_s", "msgs/s")),
                 figure=_CPU_PER_DELIVERY + "; p50/p99: send -> arrival over every (message, subscriber)"),
        Scenario("fanout-500", "ws", fanout_500, "deliveries_per_s", "deliveries/s", True,
                 "one room, 500 subscribers, one sender keeping up to --window (64) messages in flight",
                 (("messages_per_s", "msgs/s"),),
                 figure="deliveries/s: subscribers x messages / time from first send to last delivery",
                 reference=COALESCING_CEILING),
        Scenario("fanout-2000", "ws", fanout_2000, "deliveries_per_s", "deliveries/s", True,
                 "one room, 2000 subscribers, one sender keeping up to --window (64) messages in flight",
                 (("messages_per_s", "msgs/s"),),
                 figure="deliveries/s: subscribers x messages / time from first send to last delivery",
                 reference=COALESCING_CEILING),
        Scenario("events-2000", "events", events_2000, "change_vs_message", "x message", False,
                 "one room, 2000 subscribers, ONE in flight: new messages, then reactions to the first "
                 "(react/unreact by turns), half the time each",
                 (("message_cpu_us_per_delivery", "message us/deliv"),
                  ("change_cpu_us_per_delivery", "reaction us/deliv"),
                  ("message_p50_ms", "message p50 ms"), ("change_p50_ms", "reaction p50 ms")),
                 figure="CPU us per delivery of a reaction / of a new message (web node + processor);"
                        " goal: at most about 1",
                 reference="squall"),
        Scenario("latency", "ws", None, "p99_ms", "ms p99", False,
                 "2 msg/s to 2000 subscribers, one message at a time; targets side by side, taking turns",
                 (("p50_ms", "p50 ms"), ("max_ms", "max ms")), together=latency,
                 figure="p99 of send -> arrival over every (message, subscriber)"),
        Scenario("cross-node", "cluster", cross_node, "extra_p50_ms", "ms extra p50", False,
                 "2 msg/s to 2000 members on the sender's web node vs 2000 on another (Redis bus)",
                 (("same_p50_ms", "same p50 ms"), ("other_p50_ms", "other p50 ms"),
                  ("other_p99_ms", "other p99 ms"), ("hop_p50_ms", "bus hop alone p50 ms")),
                 figure="p50 send -> arrival on the other node minus on the sender's node"),
        Scenario("uploads", "cluster", upload_latency, "p99_ms", "ms p99", False,
                 "a pinger's send -> echo every 20 ms while another client uploads 50 MiB "
                 "(and a 12 Mpx photo, re-encoded), then is quiet as long, in turn",
                 (("p50_ms", "p50 ms"), ("alone_p50_ms", "alone p50 ms"), ("alone_p99_ms", "alone p99 ms"),
                  ("max_ms", "max ms"), ("pong_p99_ms", "web-node pong p99 ms"),
                  ("pong_alone_p99_ms", "alone pong p99 ms"),
                  ("upload_mib_per_s", "upload MiB/s"), ("photo_s", "photo upload s"),
                  ("uploads", "50 MiB uploads")),
                 figure="p99 of a lone pinger's send -> echo while uploads stream (alone: before them)"),
        Scenario("rooms", "ws", rooms, "deliveries_per_s", "deliveries/s", True,
                 "2000 clients in 200 rooms of 10, everyone talking, one message in flight per client "
                 "(up to 10 per room)",
                 (("messages_per_s", "msgs/s"),),
                 figure="deliveries/s over all rooms", reference=COALESCING_CEILING),
        Scenario("slow-client", "ws", slow_client, "vs_alone", "x alone", True,
                 "200 subscribers at full speed (window 64) beside 1 client that never reads, vs alone",
                 (("p99_ms", "p99 ms"), ("p99_ms_alone", "alone p99 ms"),
                  ("rss_growth_mib", "RSS growth MiB"), ("slow_client_closed", "slow client closed")),
                 figure="healthy deliveries/s beside the slow client / alone (its own ratio: x ref is not a goal)",
                 reference=COALESCING_CEILING),
        Scenario("idle-memory", "ws", idle_memory, "kib_per_conn", "KiB/conn", False,
                 "server RSS growth per idle WebSocket joined to a room (5000 connections, rooms of 50)",
                 (("clients", "connections"), ("processes", "processes")),
                 figure="KiB of RSS (web node + processor) per joined connection"),
        Scenario("longpoll", "longpoll", longpoll, "cpu_us_per_delivery", "CPU us/delivery", False,
                 "500 long-pollers on one room, one poster keeping up to 8 messages in flight",
                 (("deliveries_per_s", "deliveries/s"),),
                 figure=_CPU_PER_DELIVERY, reference=COALESCING_CEILING),
        Scenario("processor", "processor", processor, "msgs_per_s", "msgs/s", True,
                 "one processor process: 256 pipelined requests stored and answered, then one at a time at 100/s",
                 (("p50_ms", "p50 ms at 100/s"), ("p99_ms", "p99 ms at 100/s"),
                  ("cpu_us_per_message_at_rate", "CPU us/msg at 100/s")),
                 figure="messages stored (SQLite, fsync'd) and answered per second, pipelined"),
        Scenario("queue", "processors", _queue.processors, "msgs_per_s", "msgs/s", True,
                 "squall processor x1 and x2 through Redis Streams, and over TCP links beside it",
                 (("queue_2_msgs_per_s", "queue x2 msgs/s"), ("queue_factor", "queue x2/x1"),
                  ("tcp_1_msgs_per_s", "TCP x1 msgs/s"), ("tcp_2_msgs_per_s", "TCP x2 msgs/s"),
                  ("tcp_factor", "TCP x2/x1"), ("queue_1_p99_ms", "queue p99 ms at 100/s"),
                  ("tcp_1_p99_ms", "TCP p99 ms at 100/s"),
                  ("queue_1_processor_us_per_msg", "queue processor CPU us/msg"),
                  ("queue_1_redis_us_per_msg", "Redis CPU us/msg"),
                  ("tcp_1_processor_us_per_msg", "TCP processor CPU us/msg")),
                 figure="messages stored and answered per second through the queue with one processor"),
        Scenario("processor-postgres", "processor", processor_postgres, "msgs_per_s", "msgs/s", True,
                 "the processor scenario on the PostgreSQL store; the SQLite figures beside it",
                 (("p99_ms", "p99 ms at 100/s"), ("pg_commit_p99_ms", "bare commit p99 ms"),
                  ("sqlite_msgs_per_s", "SQLite msgs/s"), ("sqlite_p99_ms", "SQLite p99 ms")),
                 figure="messages stored (PostgreSQL, group commit) and answered per second, pipelined"),
        Scenario("filter", "local", keyword_filter, "mb_per_s", "MB/s", True,
                 "keyword filter with 10,000 terms over chat-sized messages, in the bench's own process",
                 (("vs_lower", "x str.lower()"), ("lower_mb_per_s", "str.lower() MB/s")),
                 figure="MB/s of messages through the filter (set-up: building it)"),
    ]
}

# One message's cost and idle memory at 10,000 (bench/cost.py, which builds on
# the helpers above), in the same table as the rest.
from .cost import COST_SCENARIOS  # noqa: E402

SCENARIOS.update(COST_SCENARIOS)
