"""RedisPresence against a real Redis: two instances in one process are two web nodes.

Each test has a key prefix of its own on the machine's shared Redis (its keys
are deleted after), or a ``redis-server`` of its own when it stops Redis. A
test that waits for an event listens on the room's channel as a node would,
and waits on it under a deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import redis.asyncio

from squall.bus.redis_presence import CHANGES_PER_SCRIPT, RedisPresence
from squall.bus.wire import decode_broadcasts, room_channel
from squall.coalesce import Change, encode_presence
from squall.presence import PresenceTable, Reach
from support import REDIS_URL, TIMEOUT, RedisServer, run_async

pytestmark = pytest.mark.redis


def online(*nicks: str) -> list[Change]:
    return [Change(n, "online") for n in nicks]


def offline(*nicks: str) -> list[Change]:
    return [Change(n, "offline") for n in nicks]


@asynccontextmanager
async def node(
    prefix: str, *, url: str = REDIS_URL, start: bool = True, table: PresenceTable | None = None,
    **options: Any,
) -> AsyncIterator[RedisPresence]:
    """A RedisPresence as a web node has it; ``start=False``: one that never beats
    (it dies ``ttl`` seconds after its last update)."""
    # A TTL far above the heartbeat: a loaded machine must not kill a live node.
    options = {"heartbeat": 0.3, "ttl": 5.0, **options}
    presence = RedisPresence(url, table or PresenceTable(), node_id=secrets.token_hex(8), prefix=prefix, **options)
    if start:
        await presence.start()
    try:
        yield presence
    finally:
        await presence.close()


class Listener:
    """Presence events on some rooms' channels, as any node receives them."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.asyncio.Redis.from_url(url, protocol=2)
        self.pubsub = self.client.pubsub()
        self.prefix = prefix

    async def subscribe(self, *rooms: str) -> None:
        await self.pubsub.subscribe(*(room_channel(self.prefix, r) for r in rooms))

    async def next_event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                if message is not None and message["type"] == "message":
                    room = message["channel"].decode()[len(self.prefix) + len("room:"):]
                    broadcasts = decode_broadcasts(room, message["data"])[-1]  # (origin, [time,] broadcasts)
                    assert [b.kind for b in broadcasts] == ["presence"]
                    return dict(orjson.loads(broadcasts[0].payload))

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}:"


def test_update_is_idempotent_and_reports_only_what_changed_the_room(prefix: str) -> None:
    async def main() -> None:
        async with node(prefix) as a:
            first = await a.update({"r": online("Bob", "ann")})
            assert first.reach is Reach.PUBLISHED
            assert first.changes == {"r": online("Bob", "ann")} and first.counts == {"r": 2}
            again = await a.update({"r": online("Bob")})
            assert again.changes == {} and again.counts == {}
            gone = await a.update({"r": offline("Bob")}, count=["r", "elsewhere"])
            assert gone.changes == {"r": offline("Bob")} and gone.counts == {"r": 1, "elsewhere": 0}
            assert (await a.update({"r": offline("Bob")})).changes == {}
            assert await a.counts(["r"]) == {"r": 1}

    run_async(main())


def test_a_nick_on_two_nodes_goes_offline_only_when_both_let_go(prefix: str) -> None:
    async def main() -> None:
        async with node(prefix) as a, node(prefix) as b:
            assert (await a.update({"r": online("bob")})).changes == {"r": online("bob")}
            assert (await b.update({"r": online("bob")})).changes == {}
            assert (await a.update({"r": offline("bob")})).changes == {}
            assert await b.counts(["r"]) == {"r": 1}
            assert await a.online("bob") == "bob"
            assert (await b.update({"r": offline("bob")})).changes == {"r": offline("bob")}
            assert await a.counts(["r"]) == {"r": 0}
            assert await a.online("bob") is None

    run_async(main())


def test_who_is_online_and_who_looks_like_them_is_asked_of_every_node(prefix: str) -> None:
    async def main() -> None:
        async with node(prefix) as a, node(prefix) as b:
            await a.update({"r": online("Alice"), "s": online("Alice")})
            assert await b.online("alice") == "alice"
            assert await b.lookalike("АLICE", besides="аlice") == "Alice"  # Cyrillic А and а
            assert await b.lookalike("AIice", besides="aiice") == "Alice"  # capital I for l
            assert await b.lookalike("Alice", besides="alice") is None  # her own nick
            assert await b.lookalike("bob", besides="bob") is None
            await a.update({"r": offline("Alice")})
            assert await b.lookalike("AIice", besides="aiice") == "Alice"  # still in s
            await a.update({"s": offline("Alice")})
            assert await b.online("alice") is None
            assert await b.lookalike("AIice", besides="aiice") is None

    run_async(main())


def test_pages_by_cursor_list_every_node_s_members_once_in_casefolded_order(prefix: str) -> None:
    async def main() -> None:
        async with node(prefix) as a, node(prefix) as b:
            await a.update({"r": online("Zed", "amy", "Émile", "carl")})
            await b.update({"r": online("Bea", "dan", "amy", "Yan")})
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                page = await b.page("r", after=cursor, limit=3)
                assert page.count == 7
                seen += page.nicks
                pages += 1
                if page.next is None:
                    break
                cursor = page.next
            assert seen == ["amy", "Bea", "carl", "dan", "Yan", "Zed", "Émile"]
            assert pages == 3
            # A member leaving between pages does not shift the rest.
            first = await a.page("r", after=None, limit=3)
            await a.update({"r": offline("amy")})
            assert first.nicks == ["amy", "Bea", "carl"]
            assert (await a.page("r", after=first.next, limit=3)).nicks == ["dan", "Yan", "Zed"]
            assert (await a.page("r", after=None, limit=3)).nicks == ["amy", "Bea", "carl"]  # on b still
            await b.update({"r": offline("amy")})
            assert (await a.page("r", after=None, limit=3)).nicks == ["Bea", "carl", "dan"]
            assert await a.page("empty", after=None, limit=3) == type(first)(0, [], None)

    run_async(main())


def test_the_script_publishes_each_room_s_event_as_the_node_would_encode_it(prefix: str) -> None:
    async def main() -> None:
        listener = Listener(REDIS_URL, prefix)
        await listener.subscribe("r", "big")
        try:
            async with node(prefix, detail_max=2) as a:
                await a.update({"r": online("ann", "Zoë")})
                event = await listener.next_event()
                expected = orjson.loads(encode_presence("r", 2, online("ann", "Zoë"), detail_max=2))
                assert event == expected
                await a.update({"big": online("a", "b", "c")})
                assert await listener.next_event() == {"type": "presence", "room": "big", "count": 3}
        finally:
            await listener.close()

    run_async(main())


def test_a_dead_node_s_members_are_swept_by_a_live_node(prefix: str) -> None:
    async def main() -> None:
        listener = Listener(REDIS_URL, prefix)
        await listener.subscribe("r")
        try:
            async with node(prefix) as live, node(prefix, start=False, ttl=0.6) as doomed:
                await live.update({"r": online("ann", "bob")})
                assert (await listener.next_event())["count"] == 2
                await doomed.update({"r": online("bob", "cy")})  # its heartbeat now lives 0.6 s
                died = time.monotonic()
                assert (await listener.next_event())["changes"] == [{"nick": "cy", "state": "online"}]
                event = await listener.next_event()
                took = time.monotonic() - died
                assert event == {"type": "presence", "room": "r", "count": 2,
                                 "changes": [{"nick": "cy", "state": "offline"}]}
                assert took < 0.6 + 0.3 + 2.0, took  # ttl + heartbeat, and slack for a busy machine
                assert (await live.page("r", after=None, limit=10)).nicks == ["ann", "bob"]
                assert await live.online("cy") is None
                assert live.stats["swept"] == 1
        finally:
            await listener.close()

    run_async(main())


def test_a_node_that_stops_takes_its_members_out_at_once(prefix: str) -> None:
    async def main() -> None:
        async with node(prefix, ttl=60, heartbeat=20) as live:
            async with node(prefix, ttl=60, heartbeat=20) as leaving:
                await leaving.update({"r": online("ann", "bob")})
                await live.update({"r": online("bob")})
            assert (await live.page("r", after=None, limit=10)).nicks == ["bob"]

    run_async(main())


def test_a_node_swept_while_alive_puts_its_members_back(prefix: str) -> None:
    """A node that stood still past its TTL was swept; the next script it runs notices and mends."""

    async def main() -> None:
        table = PresenceTable()
        table.connect("r", "Ann", "ann")
        async with node(prefix, table=table, heartbeat=30, ttl=60) as a, node(prefix) as sweeper:
            await a.update({"r": online("Ann")})
            raw = redis.asyncio.Redis.from_url(REDIS_URL)
            try:
                await raw.delete(f"{prefix}presence:node:{a.node_id}")  # as if it had expired
            finally:
                await raw.aclose()
            await sweeper._sweep_dead()
            assert await sweeper.counts(["r"]) == {"r": 0}
            assert await sweeper.online("ann") is None
            mends = a.stats["mended"]
            await a.update({})
            assert a.stats["mended"] == mends + 1
            assert await sweeper.counts(["r"]) == {"r": 1}
            assert (await sweeper.page("r", after=None, limit=5)).nicks == ["Ann"]
            assert await sweeper.online("ann") == "ann"

    run_async(main())


def test_redis_down_shows_the_node_s_own_view_and_mends_when_back(own_redis: RedisServer) -> None:
    prefix = "t:"

    async def main() -> None:
        table = PresenceTable()
        async with node(prefix, url=own_redis.url, table=table) as a:
            table.connect("r", "ann", "ann")
            assert (await a.update({"r": online("ann")})).reach is Reach.PUBLISHED
            own_redis.stop()
            table.connect("r", "bob", "bob")
            down = await a.update({"r": online("bob")})
            assert down.reach is Reach.THIS_NODE
            assert down.changes == {"r": online("bob")} and down.counts == {"r": 2}
            assert (await a.page("r", after=None, limit=10)).nicks == ["ann", "bob"]
            own_redis.start()  # empty: every pair is gone
            table.connect("r", "cy", "cy")
            back = await a.update({"r": online("cy")}, count=["r"])
            assert back.reach is Reach.PUBLISHED
            # Mended by this update or by a heartbeat just before it.
            assert set(back.changes.get("r", [])) <= set(online("ann", "bob", "cy")) and back.counts == {"r": 3}
            assert (await a.page("r", after=None, limit=10)).nicks == ["ann", "bob", "cy"]
            assert a.stats["mended"] >= 1

    run_async(main())


def test_figures_ops_and_time_of_an_update_of_1000_changes(prefix: str) -> None:
    """Prints what the report quotes: Redis commands per join and leave, the
    time of one update of CHANGES_PER_SCRIPT joins and as many leaves, and
    Redis's memory per online (room, nick) pair (rooms of 100 here)."""

    async def main() -> None:
        raw = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            table = PresenceTable()
            async with node(prefix, heartbeat=60, ttl=120, table=table) as a:
                await a.update({"warm": online("x")})

                async def commands() -> int:
                    stats = await raw.info("commandstats")
                    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith("cmdstat_info"))

                async def script_ms() -> float:
                    """Time Redis spent in scripts (the machine is shared: an upper bound)."""
                    stats = await raw.info("commandstats")
                    return sum(int(stats.get(k, {}).get("usec", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval")) / 1000

                n = CHANGES_PER_SCRIPT
                joins = {f"room{i % 10}": online(*(f"user{j}" for j in range(i, n, 10))) for i in range(10)}
                leaves = {room: offline(*(c.nick for c in cs)) for room, cs in joins.items()}
                for room, cs in joins.items():  # as the node's table has them when it updates
                    for change in cs:
                        table.connect(room, change.nick, change.nick)
                before, in_redis = await commands(), await script_ms()
                started = time.perf_counter()
                updated = await a.update(joins)
                join_ms = 1000 * (time.perf_counter() - started)
                middle, join_redis_ms = await commands(), await script_ms() - in_redis
                memory = 0
                async for key in raw.scan_iter(match=f"{prefix}*", count=1000):
                    memory += await raw.memory_usage(key, samples=0) or 0
                leaves_from = await commands()  # not counting the measuring
                in_redis = await script_ms()
                started = time.perf_counter()
                await a.update(leaves)
                leave_ms = 1000 * (time.perf_counter() - started)
                after, leave_redis_ms = await commands(), await script_ms() - in_redis
                assert sum(updated.counts.values()) == n
                # The shared server counts other clients' commands too: these are upper bounds.
                per_join = (middle - before) / n
                per_leave = (after - leaves_from) / n
                print(f"\nupdate of {n} joins of new users in 10 rooms: {join_ms:.1f} ms"
                      f" ({join_redis_ms:.1f} ms in Redis), {per_join:.2f} Redis commands per join;"
                      f" {n} leaves: {leave_ms:.1f} ms ({leave_redis_ms:.1f} ms in Redis), {per_leave:.2f} per leave;"
                      f" {memory / (n + 1):.0f} bytes of Redis per online pair")
                assert per_join < 10 and per_leave < 12
        finally:
            await raw.aclose()

    run_async(main())
