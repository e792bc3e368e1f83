"""The Redis bus against a real Redis: two buses in one process are two nodes.

Each test uses its own channel prefix on the machine's shared Redis, or a
``redis-server`` of its own when it kills or restarts Redis. The receiver is
the smallest honest :class:`squall.bus.Receiver`: it keeps what it is given and
wakes the test. Nothing sleeps; every wait is on an event, under a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio

from squall.bus.redis import RedisBus
from squall.bus.wire import room_channel
from squall.frames import Broadcast
from support import TIMEOUT, RedisServer, run_async

pytestmark = pytest.mark.redis


class Inbox:
    """A bus receiver that records everything and wakes whoever waits."""

    def __init__(self) -> None:
        self.broadcasts: list[Broadcast] = []
        self.resyncs: list[list[str]] = []
        self.ended: list[list[str]] = []
        self._changed = asyncio.Event()

    def receive_all(self, broadcasts: Any) -> None:
        self.broadcasts.extend(broadcasts)
        self._changed.set()

    def resync(self, rooms: Any) -> None:
        self.resyncs.append(sorted(rooms))
        self._changed.set()

    def sessions_ended(self, session_ids: Any) -> None:
        self.ended.append(sorted(session_ids))
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    @property
    def seqs(self) -> list[int | None]:
        return [b.seq for b in self.broadcasts]


def message(seq: int, room: str = "r") -> Broadcast:
    return Broadcast(room, seq, b'{"type":"message","seq":%d}' % seq, mentions=frozenset({"bob"}))


@asynccontextmanager
async def node(url: str, prefix: str, **options: Any) -> AsyncIterator[tuple[RedisBus, Inbox]]:
    """A started bus and its inbox; live (subscribed) before it is handed over."""
    options = {"reconnect_min": 0.01, "reconnect_max": 0.2, "ping_interval": 1.0, **options}
    bus = RedisBus(url, prefix=prefix, **options)
    inbox = Inbox()
    await bus.start(inbox)
    try:
        await asyncio.wait_for(bus.live.wait(), TIMEOUT)
        yield bus, inbox
    finally:
        await bus.close()


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url, protocol=2)
    try:
        yield client
    finally:
        await client.aclose()


async def kill_subscription(client: redis.asyncio.Redis, bus: RedisBus) -> None:
    """CLIENT KILL the node's subscription connection (found by its name), as Redis
    does to a subscriber whose output buffer overflows."""
    name = f"{bus.prefix}node-{bus.origin.decode()}-sub"
    ids = [c["id"] for c in await client.client_list() if c.get("name") == name]
    assert len(ids) == 1, (name, ids)
    assert await client.client_kill_filter(_id=ids[0]) == 1


def test_broadcasts_reach_other_nodes_in_order_and_never_come_back_to_their_own(
    redis_url: str, bus_prefix: str
) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (a, a_inbox), node(redis_url, bus_prefix) as (b, b_inbox):
            await a.subscribe("r")
            await b.subscribe("r")
            typing = Broadcast("r", None, b'{"type":"presence","state":"typing"}', kind="presence")
            delivered_locally_with_queued: list[tuple[int, bool]] = []
            a_receive = a_inbox.receive_all

            def receive_all(broadcasts: Any) -> None:
                delivered_locally_with_queued.append((a.status()["queued"], a._idle.is_set()))
                a_receive(broadcasts)

            a_inbox.receive_all = receive_all  # type: ignore[method-assign]
            a.publish_all([message(1), message(2), typing])
            await a_inbox.until(lambda: len(a_inbox.broadcasts) == 3)
            # The publisher took them from the queue (and wrote its PUBLISH)
            # before a's own fan-out: members elsewhere do not wait for a's.
            assert delivered_locally_with_queued == [(0, False)]  # taken, and in flight
            a.publish(message(3, room="elsewhere"))  # b has no member there
            await b_inbox.until(lambda: len(b_inbox.broadcasts) >= 3)
            assert [(x.seq, x.kind, x.payload, x.mentions) for x in b_inbox.broadcasts] == [
                (x.seq, x.kind, x.payload, x.mentions) for x in (message(1), message(2), typing)
            ]
            # b answers after it has a's: on a's subscription a's own echo would come first.
            b.publish(message(4))
            await a_inbox.until(lambda: 4 in a_inbox.seqs)
            assert a_inbox.seqs == [1, 2, None, 3, 4]  # its own once (delivered at once), then b's
            assert b_inbox.seqs == [1, 2, None, 4]
            assert a.status()["received"] == 1 and b.status()["received"] == 3

    run_async(scenario())


def test_a_prefix_keeps_squalls_sharing_a_redis_apart(redis_url: str, bus_prefix: str) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (a, _), node(redis_url, bus_prefix + "other:") as (b, b_inbox), \
                node(redis_url, bus_prefix) as (c, c_inbox):
            await b.subscribe("r")
            await c.subscribe("r")
            a.publish(message(1))
            await c_inbox.until(lambda: len(c_inbox.broadcasts) == 1)
            c.publish(message(2))  # b would have had 1 by the time it has 2
            b.publish(message(9))
            await b_inbox.until(lambda: len(b_inbox.broadcasts) == 1)
            assert b_inbox.seqs == [9]

    run_async(scenario())


def test_subscribe_returns_once_redis_counts_the_node_and_unsubscribe_stops_it(
    redis_url: str, bus_prefix: str
) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (b, _), raw(redis_url) as client:
            channel = room_channel(bus_prefix, "r")
            await b.subscribe("r")
            assert await client.pubsub_numsub(channel) == [(channel, 1)]
            b.unsubscribe("r")
            await b.subscribe("s")  # confirmed after the UNSUBSCRIBE sent before it
            assert await client.pubsub_numsub(channel) == [(channel, 0)]
            assert b.status()["rooms"] == 1

    run_async(scenario())


def test_a_killed_subscription_comes_back_and_resyncs_every_open_room(redis_url: str, bus_prefix: str) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (a, _), node(redis_url, bus_prefix) as (b, b_inbox), \
                raw(redis_url) as client:
            await b.subscribe("r")
            await b.subscribe("s")
            assert b_inbox.resyncs == []
            await kill_subscription(client, b)
            await b_inbox.until(lambda: len(b_inbox.resyncs) == 1)
            assert b_inbox.resyncs == [["r", "s"]]
            assert b.status()["sessions"] == 2 and b.status()["subscribed"]
            a.publish(message(1, room="s"))
            await b_inbox.until(lambda: len(b_inbox.broadcasts) == 1)
            assert b_inbox.seqs == [1]

    run_async(scenario())


def test_a_full_publish_queue_drops_the_oldest_and_makes_every_node_resync(
    redis_url: str, bus_prefix: str
) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix, max_queue=3) as (a, a_inbox), \
                node(redis_url, bus_prefix) as (b, b_inbox):
            await b.subscribe("r")
            await b.subscribe("s")
            a.publish_all([message(seq) for seq in range(1, 6)])  # 5 into a queue of 3
            assert a.status()["dropped"] == 2
            await b_inbox.until(lambda: len(b_inbox.resyncs) == 1)
            assert b_inbox.seqs == [3, 4, 5]  # published before the notice
            assert b_inbox.resyncs == [["r", "s"]]
            assert a_inbox.seqs == [1, 2, 3, 4, 5] and a_inbox.resyncs == []  # its own went out locally

    run_async(scenario())


def test_ended_sessions_reach_the_other_nodes(redis_url: str, bus_prefix: str) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (a, a_inbox), node(redis_url, bus_prefix) as (_, b_inbox):
            a.publish_sessions_ended({"s2", "s1"})
            await b_inbox.until(lambda: bool(b_inbox.ended))
            assert b_inbox.ended == [["s1", "s2"]]
            assert a_inbox.ended == []

    run_async(scenario())


def test_garbage_on_a_room_channel_is_counted_and_dropped(redis_url: str, bus_prefix: str) -> None:
    async def scenario() -> None:
        async with node(redis_url, bus_prefix) as (a, _), node(redis_url, bus_prefix) as (b, b_inbox), \
                raw(redis_url) as client:
            await b.subscribe("r")
            channel = room_channel(bus_prefix, "r")
            await client.publish(channel, b"GET / HTTP/1.1\r\n\r\n")
            await client.publish(channel, b"SQB1 x\n[1,\"message\",[],999]\n{}")
            await client.publish(bus_prefix.encode() + b"control", b'{"op":"reboot"}')
            a.publish(message(1))
            await b_inbox.until(lambda: len(b_inbox.broadcasts) == 1)
            assert b.status()["bad"] == 3 and b_inbox.resyncs == [] and b.status()["subscribed"]

    run_async(scenario())


def test_a_restarted_redis_is_reconnected_publishes_kept_and_rooms_resynced(
    own_redis: RedisServer, bus_prefix: str
) -> None:
    async def scenario() -> None:
        async with node(own_redis.url, bus_prefix) as (a, _), node(own_redis.url, bus_prefix) as (b, b_inbox):
            await b.subscribe("r")
            own_redis.stop()
            a.publish(message(1))  # Redis is down: it waits in a's queue
            own_redis.start()
            await b_inbox.until(lambda: len(b_inbox.resyncs) == 1)
            assert b_inbox.resyncs == [["r"]] and b.status()["sessions"] == 2
            a.publish(message(2))
            await b_inbox.until(lambda: 2 in b_inbox.seqs)
            # 1 was published before 2 (one queue, in order): b has it, or it
            # was published before b subscribed again and b's resync reads it.
            assert a.status()["published"] == 2 and a.status()["queued"] == 0
            assert a.status()["dropped"] == 0

    run_async(scenario())
