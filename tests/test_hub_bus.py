"""The hub on a shared bus: subscriptions follow open rooms, lost broadcasts are
read back from the store (resync), preview updates from several nodes go out once.

Real SQLite store, the real hub; the bus side is the smallest honest
:class:`squall.hub.Subscriptions` (it records calls and can hold a subscribe
open, as a bus waiting for Redis's confirmation does). Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import orjson
from tornado.testing import AsyncTestCase, ExpectLog, gen_test

from squall.frames import Broadcast
from squall.hub import ROOM_IDLE_SECONDS, Hub, broadcast_from_draft
from squall.message import Draft
from squall.store.sqlite import SQLiteStore
from test_hub import RecordingMember

TIMEOUT = 10


class RecordingSubscriptions:
    """Records subscribe/unsubscribe; ``hold`` keeps the next subscribes waiting."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.hold: asyncio.Future[None] | None = None

    async def subscribe(self, room: str) -> None:
        self.calls.append(("subscribe", room))
        if self.hold is not None:
            await self.hold

    def unsubscribe(self, room: str) -> None:
        self.calls.append(("unsubscribe", room))


def update(room: str, seq: int, title: str = "t") -> Broadcast:
    event = {"type": "update", "room": room, "seq": seq, "links": [{"url": "https://x.example", "title": title}]}
    return Broadcast(room, None, orjson.dumps(event), kind="update")


class HubOnBusTest(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        self._dir = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(str(Path(self._dir.name) / "squall.db"))
        self.io_loop.run_sync(self.store.open)
        self.bus = RecordingSubscriptions()
        self.hub = Hub(self.store, bus=self.bus, recent_per_room=256, backlog_page=10, history_on_join=50)
        self._ids = 0

    def tearDown(self) -> None:
        self.io_loop.run_sync(self.store.close)
        self._dir.cleanup()
        super().tearDown()

    async def save(self, room: str, count: int) -> list[Draft]:
        drafts = []
        for _ in range(count):
            self._ids += 1
            drafts.append(Draft(room=room, nick="alice", id=f"c{self._ids}", body=f"body {self._ids}", ts=self._ids))
        return list(await self.store.save_messages(drafts))

    async def live_member(self, room: str) -> RecordingMember:
        member = RecordingMember(room)
        opened, cursor = await self.hub.join(room, None)
        await self.hub.catch_up(member, opened, cursor)
        return member

    # -- subscriptions ---------------------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_a_room_reads_its_last_seq_only_once_its_subscription_is_confirmed(self) -> None:
        await self.save("r", 2)
        self.bus.hold = asyncio.get_running_loop().create_future()
        opening = asyncio.ensure_future(self.hub.room("r"))
        await asyncio.sleep(0)  # one loop step: the hub now waits on the subscription
        self.assertEqual(self.bus.calls, [("subscribe", "r")])
        # Stored (and published) before the subscription was confirmed: the
        # read that follows the confirmation must include it.
        await self.save("r", 1)
        self.assertFalse(self.hub.rooms["r"].ready.done())
        self.bus.hold.set_result(None)
        room = await opening
        self.assertEqual(room.last_seq, 3)

    @gen_test(timeout=TIMEOUT)
    async def test_closing_an_idle_room_unsubscribes_it(self) -> None:
        member = await self.live_member("r")
        self.hub.leave(member, "r", now=10.0)
        self.assertEqual(self.hub.close_idle_rooms(now=10.0 + ROOM_IDLE_SECONDS), ["r"])
        self.assertEqual(self.bus.calls, [("subscribe", "r"), ("unsubscribe", "r")])
        await self.hub.room("r")
        self.assertEqual(self.bus.calls[-1], ("subscribe", "r"))

    @gen_test(timeout=TIMEOUT)
    async def test_a_room_that_fails_to_open_is_unsubscribed(self) -> None:
        hub = Hub(SQLiteStore(str(Path(self._dir.name) / "never-opened.db")), bus=self.bus)
        with self.assertRaisesRegex(RuntimeError, "before open"):
            await hub.room("r")
        self.assertEqual(self.bus.calls, [("subscribe", "r"), ("unsubscribe", "r")])
        self.assertNotIn("r", hub.rooms)

    # -- resync: repairing what the bus lost ------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_a_lost_newest_message_is_delivered_by_a_resync(self) -> None:
        member = await self.live_member("r")
        one, two, three = map(broadcast_from_draft, await self.save("r", 3))
        self.hub.receive_all([one, two])  # 3 was lost, and no later message reveals it
        self.assertEqual(member.seqs, [1, 2])
        self.hub.resync(["r", "not-open"])
        await asyncio.wait_for(member.received(3), TIMEOUT)
        self.assertEqual(member.seqs, [1, 2, 3])
        self.assertEqual(json.loads(member.delivered[2].payload)["body"], json.loads(three.payload)["body"])
        self.hub.receive(three)  # arriving late after all: a duplicate
        self.assertEqual(member.seqs, [1, 2, 3])
        self.assertNotIn("not-open", self.hub.rooms)

    @gen_test(timeout=TIMEOUT)
    async def test_a_long_outage_is_read_back_a_page_at_a_time_in_order(self) -> None:
        member = await self.live_member("r")
        waiting = await self.hub.room("r")
        await self.save("r", 35)  # all lost while the bus was down
        self.hub.resync(["r"])
        await asyncio.wait_for(member.received(35), TIMEOUT)
        self.assertEqual(member.seqs, list(range(1, 36)))
        self.assertTrue(all(len(b.broadcasts) <= 10 for b in member.batches), member.batches)
        self.assertEqual(waiting.known_seq, 35)

    @gen_test(timeout=TIMEOUT)
    async def test_a_resync_with_nothing_lost_delivers_nothing(self) -> None:
        member = await self.live_member("r")
        self.hub.receive_all(list(map(broadcast_from_draft, await self.save("r", 2))))
        self.hub.resync(["r"])
        await self._settled("r")
        self.assertEqual(member.seqs, [1, 2])

    @gen_test(timeout=TIMEOUT)
    async def test_a_resync_waits_for_a_room_still_opening(self) -> None:
        await self.save("r", 1)
        self.bus.hold = asyncio.get_running_loop().create_future()
        opening = asyncio.ensure_future(self.hub.room("r"))
        await asyncio.sleep(0)
        # The bus came back while the room waited for it: the room's own read
        # may predate what was lost, so the resync must read it again, later.
        self.hub.resync(["r"])
        self.bus.hold.set_result(None)
        room = await opening
        await self._settled("r")
        self.assertEqual(room.known_seq, 1)  # read by the resync, not skipped

    @gen_test(timeout=TIMEOUT)
    async def test_a_store_that_claims_more_than_it_has_does_not_stall_the_room(self) -> None:
        member = await self.live_member("r")
        room = self.hub.rooms["r"]
        room.known_seq = 5  # as if a resync had read 5 and the rows then vanished
        with ExpectLog("squall.hub", r"room r: the store's last seq is 5 but it has nothing after 0"):
            self.hub._fill_gap(room)
            await self._settled("r")
        self.assertEqual(room.known_seq, 0)
        self.hub.receive_all(list(map(broadcast_from_draft, await self.save("r", 1))))
        self.assertEqual(member.seqs, [1])

    async def _settled(self, name: str) -> None:
        """Wait for the hub's background work on the room: the resync task, then
        the gap-filling task it may have started."""
        if self.hub._resyncing is not None:
            await asyncio.wait_for(asyncio.shield(self.hub._resyncing), TIMEOUT)
        fill = self.hub.rooms[name].fill
        if fill is not None:
            await asyncio.wait_for(asyncio.shield(fill), TIMEOUT)

    # -- cursors ahead of this node --------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_a_member_ahead_of_this_node_gets_nothing_twice(self) -> None:
        await self.live_member("r")
        one, two, three, four = map(broadcast_from_draft, await self.save("r", 4))
        self.hub.receive(one)  # 2 and 3 are still on their way from the node that published them
        member = RecordingMember("r")
        room, cursor = await self.hub.join("r", 3)  # read 1-3 on the other node
        self.assertEqual(cursor, 3)
        await self.hub.catch_up(member, room, cursor)
        self.hub.receive_all([two, three, four])
        await asyncio.wait_for(member.received(1), TIMEOUT)
        self.assertEqual(member.seqs, [4])
        self.assertEqual(room.ahead, {})

    @gen_test(timeout=TIMEOUT)
    async def test_a_cursor_past_the_stores_end_is_clamped_to_it(self) -> None:
        room = await self.hub.room("r")
        await self.save("r", 2)  # the node has not heard of them: it lags
        self.assertEqual(await self.hub.cursor(room, 10**6), 2)
        await self._settled("r")
        self.assertEqual(room.last_seq, 2)  # and the cursor check filled the room


    @gen_test(timeout=TIMEOUT)
    async def test_an_update_heard_from_several_nodes_goes_out_once(self) -> None:
        member = await self.live_member("r")
        self.hub.receive_all(list(map(broadcast_from_draft, await self.save("r", 1))))
        self.hub.receive(update("r", 1))
        self.hub.receive(update("r", 1))  # the same update, published by another node
        self.assertEqual([b.kind for b in member.delivered], ["message", "update"])
        self.assertEqual(json.loads(self.hub.rooms["r"].recent[0].payload)["previews"][0]["title"], "t")

    @gen_test(timeout=TIMEOUT)
    async def test_an_update_before_its_message_waits_for_it(self) -> None:
        member = await self.live_member("r")
        [message] = map(broadcast_from_draft, await self.save("r", 1))
        self.hub.receive(update("r", 1))  # this node heard of the previews first
        self.assertEqual(member.delivered, [])
        self.hub.receive(message)
        self.assertEqual([(b.kind, b.seq) for b in member.delivered], [("message", 1), ("update", None)])
        self.assertEqual(self.hub.rooms["r"].early_updates, {})
