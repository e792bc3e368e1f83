"""Presence across two web nodes on one Redis: every node shows every node's members.

``squall_cluster`` starts one processor and two ``squall web --bus redis://…``
with a key prefix of their own and short heartbeats (0.5 s, TTL 3 s), so that
"a dead node's members leave within ttl + heartbeat" is 3.5 s here. Members on
node A watch what members on node B do: ``presence`` events, ``/members`` on
either node, long-pollers, and a node killed with SIGKILL. Every wait is on a
frame or an answer, under a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support import TIMEOUT, ChatClient, RedisServer, SquallProcess, http, run_async, squall_cluster

pytestmark = pytest.mark.redis

HEARTBEAT = 0.5
TTL = 3.0  # six heartbeats: a loaded machine must not kill a live node
BOUND = TTL + HEARTBEAT  # docs/presence.md: a dead node's members leave within ttl + heartbeat


def cluster_env(redis_url: str, bus_prefix: str) -> dict[str, str]:
    return {
        "SQUALL_BUS": redis_url, "SQUALL_BUS_PREFIX": bus_prefix, "SQUALL_BUS_PING_INTERVAL": "1",
        "SQUALL_RECONNECT_MIN": "0.01", "SQUALL_RECONNECT_MAX": "0.2",
        "SQUALL_PRESENCE_INTERVAL": "0.1",
        "SQUALL_PRESENCE_HEARTBEAT": str(HEARTBEAT), "SQUALL_PRESENCE_TTL": str(TTL),
    }


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, bus_prefix: str) -> Iterator[list[SquallProcess]]:
    try:
        with squall_cluster(tmp_path, env=cluster_env(redis_url, bus_prefix)) as nodes:
            yield nodes
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{bus_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


async def members(node: SquallProcess, room: str, token: str) -> list[str]:
    answer = await http(node.address, "GET", f"/api/rooms/{room}/members?limit=50", token=token)
    assert answer.status == 200, (answer.status, answer.body)
    body = answer.json()
    assert body["count"] == len(body["members"]) and body["next"] is None, body
    return list(body["members"])


async def until_presence(client: ChatClient, nick: str, state: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The first presence event that says ``nick`` is now ``state``."""
    return await client.recv_until(
        lambda f: f.get("type") == "presence" and {"nick": nick, "state": state} in f.get("changes", []),
        timeout=timeout,
    )


def test_members_and_presence_events_cover_both_nodes(cluster: list[SquallProcess], room: str) -> None:
    a, b = cluster
    ann, bob, cy = a.session("ann"), b.session("Bob"), b.session("cy")

    async def main() -> None:
        on_a = await ChatClient.connect(a.address, ann)
        try:
            assert (await on_a.join(room))["type"] == "joined"
            on_b = await ChatClient.connect(b.address, bob)
            joined = await on_b.join(room)
            assert joined["type"] == "joined"
            event = await until_presence(on_a, "Bob", "online")
            assert event["count"] == 2
            assert await members(a, room, ann) == ["ann", "Bob"]
            assert await members(b, room, bob) == ["ann", "Bob"]
            # A guest may not take a nick online on another node, nor one that looks like it.
            taken = await http(a.address, "POST", "/api/session", body=b'{"nick":"BOB"}',
                               headers={"Content-Type": "application/json"})
            assert taken.status == 409 and taken.json()["code"] == "nick_taken", taken.body
            assert "online right now" in taken.json()["reason"]
            lookalike = await http(a.address, "POST", "/api/session", json_body={"nick": "B\u043eb"})  # Cyrillic о
            assert lookalike.status == 409 and lookalike.json()["code"] == "nick_taken", lookalike.body
            assert "looks like 'Bob'" in lookalike.json()["reason"], lookalike.body
            # A long-poller on B is a member on A too.
            answer = await http(b.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=cy)
            assert answer.status == 200
            assert (await until_presence(on_a, "cy", "online"))["count"] == 3
            assert await members(a, room, ann) == ["ann", "Bob", "cy"]
            await on_b.close()
            event = await until_presence(on_a, "Bob", "offline")
            assert event["count"] == 2
            assert await members(a, room, ann) == ["ann", "cy"]
        finally:
            await on_a.close()

    run_async(main())


def test_a_nick_on_both_nodes_stays_online_until_it_leaves_both(cluster: list[SquallProcess], room: str) -> None:
    a, b = cluster
    ann, bob, dan = a.session("ann"), a.session("bob"), a.session("dan")

    async def main() -> None:
        watcher = await ChatClient.connect(a.address, ann)
        try:
            await watcher.join(room)
            bob_a = await ChatClient.connect(a.address, bob)
            bob_b = await ChatClient.connect(b.address, bob)
            await bob_a.join(room)
            await bob_b.join(room)
            await until_presence(watcher, "bob", "online")
            await bob_a.close()
            # Node A's events leave in the order its scripts ran: once dan's
            # join (after bob left A) is announced, bob's leaving A was applied.
            on_a = await ChatClient.connect(a.address, dan)
            await on_a.join(room)
            while True:
                event = await watcher.recv_type("presence")
                assert {"nick": "bob", "state": "offline"} not in event.get("changes", []), event
                if {"nick": "dan", "state": "online"} in event.get("changes", []):
                    break
            assert await members(a, room, ann) == ["ann", "bob", "dan"]
            await bob_b.close()
            event = await until_presence(watcher, "bob", "offline")
            assert event["count"] == 2
            assert await members(b, room, ann) == ["ann", "dan"]
            await on_a.close()
        finally:
            await watcher.close()

    run_async(main())


def test_a_killed_node_s_members_leave_within_the_bound(cluster: list[SquallProcess], room: str) -> None:
    a, b = cluster
    tokens = [b.session(f"b{i}") for i in range(5)]
    ann = a.session("ann")

    async def main() -> None:
        watcher = await ChatClient.connect(a.address, ann)
        clients: list[ChatClient] = []
        try:
            await watcher.join(room)
            for token in tokens:
                client = await ChatClient.connect(b.address, token)
                clients.append(client)
                await client.join(room)
            while len(await members(a, room, ann)) < 6:
                await watcher.recv_type("presence")
            assert b.process is not None
            b.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            gone: set[str] = set()
            while gone != {f"b{i}" for i in range(5)}:
                event = await watcher.recv_type("presence", timeout=BOUND + TIMEOUT)
                gone |= {c["nick"] for c in event.get("changes", []) if c["state"] == "offline"}
            took = time.monotonic() - killed
            print(f"\na SIGKILLed node's 5 members were announced offline after {took:.2f} s"
                  f" (bound {BOUND} s)")
            # The bound, plus a presence interval and slack for a loaded 2-core machine.
            assert took < BOUND + 2.0, took
            assert await members(a, room, ann) == ["ann"]
        finally:
            await watcher.close()
            for client in clients:
                await client.close()

    run_async(main())


def test_redis_restarted_empty_nodes_show_their_own_members_then_mend(
    tmp_path: Path, own_redis: RedisServer, room: str,
) -> None:
    with squall_cluster(tmp_path, env=cluster_env(own_redis.url, "p:")) as (a, b):
        ann, bob, cy = a.session("ann"), b.session("bob"), a.session("cy")

        def mended(times: int) -> Any:
            return lambda body: body["presence"]["shared"] and body["presence"]["mended"] >= times

        async def main() -> None:
            on_a = await ChatClient.connect(a.address, ann)
            on_b = await ChatClient.connect(b.address, bob)
            try:
                await on_a.join(room)
                await on_b.join(room)
                await until_presence(on_a, "bob", "online")
                assert await members(a, room, ann) == ["ann", "bob"]
                mends = [node.api("GET", "/api/health")[1]["presence"]["mended"] for node in (a, b)]
                own_redis.stop()
                # Each node shows its own members while Redis is away, and
                # tells them of its own comings and goings.
                assert await members(a, room, ann) == ["ann"]
                assert await members(b, room, bob) == ["bob"]
                on_a_too = await ChatClient.connect(a.address, cy)
                await on_a_too.join(room)
                assert (await until_presence(on_a, "cy", "online"))["count"] == 2
                own_redis.start()  # empty: every pair and heartbeat is gone
                await asyncio.to_thread(a.wait_health, mended(mends[0] + 1))
                await asyncio.to_thread(b.wait_health, mended(mends[1] + 1))
                assert await members(a, room, ann) == ["ann", "bob", "cy"]
                assert await members(b, room, bob) == ["ann", "bob", "cy"]
                await on_a_too.close()
            finally:
                await on_a.close()
                await on_b.close()

        run_async(main())
