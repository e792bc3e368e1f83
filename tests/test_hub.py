"""The room hub against a real SQLite store, with members that record deliveries.

:class:`RecordingMember` is not a mock of anything external: it is the
smallest honest implementation of :class:`squall.hub.Member`, and the hub is
the real one. Nothing here sleeps; tests wait on futures the members resolve.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from tornado.testing import AsyncTestCase, ExpectLog, gen_test

from squall.frames import Batch, Broadcast
from squall.hub import ROOM_IDLE_SECONDS, Hub, PollAnswer, broadcast_from_draft, encode_poll_body
from squall.message import Draft
from squall.store.sqlite import SQLiteStore

TIMEOUT = 10


class RecordingMember:
    """A hub member that keeps what it is given; ``on_drain`` runs between backlog pages."""

    def __init__(self, *rooms: str, on_drain: Callable[[], Awaitable[None]] | None = None) -> None:
        self.closed = False
        self.rooms = set(rooms)
        self.delivered: list[Broadcast] = []
        self.batches: list[Batch] = []
        self.drains = 0
        self.on_drain = on_drain
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def deliver(self, broadcast: Broadcast) -> None:
        self.delivered.append(broadcast)
        for count, future in self._waiting:
            if len(self.delivered) >= count and not future.done():
                future.set_result(None)

    def deliver_batch(self, batch: Batch) -> None:
        self.batches.append(batch)
        for broadcast in batch.broadcasts:
            self.deliver(broadcast)

    def subscribed(self, room: str) -> bool:
        return room in self.rooms

    async def drain(self) -> None:
        self.drains += 1
        if self.on_drain is not None:
            await self.on_drain()

    def received(self, count: int) -> asyncio.Future[None]:
        """Resolved once ``count`` broadcasts have been delivered."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((count, future))
        if len(self.delivered) >= count:
            future.set_result(None)
        return future

    @property
    def seqs(self) -> list[int | None]:
        return [b.seq for b in self.delivered]


class ParkedPoll:
    """A long-poll parked on the hub: remembers its one answer."""

    def __init__(self) -> None:
        self.answer: PollAnswer | None = None

    def answered(self, answer: PollAnswer) -> None:
        assert self.answer is None, "answered twice"
        self.answer = answer


def test_a_poll_body_continues_from_its_last_message_or_its_cursor() -> None:
    """No loop: the answer's seq is computed from what it holds, never passed in."""
    two, three = (Broadcast("r", seq, b'{"seq":%d}' % seq) for seq in (2, 3))
    assert json.loads(encode_poll_body([two, three], 1)) == {"messages": [{"seq": 2}, {"seq": 3}], "seq": 3}
    assert json.loads(encode_poll_body([], 7)) == {"messages": [], "seq": 7}


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the catch-up reads that reach it."""

    reads_after = 0

    async def messages_after(self, room: str, since: int, limit: int) -> list[Draft]:
        self.reads_after += 1
        return await super().messages_after(room, since, limit)


class HubTest(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        self._dir = tempfile.TemporaryDirectory()
        self.store = CountingStore(str(Path(self._dir.name) / "squall.db"))
        self.io_loop.run_sync(self.store.open)
        self.hub = Hub(self.store, recent_per_room=256, backlog_page=200, history_on_join=50)
        self._ids = 0

    def tearDown(self) -> None:
        self.io_loop.run_sync(self.store.close)
        self._dir.cleanup()
        super().tearDown()

    async def save(self, room: str, count: int, nick: str = "alice") -> list[Draft]:
        drafts = []
        for _ in range(count):
            self._ids += 1
            drafts.append(Draft(room=room, nick=nick, id=f"c{self._ids}", body=f"body {self._ids}", ts=self._ids))
        return list(await self.store.save_messages(drafts))

    async def save_and_receive(self, room: str, count: int) -> list[Draft]:
        saved = await self.save(room, count)
        for draft in saved:
            self.hub.receive(broadcast_from_draft(draft))
        return saved

    async def live_member(self, room: str) -> RecordingMember:
        member = RecordingMember(room)
        opened, cursor = await self.hub.join(room, None)
        await self.hub.catch_up(member, opened, cursor)
        self.assertIn(member, opened.live)
        return member

    # -- ordering ------------------------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_in_order_messages_are_delivered_as_they_come(self) -> None:
        member = await self.live_member("r")
        await self.save_and_receive("r", 3)
        self.assertEqual(member.seqs, [1, 2, 3])
        self.assertEqual(self.hub.rooms["r"].last_seq, 3)

    @gen_test(timeout=TIMEOUT)
    async def test_messages_that_arrive_together_go_out_as_one_batch(self) -> None:
        member = await self.live_member("r")
        other_room = await self.live_member("s")
        one, two, three, four = map(broadcast_from_draft, await self.save("r", 4))
        [elsewhere] = map(broadcast_from_draft, await self.save("s", 1))
        typing = Broadcast("r", None, b'{"type":"presence"}', kind="presence")
        self.hub.receive_all([one, elsewhere, two, typing, four, three])
        # What came before the presence event goes first, as a batch; 3 and 4
        # (4 held until 3 came) go together after it.
        self.assertEqual(member.seqs, [1, 2, None, 3, 4])
        self.assertEqual([(b.first_seq, b.last_seq) for b in member.batches], [(1, 2), (3, 4)])
        self.assertEqual(member.batches[0].ws_frames, one.ws_frame + two.ws_frame)
        self.assertEqual(other_room.seqs, [1])
        self.assertEqual(other_room.batches, [])

    @gen_test(timeout=TIMEOUT)
    async def test_a_batch_answers_pollers_with_all_of_it(self) -> None:
        room = await self.hub.room("r")
        waiter = ParkedPoll()
        self.hub.park(room, 0, 100, waiter)
        self.hub.receive_all(list(map(broadcast_from_draft, await self.save("r", 3))))
        assert waiter.answer is not None
        self.assertEqual([b.seq for b in waiter.answer.messages], [1, 2, 3])

    @gen_test(timeout=TIMEOUT)
    async def test_out_of_order_receive_is_delivered_in_order(self) -> None:
        member = await self.live_member("r")
        one, two, three = map(broadcast_from_draft, await self.save("r", 3))
        self.hub.receive(three)
        self.hub.receive(two)
        self.assertEqual(member.seqs, [])
        self.hub.receive(one)
        self.assertEqual(member.seqs, [1, 2, 3])
        self.assertEqual(self.hub.rooms["r"].held, {})
        await asyncio.sleep(0)  # one loop step: the gap-filling task the hub started finds nothing to do
        self.assertFalse(self.hub.rooms["r"].filling)
        self.assertEqual(member.seqs, [1, 2, 3])

    @gen_test(timeout=TIMEOUT)
    async def test_duplicates_are_dropped(self) -> None:
        member = await self.live_member("r")
        [one, two] = map(broadcast_from_draft, await self.save("r", 2))
        for broadcast in (one, one, two, one, two):
            self.hub.receive(broadcast)
        self.assertEqual(member.seqs, [1, 2])

    @gen_test(timeout=TIMEOUT)
    async def test_a_gap_is_filled_from_the_store(self) -> None:
        member = await self.live_member("r")
        saved = await self.save("r", 5)
        self.hub.receive(broadcast_from_draft(saved[4]))  # 1-4 never come over the bus
        await asyncio.wait_for(member.received(5), TIMEOUT)
        self.assertEqual(member.seqs, [1, 2, 3, 4, 5])
        bodies = [json.loads(b.payload)["body"] for b in member.delivered]
        self.assertEqual(bodies, [d.body for d in saved])
        self.hub.receive(broadcast_from_draft(saved[3]))  # late arrival of a filled one
        self.assertEqual(member.seqs, [1, 2, 3, 4, 5])

    @gen_test(timeout=TIMEOUT)
    async def test_a_gap_the_store_cannot_fill_is_skipped_not_stalled(self) -> None:
        member = await self.live_member("r")
        orphan = Broadcast("r", 3, b'{"type":"message","seq":3}')  # published, never stored
        with ExpectLog("squall.hub", r"room r: seq 1\.\.2 missing from the store"):
            self.hub.receive(orphan)
            await asyncio.wait_for(member.received(1), TIMEOUT)
        self.assertEqual(member.seqs, [3])
        self.assertEqual(self.hub.rooms["r"].last_seq, 3)

    @gen_test(timeout=TIMEOUT)
    async def test_messages_arriving_while_a_room_opens_are_kept(self) -> None:
        await self.save("r", 2)
        opening = asyncio.ensure_future(self.hub.room("r"))
        await asyncio.sleep(0)  # one loop step: the room now exists and reads its last seq
        room = self.hub.rooms["r"]
        self.assertFalse(room.ready.done())
        [third] = await self.save("r", 1)
        self.hub.receive(broadcast_from_draft(third))
        self.assertIs(await opening, room)
        self.assertEqual(room.last_seq, 3)
        member = RecordingMember("r")
        await self.hub.catch_up(member, room, 2)
        self.assertEqual(member.seqs, [3])

    @gen_test(timeout=TIMEOUT)
    async def test_ephemeral_events_go_to_live_members_only_and_skip_ordering(self) -> None:
        member = await self.live_member("r")
        typing = Broadcast("r", None, b'{"type":"presence"}', kind="presence")
        self.hub.receive(typing)
        self.hub.receive(Broadcast("elsewhere", None, b"{}", kind="presence"))
        self.assertEqual(member.delivered, [typing])
        self.assertEqual(self.hub.rooms["r"].last_seq, 0)

    # -- joining -------------------------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_join_without_since_starts_from_recent_history(self) -> None:
        hub = Hub(self.store, history_on_join=5)
        await self.save("r", 20)
        room, cursor = await hub.join("r", None)
        self.assertEqual((room.last_seq, cursor), (20, 15))
        self.assertEqual((await hub.join("r", 7))[1], 7)
        self.assertEqual((await hub.join("r", 99))[1], 20)  # past the end: clamped

    @gen_test(timeout=TIMEOUT)
    async def test_catch_up_seam_delivers_each_message_exactly_once(self) -> None:
        await self.save("r", 300)  # more than a backlog page and the recent buffer
        injections = iter([3, 3, 1])

        async def more_while_catching_up() -> None:
            count = next(injections, 0)
            if count:
                await self.save_and_receive("r", count)

        member = RecordingMember("r", on_drain=more_while_catching_up)
        room, cursor = await self.hub.join("r", 0)
        self.assertEqual(cursor, 0)
        await self.hub.catch_up(member, room, cursor)
        self.assertIn(member, room.live)
        await self.save_and_receive("r", 2)  # live now
        self.assertEqual(member.seqs, list(range(1, 310)))
        self.assertGreaterEqual(member.drains, 4)

    @gen_test(timeout=TIMEOUT)
    async def test_member_that_leaves_while_catching_up_never_goes_live(self) -> None:
        await self.save("r", 250)
        member = RecordingMember("r")

        async def leave() -> None:
            member.rooms.discard("r")

        member.on_drain = leave
        room, cursor = await self.hub.join("r", 0)
        await self.hub.catch_up(member, room, cursor)
        self.assertNotIn(member, room.live)
        # Catch-up checks after every page (one batch, one write) whether the
        # member still wants the room.
        self.assertEqual(member.seqs, list(range(1, 201)))
        self.assertEqual(len(member.batches), 1)

    @gen_test(timeout=TIMEOUT)
    async def test_leave_stops_deliveries(self) -> None:
        member = await self.live_member("r")
        await self.save_and_receive("r", 1)
        self.hub.leave(member, "r", now=0.0)
        await self.save_and_receive("r", 1)
        self.assertEqual(member.seqs, [1])

    # -- long-polling --------------------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_waiters_on_one_cursor_get_the_identical_bytes(self) -> None:
        await self.save_and_receive("r", 2)
        room = await self.hub.room("r")
        first, second, narrow, ahead = (ParkedPoll() for _ in range(4))
        self.hub.park(room, 2, 100, first)
        self.hub.park(room, 2, 100, second)
        self.hub.park(room, 2, 1, narrow)
        self.hub.park(room, 5, 100, ahead)
        [third] = await self.save_and_receive("r", 1)
        assert first.answer is not None and second.answer is not None and narrow.answer is not None
        self.assertIs(first.answer, second.answer)
        self.assertEqual([b.seq for b in first.answer.messages], [3])
        body = json.loads(first.answer.body)
        self.assertEqual(body["seq"], 3)
        self.assertEqual([m["id"] for m in body["messages"]], [third.id])
        self.assertEqual(json.loads(narrow.answer.body), body)
        self.assertIsNone(ahead.answer)
        self.assertEqual(list(room.waiters), [ahead])
        self.hub.unpark(room, ahead, now=0.0)
        self.assertEqual(room.waiters, {})

    @gen_test(timeout=TIMEOUT)
    async def test_a_burst_bigger_than_the_recent_window_reaches_parked_pollers(self) -> None:
        """More messages than ``recent_per_room`` become deliverable at once: the
        poller still gets every one of them, and its ``seq`` is the last it got."""
        hub = Hub(self.store, recent_per_room=8, backlog_page=200, history_on_join=50)
        room = await hub.room("r")
        everything, first_five = ParkedPoll(), ParkedPoll()
        hub.park(room, 0, 100, everything)
        hub.park(room, 0, 5, first_five)
        hub.receive_all(list(map(broadcast_from_draft, await self.save("r", 20))))
        assert everything.answer is not None and first_five.answer is not None
        body = json.loads(everything.answer.body)
        self.assertEqual([m["seq"] for m in body["messages"]], list(range(1, 21)))
        self.assertEqual(body["seq"], 20)
        narrow = json.loads(first_five.answer.body)
        self.assertEqual([m["seq"] for m in narrow["messages"]], [1, 2, 3, 4, 5])
        self.assertEqual(narrow["seq"], 5)  # not 20: 6..20 were not in this answer

    @gen_test(timeout=TIMEOUT)
    async def test_a_poller_behind_every_window_is_not_moved_past_what_it_missed(self) -> None:
        """A cursor neither the burst nor the recent window reaches back to (a gap
        the store could not fill) gets no messages and keeps its cursor, rather
        than a ``seq`` that jumps over messages it never saw."""
        room = await self.hub.room("r")
        waiter = ParkedPoll()
        self.hub.park(room, 0, 100, waiter)
        room.last_seq = 3  # as the gap-skip does; seq 1..3 were never delivered
        self.hub.receive_all(list(map(broadcast_from_draft, (await self.save("r", 4))[3:])))
        assert waiter.answer is not None
        self.assertEqual(json.loads(waiter.answer.body), {"messages": [], "seq": 0})

    @gen_test(timeout=TIMEOUT)
    async def test_answer_all_waiters_answers_with_nothing_new(self) -> None:
        await self.save_and_receive("r", 1)
        room = await self.hub.room("r")
        waiter = ParkedPoll()
        self.hub.park(room, 1, 100, waiter)
        self.hub.answer_all_waiters()
        assert waiter.answer is not None
        self.assertEqual(json.loads(waiter.answer.body), {"messages": [], "seq": 1})
        self.assertEqual(room.waiters, {})

    @gen_test(timeout=TIMEOUT)
    async def test_unparked_waiter_is_not_answered(self) -> None:
        room = await self.hub.room("r")
        gone, staying = ParkedPoll(), ParkedPoll()
        self.hub.park(room, 0, 100, gone)
        self.hub.park(room, 0, 100, staying)
        self.hub.unpark(room, gone, now=0.0)
        await self.save_and_receive("r", 1)
        self.assertIsNone(gone.answer)
        assert staying.answer is not None
        self.assertEqual(json.loads(staying.answer.body)["seq"], 1)

    @gen_test(timeout=TIMEOUT)
    async def test_a_waiter_may_park_again_while_being_answered(self) -> None:
        """A pipelined poll parks from inside the answer to the one before it."""
        room = await self.hub.room("r")
        again = ParkedPoll()

        class Repark(ParkedPoll):
            def answered(inner, answer: PollAnswer) -> None:
                super().answered(answer)
                self.hub.park(room, 1, 100, again)

        self.hub.park(room, 0, 100, Repark())
        await self.save_and_receive("r", 1)
        self.assertEqual(list(room.waiters), [again])
        await self.save_and_receive("r", 1)
        assert again.answer is not None
        self.assertEqual(json.loads(again.answer.body)["seq"], 2)

    @gen_test(timeout=TIMEOUT)
    async def test_read_after_comes_from_memory_or_the_store(self) -> None:
        await self.save("r", 300)
        room = await self.hub.room("r")
        await self.save_and_receive("r", 3)
        from_store = await self.hub.read_after(room, 10, 5)
        self.assertEqual([b.seq for b in from_store], [11, 12, 13, 14, 15])
        from_memory = await self.hub.read_after(room, 301, 5)
        self.assertEqual([b.seq for b in from_memory], [302, 303])
        self.assertIs(from_memory[0], room.recent[1])
        self.assertEqual(await self.hub.read_after(room, 303, 5), [])
        before = await self.hub.read_before("r", 4, 10)
        self.assertEqual([b.seq for b in before], [1, 2, 3])

    @gen_test(timeout=TIMEOUT)
    async def test_members_catching_up_from_one_cursor_share_one_store_read_per_page(self) -> None:
        """A restart: the room has nothing in memory, 300 members come back at seq 0."""
        await self.save("r", 600)
        members = [RecordingMember("r") for _ in range(300)]
        room, cursor = await self.hub.join("r", 0)
        reads_before = self.store.reads_after
        await asyncio.gather(*(self.hub.catch_up(m, room, cursor) for m in members))
        for member in members:
            self.assertEqual(member.seqs, list(range(1, 601)))
            self.assertIn(member, room.live)
        self.assertEqual(self.store.reads_after - reads_before, 3)  # pages at 0, 200 and 400: 3, not 900
        # Every member got the same batches: frames joined once, not once per member.
        self.assertTrue(all(m.batches[0] is members[0].batches[0] for m in members))
        # One who comes a moment later is served from the pages just read.
        late = RecordingMember("r")
        await self.hub.catch_up(late, room, 0)
        self.assertEqual(self.store.reads_after - reads_before, 3)
        self.assertEqual(late.seqs, list(range(1, 601)))

    @gen_test(timeout=TIMEOUT)
    async def test_a_shared_page_is_read_again_once_previews_change_it(self) -> None:
        await self.save("r", 300)
        room, cursor = await self.hub.join("r", 0)
        first = RecordingMember("r")
        await self.hub.catch_up(first, room, cursor)
        reads = self.store.reads_after
        await self.store.save_previews("r", 5, [{"url": "https://example.com", "title": "Example"}])
        self.hub.receive(Broadcast("r", None, b'{"type":"update","room":"r","seq":5,"links":[]}', kind="update"))
        again = RecordingMember("r")
        await self.hub.catch_up(again, room, 0)
        self.assertGreater(self.store.reads_after, reads)
        self.assertIn(b"Example", again.delivered[4].payload)

    @gen_test(timeout=TIMEOUT)
    async def test_a_big_backlog_goes_in_chunks_that_fit_the_outbound_buffer(self) -> None:
        hub = Hub(self.store, recent_per_room=256, backlog_page=200, catch_up_chunk_bytes=4096)
        await self.save("r", 100)
        member = RecordingMember("r")
        room, cursor = await hub.join("r", 0)
        await hub.catch_up(member, room, cursor)
        self.assertEqual(member.seqs, list(range(1, 101)))
        sizes = [sum(len(b.payload) for b in batch.broadcasts) for batch in member.batches]
        self.assertGreater(len(sizes), 1)
        self.assertTrue(all(size <= 4096 for size in sizes), sizes)
        self.assertGreaterEqual(member.drains, len(sizes))  # a drain after every chunk

    # -- housekeeping --------------------------------------------------

    @gen_test(timeout=TIMEOUT)
    async def test_idle_rooms_close_after_the_idle_time(self) -> None:
        member = await self.live_member("r")
        self.assertEqual(self.hub.close_idle_rooms(now=1e9), [])  # someone is in it
        self.hub.leave(member, "r", now=100.0)
        self.assertEqual(self.hub.close_idle_rooms(now=100.0 + ROOM_IDLE_SECONDS - 0.1), [])
        self.assertEqual(self.hub.close_idle_rooms(now=100.0 + ROOM_IDLE_SECONDS), ["r"])
        self.assertNotIn("r", self.hub.rooms)
        await self.save_and_receive("r", 1)  # a closed room ignores the bus; the store has it
        room, _cursor = await self.hub.join("r", 0)
        self.assertEqual(room.last_seq, 1)

    @gen_test(timeout=TIMEOUT)
    async def test_a_waiting_poller_keeps_its_room_open(self) -> None:
        room = await self.hub.room("r")
        room.idle_since = 0.0
        waiter = ParkedPoll()
        self.hub.park(room, 0, 10, waiter)
        self.assertEqual(self.hub.close_idle_rooms(now=1e9), [])
        self.hub.unpark(room, waiter, now=5.0)
        self.assertEqual(self.hub.close_idle_rooms(now=5.0 + ROOM_IDLE_SECONDS), ["r"])


class RoomStaysOpenTest(AsyncTestCase):
    """A member still catching up keeps its room open, however long that takes."""

    @gen_test(timeout=TIMEOUT)
    async def test_idle_sweep_spares_a_room_with_a_member_catching_up(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            store = SQLiteStore(str(Path(folder) / "squall.db"))
            await store.open()
            try:
                hub = Hub(store, recent_per_room=256, backlog_page=200, history_on_join=50)
                await store.save_messages([
                    Draft(room="r", nick="n", id=str(i), body="x", ts=0) for i in range(3)
                ])
                slow = RecordingMember("r")
                gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                async def wait_for_gate() -> None:
                    await gate

                slow.on_drain = wait_for_gate
                room, cursor = await hub.join("r", 0)
                catching = asyncio.ensure_future(hub.catch_up(slow, room, cursor))
                await slow.received(1)
                other = RecordingMember("r")
                hub.leave(other, "r", now=0.0)  # the room looks idle since t=0
                self.assertEqual(hub.close_idle_rooms(now=10_000.0), [])
                gate.set_result(None)
                await catching
                self.assertIn(slow, room.live)
                self.assertIs(hub.rooms["r"], room)
            finally:
                await store.close()
