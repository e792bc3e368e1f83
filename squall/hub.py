"""The room hub: orders each room's messages and hands them to local members.

Theory of operation. Every web node runs one :class:`Hub`. Processed messages
reach it from the bus (:meth:`Hub.receive`), possibly out of order and possibly
twice: two web nodes publish concurrently, and after a processor crash a resent
message comes back with its original seq. The hub keeps, per open room, the last
seq it delivered (``last_seq``) and releases messages strictly in seq order:

* ``seq <= last_seq``: a duplicate; dropped.
* ``seq == last_seq + 1``: delivered to every live member, then any held
  successors follow.
* ``seq > last_seq + 1``: held; the missing ones are read from the store, which
  has them, because a message is published only after it is committed and seqs
  are committed in order.

Messages of a room that become deliverable in one call — several arrive from
the bus together, or a gap is filled — go to each member as one
:class:`~squall.frames.Batch`: one write per member instead of one per message.
They wait in ``room.unsent`` only within a hub method; every method that
advances a room delivers before it returns (or awaits), so outside the hub no
room has anything unsent. A lone message goes to the room's live members
through ``fan_out`` (:func:`deliver_each` unless the node gives a faster
equivalent: one transport can send to thousands of sockets without a Python
call per member).

A member that joins is first brought up to date from the room's recent buffer
or the store, page by page, each page in chunks of at most
``catch_up_chunk_bytes`` — a chunk is one :class:`~squall.frames.Batch`, one
write — waiting for its outbound buffer to drain below its low-water mark
between chunks, so a chunk always fits under the buffer's limit. Pages are
shared: members catching up from the same cursor get the same chunks (their
frames joined once), and a page from the store is read once for all of them
(:mod:`squall.history`), so a reconnect storm after a restart costs a few
store reads and a few writes per client, not a read and a write per message.
A store read wakes every member waiting on it at once; with ``turns`` they go
on a batch per event-loop turn (:mod:`squall.turns`), so live messages are not
held up behind thousands of catch-ups. It becomes *live* in the same loop step in which its cursor reaches the
room's ``last_seq`` — no ``await`` between that check and joining the live set —
so it sees every message exactly once at the seam between backlog and live.

Across web nodes (a shared bus), a room is open on a node exactly while the
node is subscribed to it: :meth:`Hub.room` subscribes first and reads the
room's ``last_seq`` only once the bus has confirmed, so nothing published
after that read can be missed. When the bus may have lost broadcasts (its
connection dropped, a publisher's queue overflowed) it calls
:meth:`Hub.resync`: each room's ``last_seq`` is read from the store again and
becomes the room's ``known_seq``, and the hub fills up to it exactly as it
fills a gap: the newest message is repaired even when no later one would have
revealed that it was missing. Gaps are read a page (``backlog_page``) at a
time.

A client's cursor may be ahead of this node: it read a message on another node
whose publish has not reached this one yet (a long-poller changing node every
poll, a client reconnecting elsewhere). Such a cursor is not clamped to this
node's ``last_seq`` — that would hand the client again what it has. It is
checked against the store instead (:meth:`Hub.cursor`): only a cursor past the
store's end (a reset store, a client's bug) is clamped, to that end, and a
room found lagging the store is filled up to it. A live member whose cursor is
still ahead of the room is kept in ``room.ahead`` and gets only what follows
its cursor; parked pollers wait for a message after theirs anyway.

Link-preview updates come once per web node that heard of them from a
processor: the hub passes on the first for each message and drops the rest,
and holds one that arrives before its message until the message is delivered.
An edit's previews come as an update with the edit's own seq (and the edited
message as ``target``), so an edited message's new previews are not taken for
a second copy of its first ones.

Edits, deletes and reactions (``{"type": "change"}``) are messages to the hub:
each has its seq in the room's one order and goes through all of the above,
ordering, gap filling, catch-up and polls, with nothing of its own. That is
what makes a resume with ``since`` bring the changes to what a client holds.

Long-pollers wait on a room by cursor; every poller waiting on the same cursor
is answered with the same encoded body. An answer's ``seq`` is the cursor to
poll from next: the seq of the last message in it, or the poller's own cursor
when it has none — never the room's newest seq, which would skip whatever the
answer left out. Parked pollers are answered from the messages just advanced
(``room.unsent``), which always reach back to their cursor, however many there
are: the recent buffer holds only ``recent_per_room`` and may have let the
first of them go already.

Nothing here touches a socket; time comes in as an argument.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import orjson

from .frames import Batch, Broadcast
from .history import SharedReads
from .message import Draft
from .protocol import nick_key
from .store import Store
from .turns import Turns

__all__ = [
    "Hub", "Room", "Member", "Waiter", "PollAnswer", "Subscriptions", "FanOut", "deliver_each",
    "broadcast_from_draft", "encode_poll_body",
]

log = logging.getLogger("squall.hub")

# A room with nobody in it stays open this long, so that long-pollers who come
# back between polls find its recent buffer instead of going to the store.
ROOM_IDLE_SECONDS = 120.0
# Link-preview updates that came before their message, held per room; past
# this the oldest goes (its previews are in the store for later readers).
MAX_EARLY_UPDATES = 64


class Subscriptions(Protocol):
    """The bus as the hub sees it: which rooms this node receives (:class:`~squall.bus.Bus`)."""

    async def subscribe(self, room: str) -> None: ...

    def unsubscribe(self, room: str) -> None: ...


class _NoSubscriptions:
    """One node alone: it hears every broadcast anyway."""

    async def subscribe(self, room: str) -> None:
        pass

    def unsubscribe(self, room: str) -> None:
        pass
# Catch-up pages, cut into chunks, kept for the next member at the same cursor
# (each chunk holds its frames joined once): a few rooms' worth.
SHARED_PAGES = 32


class Member(Protocol):
    """A local client connection that receives a room's broadcasts."""

    closed: bool

    def deliver(self, broadcast: Broadcast) -> None:
        """Queue ``broadcast`` for sending; must not block or await."""

    def deliver_batch(self, batch: Batch) -> None:
        """Queue the consecutive messages of ``batch``, as :meth:`deliver` would one by one."""

    def subscribed(self, room: str) -> bool:
        """Whether the member still wants ``room`` (it may leave while catching up)."""

    async def drain(self) -> None:
        """Return once the member's outbound buffer is below its low-water mark
        (at once if it already is): backlog is sent only as fast as it leaves."""


FanOut = Callable[[list[Member], Broadcast], None]
"""Hands one broadcast to every member of a list, exactly as calling each
member's ``deliver`` in turn would (in any order)."""


def deliver_each(members: list[Member], broadcast: Broadcast) -> None:
    """The plain :data:`FanOut`: each member's ``deliver``, one by one."""
    for member in members:
        member.deliver(broadcast)


def broadcast_from_draft(draft: Draft) -> Broadcast:
    return Broadcast(
        draft.room, draft.seq, orjson.dumps(draft.to_wire()),
        mentions=frozenset(nick_key(n) for n in draft.mentions),
    )


def encode_poll_body(messages: Sequence[Broadcast], since: int) -> bytes:
    """``{"messages":[...],"seq":CURSOR}`` spliced from already-encoded payloads.

    ``messages`` are the consecutive messages after ``since``. ``CURSOR`` is the
    seq of the last of them, or ``since`` if there are none: polling on from it
    never skips a message this answer left out.
    """
    cursor = messages[-1].seq if messages else since
    return b'{"messages":[' + b",".join(m.payload for m in messages) + b'],"seq":%d}' % (cursor or 0)


def _chunks(messages: list[Broadcast], max_bytes: int) -> list[Batch]:
    """``messages`` cut into batches of at most ``max_bytes`` of payload (one
    message at least), in order."""
    chunks: list[Batch] = []
    start = size = 0
    for index, message in enumerate(messages):
        size += len(message.payload)
        if size > max_bytes and index > start:
            chunks.append(Batch(messages[start:index]))
            start, size = index, len(message.payload)
    chunks.append(Batch(messages[start:]))
    return chunks


class PollAnswer:
    """A long-poll answer: the encoded body, shared by every poller on the same
    cursor, and the messages in it.

    ``wire`` is for the transport: the body framed as a response, built by the
    first poller that sends it and reused by the rest.
    """

    __slots__ = ("body", "messages", "wire")

    def __init__(self, body: bytes, messages: list[Broadcast]) -> None:
        self.body = body
        self.messages = messages
        self.wire: bytes | None = None


class Waiter(Protocol):
    """A parked long-poll."""

    def answered(self, answer: PollAnswer) -> None:
        """The poll's answer. Called once; the hub has already let go of the waiter.
        Must not block or await."""


class Room:
    __slots__ = (
        "name", "last_seq", "delivered", "ready", "live", "recent", "held", "unsent", "waiters",
        "filling", "idle_since", "catching_up", "known_seq", "updated", "early_updates", "ahead", "fill",
    )

    def __init__(self, name: str, *, recent: int) -> None:
        self.name = name
        self.last_seq = 0
        # The seq of the last message handed to every live member: a live
        # member's position in the room, which members need not track each.
        self.delivered = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.live: dict[Member, None] = {}  # an ordered set
        self.recent: deque[Broadcast] = deque(maxlen=recent)
        self.held: dict[int, Broadcast] = {}  # arrived ahead of a gap
        self.unsent: list[Broadcast] = []  # advanced past, not yet handed to members
        self.waiters: dict[Waiter, tuple[int, int]] = {}  # parked poll → (since, limit)
        self.filling = False
        self.fill: asyncio.Future[None] | None = None  # the last gap-filling task
        self.idle_since: float | None = None
        self.catching_up = 0  # members between join and live; the room stays open for them
        self.known_seq = 0  # the store has reached this seq (as of a resync): fill up to it
        self.updated: dict[int, None] = {}  # seqs whose preview update went out (newest last)
        self.early_updates: dict[int, Broadcast] = {}  # updates waiting for their message
        self.ahead: dict[Member, int] = {}  # live members whose cursor is past last_seq → cursor

    def recent_after(self, since: int, limit: int) -> list[Broadcast] | None:
        """Messages with seq > ``since`` from memory, or None if memory doesn't reach back."""
        if since >= self.last_seq:
            return []
        if not self.recent or self.recent[0].seq is None or self.recent[0].seq > since + 1:
            return None
        start = since + 1 - self.recent[0].seq
        return list(itertools.islice(self.recent, start, start + limit))


def _after(messages: list[Broadcast], since: int, limit: int) -> list[Broadcast] | None:
    """Up to ``limit`` of the consecutive ``messages`` with seq > ``since``, or
    None if they start after ``since + 1`` (some would be missing)."""
    if not messages or messages[0].seq is None or messages[0].seq > since + 1:
        return None
    start = since + 1 - messages[0].seq
    return messages[start : start + limit]


class Hub:
    """All of this node's open rooms. Create one per web node.

    ``store`` is only read from: the processor writes.
    """

    def __init__(
        self,
        store: Store,
        *,
        bus: Subscriptions | None = None,
        recent_per_room: int = 256,
        backlog_page: int = 200,
        history_on_join: int = 50,
        catch_up_chunk_bytes: int = 64 * 1024,
        turns: Turns | None = None,
        fan_out: FanOut = deliver_each,
    ) -> None:
        self.store = store
        self.bus: Subscriptions = bus if bus is not None else _NoSubscriptions()
        self.recent_per_room = recent_per_room
        self.backlog_page = backlog_page
        self.history_on_join = history_on_join
        self.fan_out = fan_out
        self.rooms: dict[str, Room] = {}
        # Messages handed to live members and parked polls, one per member
        # (squall_deliveries_total): counted per room advance, not per member.
        self.deliveries = 0
        self._to_resync: dict[str, None] = {}  # rooms a resync still has to read (ordered set)
        self._resyncing: asyncio.Future[None] | None = None
        self.catch_up_chunk_bytes = catch_up_chunk_bytes
        # A store read wakes every member waiting on it in one turn; they deliver
        # their pages a batch per turn instead (squall/turns.py).
        self.turns = turns
        self.reads = SharedReads(store, broadcast_from_draft)
        # (room, since, last seq) → that page in chunks, shared by members catching up
        self._pages: OrderedDict[tuple[str, int, int], list[Batch]] = OrderedDict()

    # -- opening rooms --------------------------------------------------

    async def room(self, name: str) -> Room:
        """The open room ``name``, opened (and its ``last_seq`` loaded) if needed."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, recent=self.recent_per_room)
            try:
                # Subscribed first: whatever is published after the read below reaches us.
                await self.bus.subscribe(name)
                room.last_seq = await self.store.last_seq(name)
            except BaseException as exc:
                del self.rooms[name]
                self.bus.unsubscribe(name)
                room.ready.set_exception(exc)
                room.ready.exception()  # retrieved: the caller below re-raises it
                raise
            room.delivered = room.last_seq
            room.ready.set_result(None)
            for seq in sorted(room.held):
                if seq <= room.last_seq:
                    del room.held[seq]
            self._release_held(room)
            self._deliver_unsent(room)
        elif not room.ready.done():
            await asyncio.shield(room.ready)
        return room

    # -- from the bus ---------------------------------------------------

    def receive(self, broadcast: Broadcast) -> None:
        """Take one broadcast from the bus. Safe to call with duplicates and out of order."""
        self.receive_all((broadcast,))

    def receive_all(self, broadcasts: Sequence[Broadcast]) -> None:
        """Take broadcasts that arrived together, in their order; see :meth:`receive`."""
        advanced: dict[Room, None] = {}
        for broadcast in broadcasts:
            room = self.rooms.get(broadcast.room)
            if room is None:
                continue  # nobody here listens; the store has it for whoever comes
            if broadcast.seq is None:
                self._deliver_unsent(room)  # what came before it goes first
                if broadcast.kind == "update" and not self._take_update(room, broadcast):
                    continue
                for member in list(room.live):
                    member.deliver(broadcast)
                continue
            if broadcast.seq <= room.last_seq and room.ready.done():
                continue
            if not room.ready.done() or broadcast.seq > room.last_seq + 1:
                room.held[broadcast.seq] = broadcast
                if room.ready.done():
                    self._fill_gap(room)
                continue
            self._advance(room, broadcast)
            self._release_held(room)
            advanced[room] = None
        for room in advanced:
            self._deliver_unsent(room)

    def _take_update(self, room: Room, update: Broadcast) -> bool:
        """Whether to pass ``update`` on to the room's members now: not if the
        update of that message went out already (each web node publishes the
        one it heard of), nor before the message itself (held until then)."""
        try:
            seq = orjson.loads(update.payload).get("seq")
        except (orjson.JSONDecodeError, AttributeError):
            return True
        if not isinstance(seq, int) or seq in room.updated:
            return not isinstance(seq, int)
        if seq > room.last_seq:
            if seq not in room.early_updates:
                if len(room.early_updates) >= MAX_EARLY_UPDATES:
                    del room.early_updates[next(iter(room.early_updates))]
                room.early_updates[seq] = update
            return False
        room.updated[seq] = None
        if len(room.updated) > self.recent_per_room:
            del room.updated[next(iter(room.updated))]
        self._apply_update(room, update)
        return True

    def _release_early_updates(self, room: Room) -> None:
        """Updates that came before their message, now that it has gone out."""
        due = [seq for seq in room.early_updates if seq <= room.last_seq]
        for seq in sorted(due):
            update = room.early_updates.pop(seq)
            if self._take_update(room, update):
                for member in list(room.live):
                    member.deliver(update)

    def _apply_update(self, room: Room, update: Broadcast) -> None:
        """Link previews arrived for a message: the copy in memory gets them too,
        so later joins and polls served from memory carry them, as the store does.
        An edit's previews (``target`` set) go to the edited message and to the
        state the edit carries."""
        self._forget_pages(room.name)  # shared catch-up pages hold the old copy
        event = orjson.loads(update.payload)
        seq, target, links = event.get("seq"), event.get("target"), event.get("links", [])
        if not isinstance(seq, int):
            return
        if isinstance(target, int):
            self._patch_recent(room, target, lambda message: message.__setitem__("previews", links))
            self._patch_recent(room, seq, lambda change: isinstance(change.get("message"), dict)
                               and change["message"].__setitem__("previews", links))
        else:
            self._patch_recent(room, seq, lambda message: message.__setitem__("previews", links))

    @staticmethod
    def _patch_recent(room: Room, seq: int, patch: Callable[[dict[str, Any]], object]) -> None:
        """Change the copy of message ``seq`` in the room's recent buffer, if it is there."""
        if not room.recent:
            return
        first = room.recent[0].seq
        if first is None or not first <= seq <= room.last_seq:
            return
        index = seq - first
        old = room.recent[index]
        if old.seq != seq:
            return
        message = orjson.loads(old.payload)
        patch(message)
        room.recent[index] = Broadcast(room.name, seq, orjson.dumps(message), mentions=old.mentions)

    def _advance(self, room: Room, broadcast: Broadcast) -> None:
        """Make ``broadcast`` the room's newest message; :meth:`_deliver_unsent` sends it."""
        room.last_seq = broadcast.seq  # type: ignore[assignment]
        room.recent.append(broadcast)
        room.unsent.append(broadcast)

    def _deliver_unsent(self, room: Room) -> None:
        """Hand the room's newly advanced messages to its live members and pollers."""
        unsent = room.unsent
        if not unsent:
            return
        room.unsent = []
        self.deliveries += len(unsent) * len(room.live)
        members = list(room.live)
        if room.ahead:
            members = self._deliver_to_members_ahead(room, unsent, members)
        if len(unsent) == 1:
            self.fan_out(members, unsent[0])
        else:
            batch = Batch(unsent)
            for member in members:
                member.deliver_batch(batch)
        room.delivered = unsent[-1].seq  # type: ignore[assignment]
        if room.waiters:
            self._answer_waiters(room, unsent)
        if room.early_updates:
            self._release_early_updates(room)

    def _deliver_to_members_ahead(self, room: Room, unsent: list[Broadcast], members: list[Member]) -> list[Member]:
        """Hand members whose cursor is ahead of the room only what follows it;
        returns the other members."""
        ahead, room.ahead = room.ahead, {}
        for member, cursor in ahead.items():
            newer = [b for b in unsent if b.seq is not None and b.seq > cursor]
            if len(newer) == 1:
                member.deliver(newer[0])
            elif newer:
                member.deliver_batch(Batch(newer))
            if cursor > room.last_seq and member in room.live:
                room.ahead[member] = cursor
        return [m for m in members if m not in ahead]

    def _release_held(self, room: Room) -> None:
        held = room.held
        while held:
            following = held.pop(room.last_seq + 1, None)
            if following is None:
                break
            self._advance(room, following)
        for seq in [s for s in held if s <= room.last_seq]:
            del held[seq]
        if held:
            self._fill_gap(room)

    def _fill_gap(self, room: Room) -> None:
        if not room.filling:
            room.filling = True
            room.fill = asyncio.ensure_future(self._fill_gap_from_store(room))

    async def _fill_gap_from_store(self, room: Room) -> None:
        """Read what the room is missing, a page at a time: up to the first held
        message, or up to ``known_seq`` (a resync) when nothing is held."""
        try:
            while self.rooms.get(room.name) is room:
                self._release_held(room)
                self._deliver_unsent(room)
                upto = min(room.held) - 1 if room.held else room.known_seq
                if upto <= room.last_seq:
                    break
                before = room.last_seq
                drafts = await self.store.messages_after(
                    room.name, before, min(upto - before, self.backlog_page)
                )
                for draft in drafts:
                    if draft.seq == room.last_seq + 1:
                        self._advance(room, broadcast_from_draft(draft))
                self._deliver_unsent(room)
                if room.last_seq > before:
                    continue
                if room.held and min(room.held) > room.last_seq + 1:
                    # The store should always have what was published after it;
                    # if it doesn't, stalling the room forever is worse than a gap.
                    log.error(
                        "room %s: seq %d..%d missing from the store; skipping them",
                        room.name, room.last_seq + 1, min(room.held) - 1,
                    )
                    room.last_seq = min(room.held) - 1
                    # The recent buffer is read by index from its first seq, so
                    # it must stay consecutive: start it afresh.
                    room.recent.clear()
                elif not room.held and room.known_seq > room.last_seq:
                    log.error(
                        "room %s: the store's last seq is %d but it has nothing after %d",
                        room.name, room.known_seq, room.last_seq,
                    )
                    room.known_seq = room.last_seq
        except Exception:
            log.exception("room %s: filling a gap from the store failed", room.name)
        finally:
            room.filling = False

    # -- repairing what the bus lost ---------------------------------------

    def resync(self, rooms: Collection[str]) -> None:
        """Broadcasts of ``rooms`` may have been lost: read each open one's
        ``last_seq`` from the store and deliver whatever this node missed.
        Returns at once; the rooms are read one after another in the background,
        by one task however often the bus asks (a flapping connection)."""
        names = [name for name in rooms if name in self.rooms]
        if not names:
            return
        self._to_resync.update(dict.fromkeys(names))
        if self._resyncing is None:
            self._resyncing = asyncio.ensure_future(self._resync())

    async def _resync(self) -> None:
        try:
            while self._to_resync:
                name = next(iter(self._to_resync))
                del self._to_resync[name]
                await self._resync_room(name)
        finally:
            self._resyncing = None

    async def _resync_room(self, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        try:
            if not room.ready.done():
                await asyncio.shield(room.ready)
            last_seq = await self.store.last_seq(name)
        except Exception:
            if room.ready.done() and room.ready.exception() is None:
                log.exception("room %s: reading its last seq to resync failed", name)
            return
        if self.rooms.get(name) is not room:
            return
        room.known_seq = max(room.known_seq, last_seq)
        if last_seq > room.last_seq:
            self._fill_gap(room)

    # -- members --------------------------------------------------------

    async def join(self, name: str, since: int | None) -> tuple[Room, int]:
        """Open ``name`` and pick the cursor to catch up from.

        Send the ``joined`` frame next (with ``room.last_seq``), then call
        :meth:`catch_up`. Without ``since`` the member gets the last
        ``history_on_join`` messages; a ``since`` past the end is clamped to
        it (see :meth:`cursor`).
        """
        room = await self.room(name)
        if since is None:
            cursor = max(0, room.last_seq - self.history_on_join)
        else:
            cursor = await self.cursor(room, since)
        room.idle_since = None
        return room, cursor

    async def cursor(self, room: Room, since: int) -> int:
        """``since``, unless it is past the room's end in the store: then that end.

        A ``since`` past this node's ``last_seq`` costs one store read; if the
        store is ahead of the room (this node lags), the room is filled up to it.
        """
        if since <= room.last_seq:
            return since
        last_seq = await self.store.last_seq(room.name)
        if last_seq > room.last_seq and self.rooms.get(room.name) is room:
            room.known_seq = max(room.known_seq, last_seq)
            self._fill_gap(room)
        return min(since, last_seq)

    async def catch_up(self, member: Member, room: Room, cursor: int) -> None:
        """Send ``member`` everything after ``cursor``, then make it live."""
        room.catching_up += 1
        try:
            await self._catch_up(member, room, cursor)
        finally:
            room.catching_up -= 1

    async def _catch_up(self, member: Member, room: Room, cursor: int) -> None:
        while cursor < room.last_seq:
            chunks = await self._page_after(room, cursor, self.backlog_page)
            if member.closed or not member.subscribed(room.name):
                return
            if not chunks:
                break
            for chunk in chunks:
                member.deliver_batch(chunk)
                cursor = chunk.last_seq
                await member.drain()
                if member.closed or not member.subscribed(room.name):
                    return
        if member.closed or not member.subscribed(room.name):
            return
        room.live[member] = None
        if cursor > room.last_seq:
            room.ahead[member] = cursor

    async def _page_after(self, room: Room, since: int, limit: int) -> list[Batch]:
        """The messages after ``since``, from memory if it reaches back, else the
        store, in chunks shared with every member that asks for the same page."""
        messages = room.recent_after(since, limit)
        if messages is None:
            messages = await self.reads.after(room.name, since, limit)
            if self.turns is not None:
                await self.turns.wait_turn()
        if not messages:
            return []
        key = (room.name, since, messages[-1].seq or 0)
        chunks = self._pages.get(key)
        if chunks is None:
            chunks = self._pages[key] = _chunks(messages, self.catch_up_chunk_bytes)
            if len(self._pages) > SHARED_PAGES:
                self._pages.popitem(last=False)
        return chunks

    def _forget_pages(self, name: str) -> None:
        """A message of room ``name`` changed (previews): shared pages of it are stale."""
        self.reads.forget(name)
        for key in [k for k in self._pages if k[0] == name]:
            del self._pages[key]

    def delivered_to(self, member: Member, name: str) -> int | None:
        """The seq of the last message of room ``name`` handed to ``member`` if it
        is live there (everything up to it was), else None: a member catching
        up knows its own position, the hub does not.

        While a room's new messages are being handed out, this is still the
        seq before them: a member cut off in the middle knows which it got.
        """
        room = self.rooms.get(name)
        if room is None or member not in room.live:
            return None
        return room.delivered

    def leave(self, member: Member, name: str, *, now: float) -> None:
        room = self.rooms.get(name)
        if room is not None:
            room.live.pop(member, None)
            room.ahead.pop(member, None)
            if not room.live and not room.waiters:
                room.idle_since = now

    async def read_after(self, room: Room, since: int, limit: int) -> list[Broadcast]:
        """Up to ``limit`` messages after ``since``, from memory if it reaches back
        and the room is not known to lag the store past ``since``."""
        in_memory = room.recent_after(since, limit)
        if in_memory is not None and (in_memory or room.known_seq <= since):
            return in_memory
        return await self.reads.after(room.name, since, limit)

    async def read_before(self, name: str, before: int | None, limit: int) -> list[Broadcast]:
        drafts = await self.store.messages_before(name, before, limit)
        return [broadcast_from_draft(d) for d in drafts]

    # -- long-polling ---------------------------------------------------

    def park(self, room: Room, since: int, limit: int, waiter: Waiter) -> None:
        """Answer ``waiter`` once a message after ``since`` arrives (at most
        ``limit`` of them). Call :meth:`unpark` if it goes away first."""
        room.waiters[waiter] = (since, limit)
        room.idle_since = None

    def unpark(self, room: Room, waiter: Waiter, *, now: float) -> None:
        """``waiter`` stopped waiting (answered, timed out or hung up)."""
        room.waiters.pop(waiter, None)
        if not room.live and not room.waiters:
            room.idle_since = now

    def _answer_waiters(self, room: Room, advanced: list[Broadcast]) -> None:
        """Answer the pollers parked before ``advanced`` (consecutive, just
        delivered) arrived; pollers on the same cursor share one answer."""
        answers: dict[tuple[int, int], PollAnswer] = {}
        parked, room.waiters = room.waiters, {}
        for waiter, (since, limit) in parked.items():
            if since >= room.last_seq:
                room.waiters[waiter] = (since, limit)
                continue
            answer = answers.get((since, limit))
            if answer is None:
                messages = _after(advanced, since, limit)
                if messages is None:
                    messages = room.recent_after(since, limit)
                if messages is None:
                    # Nothing in memory reaches back to this cursor (a gap the
                    # store could not fill was skipped). No messages and the
                    # same cursor: the next poll reads the store.
                    messages = []
                answer = answers[(since, limit)] = PollAnswer(encode_poll_body(messages, since), messages)
            self.deliveries += len(answer.messages)
            waiter.answered(answer)

    # -- housekeeping ---------------------------------------------------

    def close_idle_rooms(self, *, now: float, idle: float = ROOM_IDLE_SECONDS) -> list[str]:
        """Forget rooms nobody has used for ``idle`` seconds; returns their names."""
        closed = [
            name for name, room in self.rooms.items()
            if room.idle_since is not None and now - room.idle_since >= idle
            and not room.live and not room.waiters and not room.filling
            and not room.catching_up
        ]
        for name in closed:
            del self.rooms[name]
            self.bus.unsubscribe(name)
        return closed

    def waiting_polls(self) -> int:
        """How many long-polls are parked, in all rooms."""
        return sum(len(room.waiters) for room in self.rooms.values())

    def answer_all_waiters(self) -> None:
        """At shutdown: answer every long-poll now, with what it has."""
        for room in self.rooms.values():
            parked, room.waiters = room.waiters, {}
            answers: dict[int, PollAnswer] = {}
            for waiter, (since, _limit) in parked.items():
                answer = answers.get(since)
                if answer is None:
                    answer = answers[since] = PollAnswer(encode_poll_body((), since), [])
                waiter.answered(answer)
