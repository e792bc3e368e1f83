"""The client side of the chat protocol, without I/O: what ``squall chat`` knows and sends.

Theory of operation. :class:`ChatState` is fed what happens — the connection
opened or was lost (:meth:`~ChatState.connection_opened`,
:meth:`~ChatState.connection_lost`), a frame arrived (:meth:`~ChatState.receive`),
the person typed something (:meth:`~ChatState.join`, :meth:`~ChatState.submit`,
:meth:`~ChatState.typing`, …), time passed (:meth:`~ChatState.tick`) — and after
each call the caller sends :meth:`~ChatState.frames_to_send` over the socket and
redraws. Time is an argument (seconds on any monotonic clock); nothing here reads
a clock, a socket or the terminal. It is the page's ``transport.js`` ``Connection``
and ``store.js`` in one, for one transport (WebSocket), and keeps the same rules:

* **One cursor per room** — the last seq delivered live. A ``message`` at or below
  it is dropped, and every (re)join asks ``since`` it, so a reconnect has neither a
  gap nor a duplicate. Messages are kept by seq; history read with ``before=``
  goes in at its place and never moves the cursor.
* **The outbox** holds each unacknowledged send under its client id. It goes out
  once its room is *ready* on the current connection: joined, and the backlog read
  up to the seq ``joined`` reported (or :data:`READY_TIMEOUT` passed) — so a message
  the server already stored has come back with our id and left the outbox first.
  A send whose connection died goes out again with the **same id** on the next one;
  the server stores a repeated ``(room, nick, id)`` once. Messages typed while
  offline simply wait in the outbox, shown as pending.
* ``unavailable`` is retried with back-off (:data:`MAX_RETRIES` times) and
  ``rate_limited`` after its ``retry_after``; any other error marks the message
  failed, with the server's reason.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..backoff import backoff_delay

__all__ = [
    "ConnectionState", "MessageState", "ChatMessage", "Notice", "Room", "ChatState", "same_nick",
    "READY_TIMEOUT", "TYPING_SHOWN", "TYPING_EVERY", "MAX_RETRIES", "HISTORY_PAGE", "MAX_BODY_CHARS",
]

READY_TIMEOUT = 3.0  # s: a room counts as caught up after this even if its seqs have holes
TYPING_SHOWN = 6.0  # s each nick of a `typing` event is shown (the page's TYPING_SHOWN_MS)
TYPING_EVERY = 3.0  # s between our `typing` frames; the server passes one per room every 2 s
MAX_RETRIES = 5  # `unavailable` answers retried before the message is marked failed
RETRY_LOW, RETRY_HIGH = 0.5, 15.0  # s, back-off of those retries
HISTORY_PAGE = 50  # messages per `before=` read, as on the page
MAX_MESSAGES_PER_ROOM = 5000  # kept in memory; older ones drop off (history reads them again)
MAX_NOTICES_PER_ROOM = 200
MAX_BODY_CHARS = 4000  # the server's default `max_body_chars`: longer is refused before sending
CLOSE_TOO_BIG = 1009  # RFC 6455 §7.4.1: the server refused a frame as too large


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    OFFLINE = "offline"


class MessageState(enum.Enum):
    SENT = "sent"
    PENDING = "pending"
    FAILED = "failed"


def same_nick(a: str, b: str) -> bool:
    """Nicks compare case-insensitively, as the server's casefolded nick key does."""
    return a.casefold() == b.casefold()


@dataclasses.dataclass
class ChatMessage:
    room: str
    seq: int | None
    id: str | None
    nick: str
    body: str
    ts: int
    mentions: tuple[str, ...] = ()
    state: MessageState = MessageState.SENT
    error: str | None = None
    edited: bool = False
    deleted: bool = False
    reactions: tuple[tuple[str, int], ...] = ()  # (emoji, how many), in first-use order

    @property
    def action(self) -> str | None:
        """The text of a ``/me`` message, else None."""
        return self.body[4:] if self.body.startswith("/me ") else None

    @classmethod
    def from_wire(cls, room: str, event: Mapping[str, Any]) -> ChatMessage:
        mentions = event.get("mentions")
        ts = event.get("ts")
        return cls(
            room=room,
            seq=int(event["seq"]),
            id=str(event["id"]) if event.get("id") is not None else None,
            nick=str(event.get("nick", "")),
            body=str(event.get("body", "")),
            ts=ts if isinstance(ts, int) else 0,
            edited=event.get("edited") is True,
            deleted=event.get("deleted") is True,
            reactions=_reaction_counts(event.get("reaction_counts")),
            mentions=tuple(str(n) for n in mentions) if isinstance(mentions, list) else (),
        )


@dataclasses.dataclass(frozen=True)
class Notice:
    """A line from the client itself (an error, /rooms), shown after message ``after``."""

    after: int
    text: str


@dataclasses.dataclass
class _Outgoing:
    room: str
    body: str
    id: str
    in_flight: bool = False
    retries: int = 0
    not_before: float = 0.0


class Room:
    """One joined room: confirmed messages by seq, our pending ones, counts, typing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[ChatMessage] = []  # confirmed, ascending seq
        self._seqs: list[int] = []  # the same seqs, for bisect
        self.pending: dict[str, ChatMessage] = {}  # client id → not yet acknowledged (or failed)
        self.notices: list[Notice] = []
        self.cursor: int | None = None  # last seq delivered live
        self.unread = 0
        self.mentions = 0
        self.member_count = 0
        self.typing: dict[str, float] = {}  # nick → shown until
        self.history_done = False
        self.loading_history = False
        # On the current connection:
        self.joined = False
        self.join_seq: int | None = None
        self.joined_at = 0.0
        self.ready = False
        self.rejoin_at: float | None = None  # a join refused as rate_limited goes again then
        self.seen_until = 0  # seqs up to here came as the first join's history: not unread, no bell

    @property
    def oldest_seq(self) -> int | None:
        return self._seqs[0] if self._seqs else None

    def insert(self, message: ChatMessage) -> bool:
        """Put a confirmed message at its seq; False when that seq was already here."""
        assert message.seq is not None
        index = bisect.bisect_left(self._seqs, message.seq)
        if index < len(self._seqs) and self._seqs[index] == message.seq:
            return False
        self._seqs.insert(index, message.seq)
        self.messages.insert(index, message)
        if len(self.messages) > MAX_MESSAGES_PER_ROOM:
            del self.messages[0], self._seqs[0]
            self.history_done = False
        return True

    def by_seq(self, seq: int) -> ChatMessage | None:
        index = bisect.bisect_left(self._seqs, seq)
        if index < len(self._seqs) and self._seqs[index] == seq:
            return self.messages[index]
        return None

    def timeline(self) -> Iterator[ChatMessage | Notice]:
        """Messages in seq order with the notices among them, then pending messages."""
        notices = iter(self.notices)
        notice = next(notices, None)
        for message in self.messages:
            assert message.seq is not None
            while notice is not None and notice.after < message.seq:
                yield notice
                notice = next(notices, None)
            yield message
        while notice is not None:
            yield notice
            notice = next(notices, None)
        yield from self.pending.values()

    def typing_nicks(self, now: float) -> list[str]:
        for nick in [n for n, until in self.typing.items() if until <= now]:
            del self.typing[nick]
        return sorted(self.typing, key=str.casefold)


class ChatState:
    """Everything ``squall chat`` knows; see the module docstring for how to drive it.

    ``nick`` is our nick as the server spells it. ``rand`` is a draw in [0, 1) for
    the retry back-off's jitter (``random.random`` in the client; a constant in tests).
    """

    def __init__(self, nick: str, *, rand: Any = None) -> None:
        self.nick = nick
        self.rooms: dict[str, Room] = {}
        self.active: str | None = None
        self.connection = ConnectionState.CONNECTING
        self._outbox: dict[str, _Outgoing] = {}
        self._frames: list[dict[str, Any]] = []
        self._rand = rand if rand is not None else (lambda: 0.5)
        self._last_typing: dict[str, float] = {}
        self.console = Room("")  # notices while no room is open; never joined

    @property
    def shown(self) -> Room:
        """The room on screen, or :attr:`console` when none is open."""
        return self.rooms[self.active] if self.active is not None else self.console

    # -- what to send ---------------------------------------------------------------

    def frames_to_send(self) -> list[dict[str, Any]]:
        """Frames to write, in order, since the last call. Call after every other method."""
        frames, self._frames = self._frames, []
        return frames

    @property
    def queued(self) -> int:
        """Messages written and not yet acknowledged (failed ones excluded)."""
        return len(self._outbox)

    # -- the connection -------------------------------------------------------------

    def connecting(self) -> None:
        self.connection = ConnectionState.CONNECTING

    def connection_opened(self, now: float) -> None:
        """A socket is open: every room is joined again from its cursor."""
        self.connection = ConnectionState.OPEN
        self._frames.clear()
        for room in self.rooms.values():
            self._send_join(room, now)

    def connection_lost(self, code: int | None = None) -> None:
        """The socket is gone (closed with ``code``, if it had opened). Unacknowledged
        sends go again on the next one — but for a close 1009: a frame we sent was
        too large, and sending it again would only close the next socket too."""
        self.connection = ConnectionState.OFFLINE
        self._frames.clear()
        if code == CLOSE_TOO_BIG:
            for entry in [e for e in self._outbox.values() if e.in_flight]:
                self._fail(entry, "too_large", "the server closed the connection: a frame was too large")
        for room in self.rooms.values():
            room.joined = room.ready = False
            room.join_seq = None
            room.typing.clear()
        for entry in self._outbox.values():
            entry.in_flight = False

    def set_nick(self, nick: str) -> None:
        """A new session under ``nick``; only while nothing is queued (the server
        knows a message by (room, nick, id), so a resend under another nick could
        be stored twice)."""
        if self._outbox:
            raise ValueError("messages are still being sent")
        self.nick = nick

    # -- what the person does -------------------------------------------------------

    def join(self, name: str, now: float) -> Room:
        """Join ``name`` (if new) and put it on screen."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            if self.connection is ConnectionState.OPEN:
                self._send_join(room, now)
        self.activate(name)
        return room

    def leave(self, name: str) -> bool:
        """Leave ``name``; its queued messages are dropped. False if it was not joined."""
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        for id in [id for id, entry in self._outbox.items() if entry.room == name]:
            del self._outbox[id]
        if self.connection is ConnectionState.OPEN:
            self._frames.append({"type": "leave", "room": name})
        if self.active == name:
            self.active = next(iter(self.rooms), None)
            if self.active is not None:
                self.activate(self.active)
        return True

    def activate(self, name: str) -> None:
        """Show ``name``; its unread and mention counts are cleared."""
        room = self.rooms[name]
        self.active = name
        room.unread = room.mentions = 0

    def cycle(self, step: int) -> str | None:
        """Show the next (``step`` 1) or previous (-1) room; returns its name."""
        if not self.rooms:
            return None
        names = list(self.rooms)
        index = names.index(self.active) if self.active in names else 0
        self.activate(names[(index + step) % len(names)])
        return self.active

    def submit(self, body: str, id: str, now: float, *, ts: int = 0) -> ChatMessage | None:
        """Write ``body`` to the room on screen under client id ``id``: shown
        pending at once (``ts``, ms since the epoch, is the time shown beside it),
        sent when the room is ready. None when no room is open."""
        if self.active is None:
            return None
        room = self.rooms[self.active]
        message = ChatMessage(room.name, None, id, self.nick, body, ts, state=MessageState.PENDING)
        room.pending[id] = message
        self._outbox[id] = _Outgoing(room.name, body, id)
        self._flush(now)
        return message

    def typing(self, now: float) -> bool:
        """The person is typing in the room on screen: a ``typing`` frame at most
        every :data:`TYPING_EVERY` seconds per room. True when one was queued."""
        room = self.rooms.get(self.active or "")
        if room is None or not room.ready or self.connection is not ConnectionState.OPEN:
            return False
        if now - self._last_typing.get(room.name, -TYPING_EVERY) < TYPING_EVERY:
            return False
        self._last_typing[room.name] = now
        self._frames.append({"type": "typing", "room": room.name})
        return True

    def notice(self, text: str, room: str | None = None) -> None:
        """Show ``text`` in ``room`` (default: the room on screen, else the first)."""
        target = self.rooms.get(room or self.active or "") or self.console
        last = target.messages[-1].seq if target.messages else 0
        assert last is not None
        target.notices.append(Notice(last, text))
        del target.notices[:-MAX_NOTICES_PER_ROOM]

    # -- history ------------------------------------------------------------------

    def history_request(self, name: str) -> int | None:
        """The ``before`` seq of the next history page to read for ``name``, or None
        (all read, or a read is under way). Call :meth:`add_history` with the answer."""
        room = self.rooms.get(name)
        if room is None or room.history_done or room.loading_history:
            return None
        before = room.oldest_seq
        if before is None:
            before = (room.cursor or 0) + 1
        if before <= 1:
            room.history_done = True
            return None
        room.loading_history = True
        return before

    def add_history(self, name: str, events: Sequence[Mapping[str, Any]], *, limit: int = HISTORY_PAGE) -> int:
        """Older messages read with ``before=``; returns how many were new."""
        room = self.rooms.get(name)
        if room is None:
            return 0
        room.loading_history = False
        added = sum(room.insert(ChatMessage.from_wire(name, event)) for event in events if _has_seq(event))
        if len(events) < limit or room.oldest_seq == 1:
            room.history_done = True
        return added

    def history_failed(self, name: str) -> None:
        room = self.rooms.get(name)
        if room is not None:
            room.loading_history = False

    # -- what the server says -----------------------------------------------------------

    def receive(self, event: Mapping[str, Any], now: float) -> ChatMessage | None:
        """A frame from the server. Returns the new message when it was one that
        mentions us (for a bell), else None."""
        kind = event.get("type")
        room = self.rooms.get(str(event.get("room", "")))
        if kind == "ack":
            self._acknowledged(event)
        elif kind == "error":
            self._error(event, now)
        elif room is None:
            return None
        elif kind == "joined":
            room.joined = True
            seq = event.get("seq")
            join_seq = room.join_seq = seq if isinstance(seq, int) and seq >= 0 else 0
            room.joined_at = now
            count = event.get("count")
            room.member_count = count if isinstance(count, int) else room.member_count
            if room.cursor is None:
                room.seen_until = join_seq
                if join_seq == 0:
                    room.cursor = 0  # an empty room: the next join asks for everything from the start
            self._check_ready(room, now)
        elif kind == "message" and _has_seq(event):
            return self._message(room, event, now)
        elif kind == "change" and _has_seq(event):
            self._change(room, event, now)
        elif kind == "typing":
            for nick in event.get("nicks") or ():
                if isinstance(nick, str) and not same_nick(nick, self.nick):
                    room.typing[nick] = now + TYPING_SHOWN
        elif kind == "presence":
            count = event.get("count")
            if isinstance(count, int):
                room.member_count = count
            for change in event.get("changes") or ():
                if isinstance(change, dict) and change.get("state") == "offline":
                    room.typing.pop(str(change.get("nick")), None)
        return None

    def tick(self, now: float) -> None:
        """Time passed: rooms whose backlog never caught up count as ready after
        :data:`READY_TIMEOUT`, and retries whose time has come go out."""
        for room in self.rooms.values():
            if room.joined and not room.ready and now - room.joined_at >= READY_TIMEOUT:
                room.ready = True
            if room.rejoin_at is not None and now >= room.rejoin_at and self.connection is ConnectionState.OPEN:
                self._send_join(room, now)
        self._flush(now)

    def mentions_me(self, message: ChatMessage) -> bool:
        return any(same_nick(nick, self.nick) for nick in message.mentions)

    # -- inside -----------------------------------------------------------------------

    def _send_join(self, room: Room, now: float) -> None:
        frame: dict[str, Any] = {"type": "join", "room": room.name}
        if room.cursor is not None:
            frame["since"] = room.cursor
        room.joined = room.ready = False
        room.joined_at = now
        room.rejoin_at = None
        self._frames.append(frame)

    def _check_ready(self, room: Room, now: float) -> None:
        if room.joined and not room.ready and room.join_seq is not None and (room.cursor or 0) >= room.join_seq:
            room.ready = True
            self._flush(now)

    def _message(self, room: Room, event: Mapping[str, Any], now: float) -> ChatMessage | None:
        message = ChatMessage.from_wire(room.name, event)
        assert message.seq is not None
        if room.cursor is not None and message.seq <= room.cursor:
            return None  # delivered already: a resume overlapping what we had
        room.cursor = message.seq
        ours = same_nick(message.nick, self.nick)
        if ours and message.id is not None:
            room.pending.pop(message.id, None)
            self._outbox.pop(message.id, None)  # stored: the echo is as good as an ack
        new = room.insert(message)
        self._check_ready(room, now)
        if not new or ours or message.seq <= room.seen_until:
            return None
        room.typing.pop(message.nick, None)
        mention = self.mentions_me(message)
        if room.name != self.active:
            room.unread += 1
            room.mentions += mention
        return message if mention else None

    def _change(self, room: Room, event: Mapping[str, Any], now: float) -> None:
        """An edit, delete or reaction: it takes its own seq in the room's order
        (the cursor moves past it, as past a message), and carries the whole new
        state of the message it changes, which replaces what is held."""
        seq = event["seq"]
        if room.cursor is not None and seq <= room.cursor:
            return
        room.cursor = seq
        ours = same_nick(str(event.get("nick", "")), self.nick)
        if ours and event.get("id") is not None:
            self._outbox.pop(str(event["id"]), None)
        state, target = event.get("message"), event.get("target")
        if isinstance(state, Mapping) and _has_seq(state) and isinstance(target, int):
            held = room.by_seq(target)
            if held is not None:
                index = room.messages.index(held)
                room.messages[index] = ChatMessage.from_wire(room.name, state)
        self._check_ready(room, now)

    def _acknowledged(self, event: Mapping[str, Any]) -> None:
        id = str(event.get("id"))
        entry = self._outbox.pop(id, None)
        room = self.rooms.get(entry.room if entry else str(event.get("room", "")))
        if room is None:
            return
        pending = room.pending.pop(id, None)
        seq = event.get("seq")
        if pending is not None and isinstance(seq, int) and room.by_seq(seq) is None:
            # The echo comes as a `message` too; until then the ack places it.
            pending.seq, pending.state = seq, MessageState.SENT
            room.insert(pending)

    def _error(self, event: Mapping[str, Any], now: float) -> None:
        code = str(event.get("code", "error"))
        reason = str(event.get("reason", ""))
        id = event.get("id")
        entry = self._outbox.get(str(id)) if id is not None else None
        if entry is None:
            if code == "too_slow":
                return  # the close (4008) follows; the reconnect resumes from the cursors
            name = event.get("room")
            room = self.rooms.get(name) if isinstance(name, str) and id is None else None
            if room is None:
                self.notice(f"error {code}: {reason}")
            elif code == "rate_limited":
                wait = event.get("retry_after")
                room.rejoin_at = now + (float(wait) if isinstance(wait, (int, float)) else 1.0)
            else:  # the join was refused (too_many_rooms, forbidden, banned, …): the room goes
                self.leave(room.name)
                self.notice(f"cannot join #{room.name}: {code}" + (f": {reason}" if reason else ""))
            return
        retry_after = event.get("retry_after")
        if code in ("unavailable", "rate_limited") and entry.retries < MAX_RETRIES:
            if code == "rate_limited" and isinstance(retry_after, (int, float)):
                delay = float(retry_after)
            else:
                delay = backoff_delay(entry.retries, low=RETRY_LOW, high=RETRY_HIGH, rand=self._rand())
            entry.retries += 1
            entry.in_flight = False
            entry.not_before = now + delay
            return
        self._fail(entry, code, reason)

    def _fail(self, entry: _Outgoing, code: str, reason: str) -> None:
        del self._outbox[entry.id]
        message = self.rooms[entry.room].pending.get(entry.id) if entry.room in self.rooms else None
        if message is not None:
            message.state = MessageState.FAILED
            message.error = f"{code}: {reason}" if reason else code

    def _flush(self, now: float) -> None:
        if self.connection is not ConnectionState.OPEN:
            return
        for entry in self._outbox.values():
            room = self.rooms.get(entry.room)
            if entry.in_flight or room is None or not room.ready or now < entry.not_before:
                continue
            entry.in_flight = True
            self._frames.append({"type": "send", "room": entry.room, "body": entry.body, "id": entry.id})


def _reaction_counts(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        return ()
    return tuple((str(emoji), count) for emoji, count in value.items() if isinstance(count, int) and count > 0)


def _has_seq(event: Mapping[str, Any]) -> bool:
    seq = event.get("seq")
    return isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
