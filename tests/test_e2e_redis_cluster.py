"""Two web nodes on one Redis bus, one processor, one SQLite file: no sticky sessions.

Every test starts ``squall processor`` and two ``squall web --bus redis://…``
on one data folder, with a channel prefix of its own. Clients on both nodes,
over WebSocket, SSE and long-polling (one of them changing node every poll),
must each see every message once, in seq order — also when a node's Redis
subscription is killed just before the newest message, and when Redis itself
is restarted in the middle of the traffic. Counts in every assertion; no sleep:
every wait is on a frame, an event or an answer, under a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from support import TIMEOUT, ChatClient, EventStream, RedisServer, SquallProcess, http, run_async, squall_cluster

pytestmark = pytest.mark.redis

_ids = itertools.count(1)


def cluster_env(url: str, prefix: str) -> dict[str, str]:
    return {
        "SQUALL_BUS": url, "SQUALL_BUS_PREFIX": prefix, "SQUALL_BUS_PING_INTERVAL": "1",
        "SQUALL_RECONNECT_MIN": "0.01", "SQUALL_RECONNECT_MAX": "0.2",
    }


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, bus_prefix: str) -> Iterator[list[SquallProcess]]:
    with squall_cluster(tmp_path, env=cluster_env(redis_url, bus_prefix)) as nodes:
        yield nodes


# -- clients ------------------------------------------------------------------------


class Sender:
    """A WebSocket client that sends messages one at a time, each until acked."""

    def __init__(self, client: ChatClient, room: str) -> None:
        self.client = client
        self.room = room
        self.acked: list[int] = []

    @classmethod
    async def open(cls, node: SquallProcess, token: str, room: str) -> Sender:
        client = await ChatClient.connect(node.address, token)
        assert (await client.join(room))["type"] == "joined"
        return cls(client, room)

    async def send(self, body: str) -> int:
        message_id = f"m{next(_ids)}"
        await self.client.send_json({"type": "send", "room": self.room, "id": message_id, "body": body})
        ack = await self.client.recv_until(lambda f: f.get("id") == message_id and f["type"] in ("ack", "error"))
        assert ack["type"] == "ack", ack
        self.acked.append(ack["seq"])
        return int(ack["seq"])


async def nothing_more(client: ChatClient) -> None:
    """Round-trip a ping: no message (a duplicate) may be queued before its pong."""
    await client.send_json({"type": "ping"})
    frame = await client.recv_until(lambda f: f.get("type") in ("message", "pong"))
    assert frame["type"] == "pong", frame


async def watch_websocket(node: SquallProcess, token: str, room: str, count: int) -> list[int]:
    client = await ChatClient.connect(node.address, token)
    try:
        assert (await client.join(room, since=0))["type"] == "joined"
        seqs: list[int] = []
        while len(seqs) < count:
            frame = await client.recv_type("message")
            seqs.append(frame["seq"])
        await nothing_more(client)
        return seqs
    finally:
        await client.close()


async def watch_sse(node: SquallProcess, token: str, room: str, count: int) -> list[int]:
    stream = await EventStream.open(node.address, room, token, since=0)
    try:
        seqs: list[int] = []
        while len(seqs) < count:
            event = await stream.next_of("message")
            seqs.append(int(event.json()["seq"]))
        return seqs
    finally:
        await stream.close()


async def watch_long_poll(nodes: list[SquallProcess], token: str, room: str, count: int) -> list[int]:
    """Long-poll from seq 0, on the next node in ``nodes`` for every poll."""
    seqs: list[int] = []
    since = 0
    for turn in itertools.count():
        if len(seqs) >= count:
            return seqs
        node = nodes[turn % len(nodes)]
        answer = await http(node.address, "GET", f"/api/rooms/{room}/messages?since={since}&wait=5", token=token)
        assert answer.status == 200, (answer.status, answer.body)
        body = answer.json()
        seqs += [m["seq"] for m in body["messages"]]
        since = body["seq"]
    raise AssertionError("unreachable")


def tokens(node: SquallProcess, *nicks: str) -> list[str]:
    return [node.session(nick) for nick in nicks]


async def kill_subscription(client: redis.asyncio.Redis, node: SquallProcess) -> None:
    """CLIENT KILL ``node``'s Redis subscription (as Redis does to a subscriber
    that falls too far behind)."""
    _, health = node.api("GET", "/api/health")
    name = f"{health['bus']['node']}-sub"
    ids = [c["id"] for c in await client.client_list() if c.get("name", "").endswith(name)]
    assert len(ids) == 1, ids
    assert await client.client_kill_filter(_id=ids[0]) == 1


# -- the tests ----------------------------------------------------------------------------


def test_clients_on_both_nodes_see_every_message_once_in_order(cluster: list[SquallProcess], room: str) -> None:
    a, b = cluster
    count = 40
    alice, dave, erin = tokens(a, "alice", "dave", "erin")
    bob, carol, frank = tokens(b, "bob", "carol", "frank")  # tokens verify on every node

    async def scenario() -> dict[str, list[int]]:
        watchers = {
            "ws on a": asyncio.ensure_future(watch_websocket(a, dave, room, count)),
            "ws on b": asyncio.ensure_future(watch_websocket(b, carol, room, count)),
            "sse on a": asyncio.ensure_future(watch_sse(a, erin, room, count)),
            "sse on b (token from a)": asyncio.ensure_future(watch_sse(b, erin, room, count)),
            "long-poll on b": asyncio.ensure_future(watch_long_poll([b], frank, room, count)),
            "long-poll alternating": asyncio.ensure_future(watch_long_poll([a, b], frank, room, count)),
        }
        on_a, on_b = await Sender.open(a, alice, room), await Sender.open(b, bob, room)
        for n in range(count // 2):
            await asyncio.gather(on_a.send(f"a{n}"), on_b.send(f"b{n}"))
        await asyncio.gather(on_a.client.close(), on_b.client.close())
        assert sorted(on_a.acked + on_b.acked) == list(range(1, count + 1))
        return {name: await asyncio.wait_for(task, 4 * TIMEOUT) for name, task in watchers.items()}

    seen = run_async(scenario())
    for name, seqs in seen.items():
        assert seqs == list(range(1, count + 1)), (name, seqs)
    assert len(a.history(room, alice)) == count
    _, health = b.api("GET", "/api/health")
    assert health["bus"]["received"] >= count // 2 and health["bus"]["dropped"] == 0
    # Each bus message received is timed from its publish on the other node.
    lag = bus_lag(b)
    assert lag["squall_bus_lag_seconds_count"] >= 1 and lag["squall_bus_lag_seconds_sum"] >= 0, lag


def bus_lag(node: SquallProcess) -> dict[str, float]:
    host, port = node.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text) if family.name == "squall_bus_lag_seconds"
        for sample in family.samples if sample.name != "squall_bus_lag_seconds_bucket"
    }


def test_a_node_whose_subscription_is_killed_still_gets_the_newest_message(
    tmp_path: Path, own_redis: RedisServer, bus_prefix: str, room: str
) -> None:
    """B's subscription dies and cannot come back (Redis refuses new connections)
    while A stores and publishes the newest message: B misses the publish, and no
    later message would reveal it. B's resync after reconnecting must deliver it."""
    with squall_cluster(tmp_path, env=cluster_env(own_redis.url, bus_prefix)) as (a, b):
        alice, = tokens(a, "alice")
        bob, carol, dave = tokens(b, "bob", "carol", "dave")

        async def scenario() -> dict[str, list[int]]:
            watchers = {
                "ws on b": asyncio.ensure_future(watch_websocket(b, bob, room, 6)),
                "sse on b": asyncio.ensure_future(watch_sse(b, carol, room, 6)),
                "long-poll on b": asyncio.ensure_future(watch_long_poll([b], dave, room, 6)),
            }
            sender = await Sender.open(a, alice, room)
            for n in range(5):
                await sender.send(f"before {n}")
            client = redis.asyncio.Redis.from_url(own_redis.url, protocol=2)
            try:
                connected = (await client.info("clients"))["connected_clients"]
                await client.config_set("maxclients", connected - 1)  # B may not reconnect
                await kill_subscription(client, b)
                await asyncio.to_thread(b.wait_health, lambda body: not body["bus"]["subscribed"])
                assert await sender.send("the newest") == 6  # B is not subscribed: it misses this
                assert await client.pubsub_numsub(f"{bus_prefix}room:{room}") == [
                    (f"{bus_prefix}room:{room}".encode(), 1)  # only A hears the room now
                ]
                await client.config_set("maxclients", 10_000)
            finally:
                await client.aclose()
                await sender.client.close()
            return {name: await asyncio.wait_for(task, 4 * TIMEOUT) for name, task in watchers.items()}

        seen = run_async(scenario())
        for name, seqs in seen.items():
            assert seqs == [1, 2, 3, 4, 5, 6], (name, seqs)
        health = b.wait_health(lambda body: body["bus"]["subscribed"])
        assert health["bus"]["sessions"] >= 2 and health["bus"]["resyncs"] >= 1


def test_a_restarted_redis_loses_nothing_stored_meanwhile(
    tmp_path: Path, own_redis: RedisServer, bus_prefix: str, room: str
) -> None:
    count = 36
    with squall_cluster(tmp_path, env=cluster_env(own_redis.url, bus_prefix)) as (a, b):
        alice, carol, erin = tokens(a, "alice", "carol", "erin")
        bob, dave, frank = tokens(b, "bob", "dave", "frank")

        async def scenario() -> dict[str, list[int]]:
            watchers = {
                "ws on a": asyncio.ensure_future(watch_websocket(a, carol, room, count)),
                "ws on b": asyncio.ensure_future(watch_websocket(b, dave, room, count)),
                "sse on a": asyncio.ensure_future(watch_sse(a, erin, room, count)),
                "sse on b": asyncio.ensure_future(watch_sse(b, frank, room, count)),
                "long-poll alternating": asyncio.ensure_future(watch_long_poll([a, b], frank, room, count)),
            }
            on_a, on_b = await Sender.open(a, alice, room), await Sender.open(b, bob, room)
            for n in range(count // 2):
                if n == count // 6:
                    own_redis.stop()  # sends go on: they are stored, and delivered later
                elif n == count // 3:
                    own_redis.start()
                await asyncio.gather(on_a.send(f"a{n}"), on_b.send(f"b{n}"))
            await asyncio.gather(on_a.client.close(), on_b.client.close())
            assert sorted(on_a.acked + on_b.acked) == list(range(1, count + 1))
            return {name: await asyncio.wait_for(task, 4 * TIMEOUT) for name, task in watchers.items()}

        seen = run_async(scenario())
        for name, seqs in seen.items():
            assert seqs == list(range(1, count + 1)), (name, seqs)
        for node in (a, b):  # what each published while Redis was down has gone out since
            health = node.wait_health(lambda body: body["bus"]["subscribed"] and body["bus"]["queued"] == 0)
            assert health["bus"]["sessions"] >= 2 and health["bus"]["resyncs"] >= 1, health["bus"]
        assert own_redis.starts == 2


def test_a_session_ended_on_one_node_ends_on_the_other_at_once(cluster: list[SquallProcess], room: str) -> None:
    a, b = cluster
    token = a.session("alice")

    async def scenario() -> None:
        on_b = await ChatClient.connect(b.address, token)  # a token from A, used on B
        try:
            assert (await on_b.join(room))["type"] == "joined"
            answer = await http(a.address, "POST", "/api/logout", token=token)
            assert answer.status == 204
            # B closes the socket with 4001 as soon as the bus brings the news
            # (its token cache would otherwise believe the session for a minute).
            with pytest.raises(Exception) as closed:
                while True:
                    await on_b.recv_json()
            assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4001
            answer = await http(b.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=token)
            assert answer.status == 401, answer.body
        finally:
            await on_b.close()

    run_async(scenario())


def test_a_client_resumes_on_the_other_node_with_since(cluster: list[SquallProcess], room: str) -> None:
    """WebSocket on A, then on B with ``since`` (as after A went away); SSE the same
    way with ``Last-Event-ID``: each message exactly once, in order."""
    a, b = cluster
    alice, carol = tokens(a, "alice", "carol")

    async def scenario() -> tuple[list[int], list[int]]:
        sender = await Sender.open(b, alice, room)
        reader = await ChatClient.connect(a.address, carol)
        assert (await reader.join(room, since=0))["type"] == "joined"
        stream = await EventStream.open(a.address, room, carol, since=0)
        seen_ws: list[int] = []
        seen_sse: list[int] = []
        try:
            for n in range(5):
                await sender.send(f"first {n}")
            while len(seen_ws) < 5:
                seen_ws.append((await reader.recv_type("message"))["seq"])
            while len(seen_sse) < 5:
                seen_sse.append(int((await stream.next_of("message")).json()["seq"]))
        finally:
            await reader.close()
            await stream.close()
        for n in range(5):
            await sender.send(f"meanwhile {n}")  # stored while the reader is away
        reader = await ChatClient.connect(b.address, carol)
        stream = await EventStream.open(b.address, room, carol, last_event_id=seen_sse[-1])
        try:
            assert (await reader.join(room, since=seen_ws[-1]))["type"] == "joined"
            for n in range(5):
                await sender.send(f"after {n}")
            while len(seen_ws) < 15:
                seen_ws.append((await reader.recv_type("message"))["seq"])
            while len(seen_sse) < 15:
                seen_sse.append(int((await stream.next_of("message")).json()["seq"]))
            await nothing_more(reader)
        finally:
            await reader.close()
            await stream.close()
            await sender.client.close()
        return seen_ws, seen_sse

    seen_ws, seen_sse = run_async(scenario())
    assert seen_ws == list(range(1, 16))
    assert seen_sse == list(range(1, 16))
