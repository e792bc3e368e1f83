"""``/metrics``, ``/healthz`` and ``/readyz`` against real servers.

Metrics are scraped over HTTP and parsed with prometheus_client's own parser;
every count that the scenario fixes is asserted as an exact difference between
two scrapes. The readiness tests run ``squall web`` beside a ``squall
processor`` the test owns, so that the test can stop (SIGSTOP), kill and
replace it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from squall.protocol import CANARY_ROOM
from support import (
    TIMEOUT, ChatClient, EventStream, HTTPResponse, SquallProcess, close_writer, free_port, http, run_async,
    squall_server,
)

SQUALL_ENV = {"SQUALL_SEND_RATE": "0.001", "SQUALL_SEND_BURST": "5"}  # no token comes back during a test

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: bytes) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def scrape(address: tuple[str, int], **kwargs: Any) -> Samples:
    response = await http(address, "GET", "/metrics", **kwargs)
    assert response.status == 200, (response.status, response.body)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    return parse(response.body)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Ask ``check()`` until it returns something true (a count the server
    updates when it notices a close, which nothing tells the client about)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    pause = 0.005
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {TIMEOUT} s")
        await asyncio.sleep(pause)  # between polls of an event we cannot subscribe to
        pause = min(pause * 2, 0.1)
    return result


async def status_for_host(address: tuple[str, int], path: str, host: str) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        return int(status_line.split()[1])
    finally:
        await close_writer(writer)


def canaries(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "squall.db") as db:
        return int(db.execute("SELECT count(*) FROM messages WHERE room = ?", (CANARY_ROOM,)).fetchone()[0])


# -- /metrics on one `squall run` -------------------------------------------------------


def test_connections_by_transport_and_presence(server: SquallProcess, room: str) -> None:
    tokens = {nick: server.session(nick) for nick in ("wanda", "sven", "paula")}

    async def scenario() -> None:
        before = await scrape(server.address)
        ws = await ChatClient.connect(server.address, tokens["wanda"])
        await ws.join(room)
        sse = await EventStream.open(server.address, room, tokens["sven"])
        await sse.next_of("joined")
        joined = await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=tokens["paula"])
        cursor = joined.json()["seq"]
        # A poll parked on the room keeps its long-poll connection (and paula) there.
        poll = asyncio.ensure_future(http(
            server.address, "GET", f"/api/rooms/{room}/messages?since={cursor}&wait=30", token=tokens["paula"],
        ))

        async def all_open() -> Samples | None:
            now = await scrape(server.address)
            return now if delta(before, now, "squall_connections", transport="longpoll") == 1 else None

        during = await until(all_open, "the parked poll's connection counted")
        assert delta(before, during, "squall_connections", transport="websocket") == 1
        assert delta(before, during, "squall_connections", transport="sse") == 1
        assert delta(before, during, "squall_presence_users") == 3
        assert delta(before, during, "squall_presence_memberships") == 3

        poll.cancel()
        await ws.close()
        await sse.close()

        async def all_closed() -> Samples | None:
            now = await scrape(server.address)
            gone = all(
                value(now, "squall_connections", transport=kind) == value(before, "squall_connections", transport=kind)
                for kind in ("websocket", "sse", "longpoll")
            )
            return now if gone else None

        await until(all_closed, "every connection let go")

    run_async(scenario())


def test_sends_acks_rejections_and_deliveries_count_exactly(server: SquallProcess, room: str) -> None:
    alice, bob, carol = server.session("alice"), server.session("bob"), server.session("carol")

    async def scenario() -> None:
        speaker, listener = await ChatClient.connect(server.address, alice), await ChatClient.connect(server.address, bob)
        await speaker.join(room)
        await listener.join(room)
        before = await scrape(server.address)

        for n in range(3):
            await speaker.send_json({"type": "send", "room": room, "id": f"m{n}", "body": f"message {n}"})
            assert (await speaker.recv_type("ack"))["id"] == f"m{n}"
        # Refused by the processor's pipeline: handed over, not acknowledged.
        await speaker.send_json({"type": "send", "room": room, "id": "empty", "body": "   "})
        assert (await speaker.recv_type("error"))["code"] == "empty_body"
        # carol's burst is 5: the 6th and 7th are refused by the limit, before the processor.
        statuses = []
        for n in range(7):
            response = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=carol,
                                  json_body={"id": f"c{n}", "body": f"carol {n}"})
            statuses.append(response.status)
        assert statuses == [200] * 5 + [429] * 2
        for n in range(8):  # the listener saw them all: every delivery is done
            await listener.recv_type("message")

        after = await scrape(server.address)
        assert delta(before, after, "squall_sends_total") == 3 + 1 + 5
        assert delta(before, after, "squall_acks_total") == 3 + 5
        assert delta(before, after, "squall_rejections_total", code="empty_body", limit="pipeline") == 1
        assert delta(before, after, "squall_rejections_total", code="rate_limited", limit="send_per_user") == 2
        assert delta(before, after, "squall_deliveries_total") == 8 * 2  # to the speaker and the listener
        # A bus delivery per stored message, each timed (and presence, should someone's poll expire).
        assert delta(before, after, "squall_fanout_seconds_count") >= 8
        assert delta(before, after, "squall_fanout_seconds_sum") > 0
        # /api/health reads the same counters: nothing is counted twice, nor apart.
        health = (await http(server.address, "GET", "/api/health")).json()
        assert health["rejections"]["empty_body"]["pipeline"] == value(
            after, "squall_rejections_total", code="empty_body", limit="pipeline"
        )
        assert value(after, "squall_processor_up", processor=f"127.0.0.1:{_link_port(server)}") == 1
        assert value(after, "squall_processor_in_flight", processor=f"127.0.0.1:{_link_port(server)}") == 0
        await speaker.close()
        await listener.close()

    run_async(scenario())


def test_parked_polls_count_as_deliveries(server: SquallProcess, room: str) -> None:
    poller, sender = server.session("polly"), server.session("sam")

    async def scenario() -> None:
        cursor = (await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=poller)).json()["seq"]
        before = await scrape(server.address)
        poll = asyncio.ensure_future(http(
            server.address, "GET", f"/api/rooms/{room}/messages?since={cursor}&wait=30", token=poller,
        ))

        async def parked() -> bool:
            health = (await http(server.address, "GET", "/api/health")).json()
            return bool(health["waiting_polls"] >= 1)

        await until(parked, "the poll parked")
        sent = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=sender,
                          json_body={"id": "p1", "body": "for the poller"})
        assert sent.status == 200
        answer = await poll
        assert [m["body"] for m in answer.json()["messages"]] == ["for the poller"]
        after = await scrape(server.address)
        assert delta(before, after, "squall_deliveries_total") == 1

    run_async(scenario())


def test_healthz_answers_alive(server: SquallProcess) -> None:
    status, body = server.api("GET", "/healthz")
    assert (status, body) == (200, {"alive": True})


def test_metrics_refused_through_an_untrusted_proxy(server: SquallProcess) -> None:
    """A proxy on this machine, not in trusted_proxies, would hand /metrics a
    stranger's request from 127.0.0.1: its headers give it away."""

    async def scenario() -> None:
        before = await scrape(server.address)
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            response = await http(server.address, "GET", "/metrics", headers={header: "203.0.113.9"})
            assert response.status == 403, (header, response.status)
            assert response.json()["code"] == "metrics_forbidden"
            assert b"squall_" not in response.body
        after = await scrape(server.address)
        assert delta(before, after, "squall_rejections_total", code="metrics_forbidden", limit="metrics_allow") == 3

    run_async(scenario())


def test_the_canary_room_is_out_of_every_clients_reach(server: SquallProcess) -> None:
    token = server.session("curious")

    async def scenario() -> None:
        assert (await http(server.address, "GET", "/readyz")).status == 200  # a canary is stored now
        for method, path in (
            ("GET", f"/api/rooms/{CANARY_ROOM}/messages?since=0&wait=0"),
            ("GET", f"/api/rooms/{CANARY_ROOM}/messages"),
            ("GET", f"/api/rooms/{CANARY_ROOM}/events"),
            ("GET", f"/api/rooms/{CANARY_ROOM}/members"),
            ("POST", f"/api/rooms/{CANARY_ROOM}/typing"),
        ):
            response = await http(server.address, method, path, token=token)
            assert (response.status, response.json()["code"]) == (400, "bad_room"), path
        sent = await http(server.address, "POST", f"/api/rooms/{CANARY_ROOM}/messages", token=token,
                          json_body={"id": "x", "body": "let me in"})
        assert (sent.status, sent.json()["code"]) == (400, "bad_room")
        client = await ChatClient.connect(server.address, token)
        assert (await client.join(CANARY_ROOM))["code"] == "bad_room"
        await client.close()

    run_async(scenario())
    with sqlite3.connect(server.data_dir / "squall.db") as db:
        rooms = [row[0] for row in db.execute("SELECT DISTINCT room FROM messages WHERE nick = 'squall-canary'")]
        users = db.execute("SELECT count(*) FROM users WHERE nick_key = 'squall-canary'").fetchone()[0]
    assert rooms == [CANARY_ROOM]  # stored, and only there
    assert users == 0  # no user of that name: nobody can be it, or be mentioned as it


def _link_port(server: SquallProcess) -> int:
    """The port of `squall run`'s processor child, which the web node's link label names."""
    child = server.processor_child()
    return next(c.laddr.port for c in child.net_connections(kind="tcp") if c.status == "LISTEN")


# -- a web node, a processor of the test's own, and /readyz ------------------------------

READY_TIMEOUT = 1.0  # seconds: what a stopped processor costs each probe
PAIR_ENV = {"SQUALL_READY_TIMEOUT": str(READY_TIMEOUT), "SQUALL_READY_CACHE": "0.05", "SQUALL_RECONNECT_MAX": "0.2"}


class Pair:
    """``squall web`` and the ``squall processor`` it dials, which the test may stop or replace."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.metrics_port = free_port()
        self.processor = self._processor(port=None)
        self.port = self.processor.processor_port
        self.web = SquallProcess(data_dir, "web", processor_port=self.port, env=PAIR_ENV)

    def _processor(self, port: int | None) -> SquallProcess:
        env = {**PAIR_ENV, "SQUALL_PROCESSOR_METRICS": f"127.0.0.1:{self.metrics_port}"}
        return SquallProcess(self.data_dir, "processor", processor_port=port, env=env)

    def replace_processor(self) -> None:
        self.processor.stop()  # the dead one's output pipe
        self.processor = self._processor(self.port)
        self.processor.start()

    @property
    def pid(self) -> int:
        assert self.processor.process is not None
        return self.processor.process.pid


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path)
    pair.processor.start()
    try:
        pair.web.start()
        yield pair
    finally:
        try:
            os.kill(pair.pid, signal.SIGCONT)  # a stopped process cannot take its SIGTERM
        except ProcessLookupError:
            pass
        pair.web.stop()
        pair.processor.stop()


async def readyz(pair: Pair) -> HTTPResponse:
    return await http(pair.web.address, "GET", "/readyz")


def test_readyz_follows_the_processor(pair: Pair) -> None:
    async def ready_again() -> HTTPResponse | None:
        response = await readyz(pair)
        return response if response.status == 200 else None

    async def scenario() -> None:
        ready = await readyz(pair)
        assert ready.status == 200, ready.body
        body = ready.json()
        assert body["ready"] is True and isinstance(body["seq"], int)
        assert set(body["timings_ms"]) == {"processor", "bus", "store", "total"}

        # Stopped: connected, but nothing comes back within the deadline.
        os.kill(pair.pid, signal.SIGSTOP)
        stalled = await until(lambda: _not_ready(pair), "a 503 while the processor is stopped")
        assert stalled["failed"] == "processor", stalled
        assert "ready_timeout" in stalled["reason"], stalled
        os.kill(pair.pid, signal.SIGCONT)
        assert (await until(ready_again, "ready after SIGCONT")).json()["seq"] > body["seq"]

        # Killed: the link is down.
        assert pair.processor.process is not None
        pair.processor.process.kill()
        await asyncio.to_thread(pair.processor.process.wait)
        down = await until(lambda: _not_ready(pair), "a 503 once the processor is gone")
        assert down["failed"] == "processor" and down["code"] == "not_ready", down
        await until(lambda: _reason_has(pair, "is down"), "the link noticed")
        await asyncio.to_thread(pair.replace_processor)
        await until(ready_again, "ready with a new processor")

    run_async(scenario(), timeout=6 * TIMEOUT)


async def _not_ready(pair: Pair) -> dict[str, Any] | None:
    response = await readyz(pair)
    if response.status == 200:
        return None
    assert response.status == 503, response.body
    body: dict[str, Any] = response.json()
    assert body["ready"] is False
    return body


async def _reason_has(pair: Pair, text: str) -> bool:
    body = await _not_ready(pair)
    return body is not None and text in body["reason"]


def test_processor_metrics_count_commits(pair: Pair) -> None:
    token = pair.web.session("pia")
    address = ("127.0.0.1", pair.metrics_port)

    async def scenario() -> None:
        before = await scrape(address)
        for n in range(4):  # one at a time: one group commit each
            sent = await http(pair.web.address, "POST", "/api/rooms/commits/messages", token=token,
                              json_body={"id": f"c{n}", "body": f"commit {n}"})
            assert sent.status == 200
        resent = await http(pair.web.address, "POST", "/api/rooms/commits/messages", token=token,
                            json_body={"id": "c0", "body": "commit 0"})
        assert resent.status == 200  # a duplicate: a commit, but nothing more stored
        after = await scrape(address)
        assert delta(before, after, "squall_store_commit_seconds_count") == 5
        assert delta(before, after, "squall_store_commit_seconds_sum") > 0
        assert delta(before, after, "squall_stored_messages_total") == 4
        assert value(after, "squall_store_failed_commits_total") == 0
        assert value(after, "squall_processor_links") == 1
        assert value(after, "squall_pipeline_in_flight") == 0
        healthz = await http(address, "GET", "/healthz")
        assert (healthz.status, healthz.json()) == (200, {"alive": True})
        # A DNS-rebinding page in a browser on this machine is a loopback client: its Host gives it away.
        assert await status_for_host(address, "/metrics", "evil.example") == 421
        assert await status_for_host(address, "/metrics", "localhost") == 200

    run_async(scenario())


# -- one `squall run` per test: settings of its own ----------------------------------------


def test_readyz_flood_sends_one_canary(tmp_path: Path) -> None:
    """Concurrent probes share one canary and its verdict is reused: a flood of
    /readyz stores one message, not one per probe."""
    with squall_server(tmp_path, env={"SQUALL_READY_CACHE": "3600"}) as node:

        async def flood(count: int) -> list[HTTPResponse]:
            return await asyncio.gather(*(http(node.address, "GET", "/readyz") for _ in range(count)))

        first = run_async(flood(50))
        later = run_async(flood(20))
        assert {response.status for response in first + later} == {200}
        assert len({response.json()["seq"] for response in first + later}) == 1
        assert canaries(node.data_dir) == 1


def test_metrics_refused_outside_metrics_allow(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = {"SQUALL_METRICS_ALLOW": "10.0.0.0/8", "SQUALL_PROCESSOR_METRICS": f"127.0.0.1:{metrics_port}"}
    with squall_server(tmp_path, env=env) as node:

        async def scenario() -> None:
            for address in (node.address, ("127.0.0.1", metrics_port)):
                response = await http(address, "GET", "/metrics")
                assert response.status == 403, (address, response.status)
                assert response.json()["code"] == "metrics_forbidden"
                assert "127.0.0.1 is not in metrics_allow" in response.json()["reason"]
            health = (await http(node.address, "GET", "/api/health")).json()
            assert health["rejections"]["metrics_forbidden"] == {"metrics_allow": 1}
            # Load balancers still get their answers.
            assert (await http(node.address, "GET", "/healthz")).status == 200
            assert (await http(node.address, "GET", "/readyz")).status == 200

        run_async(scenario())


def test_processor_metrics_port_in_use_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        processor = SquallProcess(tmp_path, "processor", env={"SQUALL_PROCESSOR_METRICS": f"127.0.0.1:{port}"})
        with pytest.raises(AssertionError) as caught:
            processor.start()
    assert f"processor_metrics = '127.0.0.1:{port}': cannot listen there" in str(caught.value)
    assert processor.process is not None and processor.process.returncode == 2

