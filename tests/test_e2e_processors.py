"""Two processors, one killed with SIGKILL mid-traffic: the other finishes its work.

Both ways to reach several processors (docs/deployment.md, "Several processors"):
TCP links (``squall web --processor A,B``) and the queue (``--queue redis://…``).
Two real ``squall processor`` subprocesses share one SQLite file. The one that
will be killed (``P1``) runs two test stages that hold for ever any message
marked ``[hold]`` (before the store) or ``[hold-stored]`` (after it), so when it
is killed it certainly has work in flight, some of it stored but never answered.

Senders in four rooms send with ids, a window of unacknowledged sends at a
time, and resend (same id) whatever is answered ``unavailable``, while a watcher
in each room listens. P1 is killed once it holds a few messages. Afterwards:
every id was acked exactly once; no send needed a resend (the move happens at
once over TCP, and within ``queue_claim_idle`` through the queue, both far
inside ``send_timeout``); each room's history holds every id once, with seqs
1..N, each the seq its ack named; and each watcher saw 1..N in order, once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from squall.processor.pool import choose
from squall.queue import GROUP, QueueKeys
from support import REDIS_URL, ChatClient, SquallProcess, free_port, run_async

TESTS = Path(__file__).resolve().parent
ROOMS = 4
PER_ROOM = 120
WINDOW = 12  # unacknowledged sends per sender
# Messages P1 must be holding when it is killed. A held message also holds back
# its sender's later ones in that room (they reach the store in the order sent:
# squall/order.py), so P1 holds one per room it serves: two of the four over TCP.
HELD_BEFORE_KILL = 2
SEND_TIMEOUT = 30  # generous: a resend is a failure here, and this machine is shared
CLAIM_IDLE = 1.0
ENV = {
    "SQUALL_SEND_RATE": "100000", "SQUALL_SEND_BURST": "100000",
    "SQUALL_SEND_TIMEOUT": str(SEND_TIMEOUT), "SQUALL_RECONNECT_MAX": "0.2",
    "SQUALL_QUEUE_CLAIM_IDLE": str(CLAIM_IDLE),
}
HOLDING_CHAIN = "validate,filter,render,mentions,stages_for_test:hold,store,stages_for_test:hold_stored,previews"


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)


def _body(room: str, n: int) -> str:
    """Every 10th message is marked to be held by P1, before or after the store in turn."""
    marker = "" if n % 10 else (" [hold]" if n % 20 else " [hold-stored]")
    return f"message {n} of {room}{marker}"


class Sender:
    """Sends ``PER_ROOM`` messages to one room, ``WINDOW`` unacknowledged at most,
    resending any answered ``unavailable``; counts every answer."""

    def __init__(self, client: ChatClient, room: str) -> None:
        self.client = client
        self.room = room
        self.acks: dict[str, int] = {}
        self.ack_count: collections.Counter[str] = collections.Counter()
        self.unavailable = 0
        self.sent = 0

    async def run(self) -> None:
        ids = [f"{self.room}-{n}" for n in range(1, PER_ROOM + 1)]
        body = {cid: _body(self.room, n) for n, cid in enumerate(ids, 1)}
        to_send: asyncio.Queue[str] = asyncio.Queue()
        for cid in ids:
            to_send.put_nowait(cid)
        window = asyncio.Semaphore(WINDOW)

        async def write() -> None:
            while True:
                cid = await to_send.get()
                await window.acquire()
                self.sent += 1
                await self.client.send_json({"type": "send", "room": self.room, "id": cid, "body": body[cid]})

        writer = asyncio.ensure_future(write())
        try:
            while len(self.acks) < len(ids):
                frame = await self.client.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=2 * SEND_TIMEOUT)
                cid = frame["id"]
                window.release()
                if frame["type"] == "ack":
                    self.ack_count[cid] += 1
                    self.acks[cid] = frame["seq"]
                else:
                    assert frame["code"] == "unavailable", frame
                    self.unavailable += 1
                    to_send.put_nowait(cid)
        finally:
            writer.cancel()


async def watch(client: ChatClient) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < PER_ROOM:
        seqs.append((await client.recv_type("message", timeout=2 * SEND_TIMEOUT))["seq"])
    await client.ping()  # nothing more came before the pong: no duplicate after the last
    return seqs


def kill_once_holding(p1: SquallProcess) -> None:
    p1.wait_for_line("held ", count=HELD_BEFORE_KILL, timeout=2 * SEND_TIMEOUT)
    assert p1.process is not None
    p1.process.send_signal(signal.SIGKILL)
    p1.process.wait()


async def traffic(web: SquallProcess, rooms: list[str], p1: SquallProcess) -> dict[str, Any]:
    tokens = [await asyncio.to_thread(web.session, f"sender{i}") for i in range(len(rooms))]
    watcher_token = await asyncio.to_thread(web.session, "watcher")
    watchers = []
    for room in rooms:
        watcher = await ChatClient.connect(web.address, watcher_token)
        joined = await watcher.join(room)
        assert joined["type"] == "joined" and joined["seq"] == 0, joined
        watchers.append(watcher)
    senders = [Sender(await ChatClient.connect(web.address, token), room) for token, room in zip(tokens, rooms)]
    try:
        watching = [asyncio.ensure_future(watch(w)) for w in watchers]
        sending = [asyncio.ensure_future(s.run()) for s in senders]
        await asyncio.to_thread(kill_once_holding, p1)
        await asyncio.gather(*sending)
        seen = await asyncio.gather(*watching)
        histories = [await asyncio.to_thread(web.history, room, tokens[0]) for room in rooms]
        return {"senders": senders, "seen": seen, "histories": histories}
    finally:
        for client in [*watchers, *(s.client for s in senders)]:
            await client.close()


def check(result: dict[str, Any], rooms: list[str]) -> None:
    for sender, seen, history in zip(result["senders"], result["seen"], result["histories"]):
        ids = [f"{sender.room}-{n}" for n in range(1, PER_ROOM + 1)]
        assert sender.unavailable == 0, f"{sender.room}: {sender.unavailable} sends needed a resend"
        assert sender.sent == PER_ROOM
        assert sorted(sender.ack_count) == sorted(ids)
        assert set(sender.ack_count.values()) == {1}, "an id was acked more than once"
        assert [m["seq"] for m in history] == list(range(1, PER_ROOM + 1)), sender.room
        stored = {m["id"]: m["seq"] for m in history}
        assert len(stored) == PER_ROOM, f"{sender.room}: an id stored twice"
        assert stored == sender.acks, f"{sender.room}: an ack named another seq than the stored one"
        assert seen == list(range(1, PER_ROOM + 1)), f"{sender.room}: watcher saw {seen}"


def start_processors(tmp_path: Path, env: dict[str, str], *, ports: tuple[int, int] = (0, 0)) -> list[SquallProcess]:
    # P1 first: both share the data folder (its secret and SQLite file), and
    # the first to start creates them.
    p1 = SquallProcess(tmp_path, "processor", processor_port=ports[0] or None,
                       env={**env, "SQUALL_STAGES": HOLDING_CHAIN, "PYTHONPATH": _pythonpath()})
    p2 = SquallProcess(tmp_path, "processor", processor_port=ports[1] or None, env=env)
    started: list[SquallProcess] = []
    try:
        for processor in (p1, p2):
            processor.start()
            started.append(processor)
    except BaseException:
        for processor in started:
            processor.stop()
        raise
    return started


def test_kill_one_of_two_processors_over_tcp(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    addresses = [("127.0.0.1", port) for port in ports]
    # Two rooms served by each processor (rooms are spread by rendezvous hash).
    by_processor: dict[int, list[str]] = {0: [], 1: []}
    n = 0
    while min(len(r) for r in by_processor.values()) < ROOMS // 2:
        n += 1
        room = f"tcp-{n}"
        if len(by_processor[choose(addresses, room)]) < ROOMS // 2:
            by_processor[choose(addresses, room)].append(room)
    rooms = by_processor[0] + by_processor[1]
    processors = start_processors(tmp_path, ENV, ports=ports)
    try:
        web = SquallProcess(tmp_path, "web", env=ENV,
                            args=("--processor", ",".join(f"127.0.0.1:{port}" for port in ports)))
        web.start()
        try:
            wait_all_links(web, 2)
            result = run_async(traffic(web, rooms, processors[0]), timeout=4 * SEND_TIMEOUT)
            health = web.api("GET", "/api/health")[1]
        finally:
            web.stop()
        check(result, rooms)
        held = processors[0].count_lines("held ")
        assert held >= HELD_BEFORE_KILL
        # P1 held messages only of its own rooms, and the web node moved them.
        assert "moved" in web.output() and "sends in flight" in web.output(), web.output()
        states = {p["address"]: p["state"] for p in health["processors"]}
        assert states == {f"127.0.0.1:{ports[0]}": "unreachable", f"127.0.0.1:{ports[1]}": "connected"}
    finally:
        for processor in processors:
            processor.stop()


def wait_all_links(web: SquallProcess, count: int) -> None:
    """Poll /api/health until ``count`` processor links are up (start-up only)."""
    import time

    deadline = time.monotonic() + 15
    while True:
        states = [p["state"] for p in web.api("GET", "/api/health")[1]["processors"]]
        if states.count("connected") == count:
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.02)  # polling an endpoint we cannot subscribe to


@pytest.mark.redis
def test_kill_one_of_two_processors_through_the_queue(tmp_path: Path, redis_prefix: str) -> None:
    env = {**ENV, "SQUALL_QUEUE": REDIS_URL, "SQUALL_QUEUE_PREFIX": redis_prefix}
    rooms = [f"queue-{n}" for n in range(1, ROOMS + 1)]
    processors = start_processors(tmp_path, env)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with_web = SquallProcess(tmp_path, "web", env=env)
        with_web.start()
        try:
            result = run_async(traffic(with_web, rooms, processors[0]), timeout=4 * SEND_TIMEOUT)
        finally:
            with_web.stop()
        check(result, rooms)
        held = processors[0].count_lines("held ")
        assert held >= HELD_BEFORE_KILL
        survivor = processors[1].output()
        assert "took over" in survivor, survivor
        keys = QueueKeys(redis_prefix)
        # Everything was processed, acknowledged and deleted; the dead consumer holds nothing.
        assert client.xlen(keys.sends) == 0
        consumers = {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(keys.sends, GROUP)}
        assert sum(consumers.values()) == 0, consumers
        assert len(consumers) == 2, consumers
    finally:
        client.close()
        for processor in processors:
            processor.stop()


def test_with_no_processor_up_sends_get_unavailable(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    web = SquallProcess(tmp_path, "web", env={**ENV, "SQUALL_SEND_TIMEOUT": "1"},
                        args=("--processor", ",".join(f"127.0.0.1:{port}" for port in ports)))
    web.start(connected=False)
    try:
        token = web.session("alice")
        status, body = web.api("POST", "/api/rooms/lobby/messages", {"body": "hi", "id": "1"}, token=token)
        assert (status, body["code"]) == (503, "unavailable"), body
        assert "the processor did not answer within 1 s" in body["reason"]
        health = web.api("GET", "/api/health")[1]
        assert health["processor"] == "unreachable" and health["pending_sends"] == 0, health
        assert [p["state"] for p in health["processors"]] == ["unreachable", "unreachable"]
    finally:
        web.stop()


def queue_figures(web: SquallProcess) -> dict[str, float]:
    """The queue's gauges in the web node's /metrics, read from Redis at the scrape."""
    host, port = web.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name in ("squall_queue_depth", "squall_queue_pending")
    }


@pytest.mark.redis
def test_a_send_accepted_while_no_processor_runs_is_processed_later(tmp_path: Path, redis_prefix: str) -> None:
    """The queue keeps what it accepted: the client got ``unavailable``, yet the
    message is stored once a processor comes, and the retry gets its seq."""
    env = {**ENV, "SQUALL_QUEUE": REDIS_URL, "SQUALL_QUEUE_PREFIX": redis_prefix, "SQUALL_SEND_TIMEOUT": "1"}
    client = redis.Redis.from_url(REDIS_URL)
    web = SquallProcess(tmp_path, "web", env=env)
    web.start()
    processor = SquallProcess(tmp_path, "processor", env=env)
    try:
        token = web.session("alice")
        status, body = web.api("POST", "/api/rooms/lobby/messages", {"body": "hi", "id": "1"}, token=token)
        assert (status, body["code"]) == (503, "unavailable"), body
        assert "a processor did not answer within 1 s" in body["reason"]
        assert client.xlen(QueueKeys(redis_prefix).sends) == 1
        assert queue_figures(web) == {"squall_queue_depth": 1, "squall_queue_pending": 0}
        processor.start()
        status, body = web.api("POST", "/api/rooms/lobby/messages", {"body": "hi", "id": "1"}, token=token)
        assert (status, body) == (200, {"id": "1", "seq": 1})
        assert queue_figures(web) == {"squall_queue_depth": 0, "squall_queue_pending": 0}
        assert [(m["id"], m["seq"]) for m in web.history("lobby", token)] == [("1", 1)]
    finally:
        client.close()
        processor.stop()
        web.stop()
