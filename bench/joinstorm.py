"""Join storms: filling one room with thousands of clients, and thousands coming back at once.

``join-5000`` and ``join-10000`` connect N clients, then have every one of them
join one room at once, and time both phases: the figure is the set-up time
(connect + join) until the last ``joined`` reply has arrived. A server that
tells every member of every join, each in its own write, and sends every
joiner the whole member list, takes O(N²) here.

``reconnect-10000`` is a web node coming back after a restart. 10,000 members
of one room drop off at the same seq; while they are away, the room moves on
by :data:`MISSED` messages (more than Squall keeps in memory per room, so the
catch-up comes from the store); then all of them reconnect at once, each
joining with the ``since`` it had. Meanwhile :data:`OTHERS` members who never
left keep getting a message every 1 / :data:`STORM_RATE` seconds. The figures:
seconds from the first reconnect until every one of the 10,000 has received
everything up to the seq its ``joined`` named (``caught_up_s``), and the
send → arrival latency of the messages sent to the others meanwhile
(``p99_ms``). Targets that keep no history (the ceiling, ``websockets``) ignore
``since``: for them a client is caught up once it has joined.

Every client checks its room's seqs as the fan-out scenarios do: a gap or a
duplicate fails the run.

The load generator spreads its connections over several loopback source
addresses (:data:`SOURCE_ADDRESSES`): 20,000 connections and their TIME_WAIT
would not fit in one address's ephemeral ports.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import orjson

from .loadgen import Tally, WSClient
from .scenarios import Options, Scenario, _close_all, _Meter, _percentiles, _SendClock, BODY
from .report import Goal
from .targets import Running, Target

__all__ = ["SCENARIOS", "GOALS", "register"]

ROOM = "storm"
STORM_TIMEOUT = 300.0  # seconds for a phase of a storm before the run is declared failed
CONNECT_CONCURRENCY = 1000  # connections opening at once: "all at once", within the server's backlog
SOURCE_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 10))
OTHERS = 200  # members who stay while the others reconnect
MISSED = 300  # messages the reconnecting members miss: past the 256 a room keeps in memory
STORM_RATE = 2.0  # messages per second to the room during the storm, as in the latency scenario
SEND_WINDOW = 64  # the pre-storm messages: how many may be ahead of the slowest member


class StormClient(WSClient):
    """A WebSocket client that joins with ``since`` and knows when it has caught up.

    ``replays`` says whether the server sends the backlog after ``since``
    (Squall does; the ceilings do not). With ``join_on_open``, it joins
    ``room`` from ``since`` as soon as its handshake is answered, as a page
    does. :attr:`caught_up` resolves (to the time) once the client holds every
    message up to the seq of its ``joined`` reply.
    """

    def __init__(
        self, host: str, path: str, *, replays: bool, join_on_open: str | None = None,
        since: int | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(host, path, **kwargs)
        self.replays = replays
        self.join_on_open = join_on_open
        self.since = since
        self.target = -1  # the seq to reach, once joined
        self.caught_up: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.joined_at = 0.0

    def _check_handshake(self, head: bytes) -> bool:
        opened = super()._check_handshake(head)
        if opened and self.join_on_open is not None:
            self.join_since(self.join_on_open, self.since)
        return opened

    def join_since(self, room: str, since: int | None) -> None:
        self.room = room
        self.since = since
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        self.send_json(frame)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.target >= 0 and self.next_seq > self.target and not self.caught_up.done():
            self.caught_up.set_result(time.perf_counter())

    def _on_event(self, payload: bytes) -> None:
        if b'"joined"' not in payload:
            super()._on_event(payload)
            return
        event = orjson.loads(payload)
        if event.get("type") != "joined" or event.get("room") != self.room or self.joined.done():
            super()._on_event(payload)
            return
        self.joined_at = time.perf_counter()
        seq = int(event["seq"])
        start = self.since if self.replays and self.since is not None else seq
        self._base_seq = start + 1
        self.next_seq = start + 1
        self.target = seq
        self.joined.set_result(None)


async def _connect(
    server: Running, count: int, factory: Callable[[int], WSClient], *, concurrency: int = CONNECT_CONCURRENCY
) -> list[Any]:
    """Open ``count`` WebSockets, ``concurrency`` at a time, from rotating source addresses."""
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> WSClient:
        async with semaphore:
            source = (SOURCE_ADDRESSES[i % len(SOURCE_ADDRESSES)], 0)
            _, client = await loop.create_connection(
                lambda: factory(i), server.host, server.port, local_addr=source
            )
            await client.opened
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def _enough_files(connections: int) -> None:
    """Raise this process's soft open-file limit to hold ``connections`` sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 1000 if hard == resource.RLIM_INFINITY else min(connections + 1000, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _errors(clients: list[Any]) -> list[str]:
    return [repr(e) for c in clients for e in c.errors][:5]


# Fill: connect N, then all join one room at once.


async def _fill(target: Target, options: Options, n: int) -> dict[str, Any]:
    n = options.clients or n
    _enough_files(n)
    server = await target.start("ws")
    clients: list[StormClient] = []
    try:
        tokens = await target.tokens(server, [f"m{i}" for i in range(n)])
        started = time.perf_counter()
        clients = await _connect(
            server, n, lambda i: StormClient(server.host, target.ws_path(tokens[i]), replays=False)
        )
        connected = time.perf_counter()
        meter = _Meter(server)
        for client in clients:
            client.join_since(ROOM, None)
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in clients)), STORM_TIMEOUT)
        joined = time.perf_counter()
        figures = meter.figures()
        errors = _errors(clients)
        return {
            "clients": n,
            "setup_s": round(joined - started, 3),
            "connect_s": round(connected - started, 3),
            "join_s": round(joined - connected, 3),
            "join_server_cpu_s": figures["server_cpu_s"],
            "join_cpu_us_per_client": round(figures["server_cpu_s"] / n * 1e6, 1),
            **{k: v for k, v in figures.items() if k != "elapsed_s"},
            "errors": errors,
            "ok": not errors,
        }
    finally:
        _close_all(clients)
        await server.stop()


async def join_5000(target: Target, options: Options) -> dict[str, Any]:
    return await _fill(target, options, 5000)


async def join_10000(target: Target, options: Options) -> dict[str, Any]:
    return await _fill(target, options, 10_000)


# Reconnect: N drop off, miss MISSED messages, and come back at once with `since`.


async def _wait_connections(server: Running, target: Target, expected: int, timeout: float) -> None:
    """Wait until Squall's /api/health counts ``expected`` WebSockets (other targets: at once)."""
    if target.name != "squall":
        return
    from .loadgen import HTTPClient

    client = await HTTPClient.connect(server.host, server.port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            status, health = await client.request("GET", "/api/health")
            if status == 200 and health["connections"]["websocket"] <= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server still counts {health['connections']} connections")
            await asyncio.sleep(0.1)  # a poll of a figure nothing announces
    finally:
        await client.close()


async def reconnect(target: Target, options: Options, *, n: int = 10_000) -> dict[str, Any]:
    n = options.clients or n
    others = min(OTHERS, n)
    replays = target.name == "squall"
    _enough_files(2 * n + others)
    server = await target.start("ws")
    stayers: list[WSClient] = []
    first: list[StormClient] = []
    second: list[StormClient] = []
    try:
        tokens = await target.tokens(server, [f"r{i}" for i in range(n)] + [f"o{i}" for i in range(others)] + ["sender"])
        tally = Tally(others)
        clock = _SendClock()
        stayers = await _connect(server, others + 1, lambda i: (
            WSClient(server.host, target.ws_path(tokens[n + i]), tally=tally, latencies=clock.arrivals)
            if i < others else WSClient(server.host, target.ws_path(tokens[n + i]), on_ack=clock.on_ack)
        ), concurrency=100)
        for client in stayers:
            client.join(ROOM)
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in stayers)), STORM_TIMEOUT)
        sender = stayers[others]
        subscribers = stayers[:others]

        fill_started = time.perf_counter()
        first = await _connect(server, n, lambda i: StormClient(server.host, target.ws_path(tokens[i]), replays=False))
        for client in first:
            client.join_since(ROOM, None)
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in first)), STORM_TIMEOUT)
        fill_s = time.perf_counter() - fill_started
        since = [c.next_seq - 1 for c in first]
        _close_all(first)
        await _wait_connections(server, target, others + 1, STORM_TIMEOUT)

        # The room moves on while they are away.
        sent = 0
        while sent < MISSED:
            if sent - tally.completed >= SEND_WINDOW:
                if not await tally.wait_completed(sent - SEND_WINDOW + 1, STORM_TIMEOUT):
                    raise TimeoutError("the others stopped receiving before the storm")
                continue
            clock.send(sender, ROOM, f"b{sent}", BODY + str(sent))
            sent += 1
        if not await tally.wait_completed(sent, STORM_TIMEOUT):
            raise TimeoutError("the others did not receive the messages sent before the storm")
        arrivals_before = len(clock.arrivals)

        # The storm, and a steady trickle to the others meanwhile.
        meter = _Meter(server)
        storm_started = time.perf_counter()
        storming = True

        async def trickle() -> int:
            count = 0
            while storming:
                await asyncio.sleep(max(0.0, storm_started + count / STORM_RATE - time.perf_counter()))
                if not storming:
                    break
                clock.send(sender, ROOM, f"s{count}", BODY + str(count))
                count += 1
            return count

        trickling = asyncio.ensure_future(trickle())
        second = await _connect(server, n, lambda i: StormClient(
            server.host, target.ws_path(tokens[i]), replays=replays, join_on_open=ROOM, since=since[i],
        ))
        connected_s = time.perf_counter() - storm_started
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in second)), STORM_TIMEOUT)
        caught = await asyncio.wait_for(asyncio.gather(*(c.caught_up for c in second)), STORM_TIMEOUT)
        caught_up_at = max(caught)
        storming = False
        storm_sent = await trickling
        figures = meter.figures(caught_up_at)
        total = sent + storm_sent
        drained = await tally.wait_completed(total, STORM_TIMEOUT)
        latencies = clock.latencies(arrivals_before)
        errors = _errors(stayers + second)
        duplicates = sum(c.duplicates for c in stayers + second)
        gaps = sum(c.gaps for c in stayers + second)
        deliveries = sum(c.received for c in subscribers)
        missing = total * others - deliveries
        result = {
            "clients": n,
            "others": others,
            "missed": MISSED,
            "rate": STORM_RATE,
            "fill_s": round(fill_s, 3),
            "connected_s": round(connected_s, 3),
            "joined_s": round(max(c.joined_at for c in second) - storm_started, 3),
            "caught_up_s": round(caught_up_at - storm_started, 3),
            "storm_messages": storm_sent,
            **figures,
            **_percentiles(latencies),
            "backlog_received": sum(c.received for c in second),
            "deliveries": deliveries,  # to the others, before and during the storm
            "expected": total * others,
            "duplicates": duplicates,
            "gaps": gaps,
            "missing": missing,
            "errors": errors,
            "ok": drained and not errors and duplicates == 0 and gaps == 0 and missing == 0,
        }
        return result
    finally:
        _close_all(stayers + first + second)
        await server.stop()


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("join-5000", "ws", join_5000, "setup_s", "s", False,
                 "connect 5000 clients, then all join one room at once: seconds until the last joined",
                 (("connect_s", "connect s"), ("join_s", "join s"), ("join_cpu_us_per_client", "join CPU us/client"))),
        Scenario("join-10000", "ws", join_10000, "setup_s", "s", False,
                 "connect 10,000 clients, then all join one room at once: seconds until the last joined",
                 (("connect_s", "connect s"), ("join_s", "join s"), ("join_cpu_us_per_client", "join CPU us/client"))),
        Scenario("reconnect-10000", "ws", reconnect, "caught_up_s", "s", False,
                 f"10,000 members of a room reconnect at once with since, {MISSED} messages behind, while "
                 f"{OTHERS} others get {STORM_RATE:g} msg/s: seconds until all caught up; p99 to the others",
                 (("p99_ms", "others p99 ms"), ("max_ms", "others max ms"), ("joined_s", "all joined s"),
                  ("fill_s", "first fill s"))),
    ]
}

def _reconnect_goal(rows: dict[str, dict[str, Any]]) -> tuple[bool, str] | None:
    squall = rows.get("squall") or {}
    caught_up, p99 = squall.get("caught_up_s"), squall.get("p99_ms")
    if not isinstance(caught_up, (int, float)) or not isinstance(p99, (int, float)):
        return None
    return caught_up <= 10.0 and p99 < 1000.0, f"all caught up in {caught_up:.2f} s, others' p99 {p99:.0f} ms"


GOALS: dict[str, Goal] = {
    "join-5000": Goal("report (O(1) per join: grows linearly)"),
    "join-10000": Goal("report (O(1) per join: grows linearly)"),
    "reconnect-10000": Goal("all caught up <= 10 s, others' p99 < 1 s", _reconnect_goal),
}


def register(scenarios: dict[str, Scenario], goals: dict[str, Goal]) -> None:
    """Add the join-storm scenarios and their goals to the bench's tables."""
    scenarios.update(SCENARIOS)
    goals.update(GOALS)
