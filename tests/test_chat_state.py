"""``squall chat``'s client state and command parsing, without a loop, a socket or a terminal.

The state is fed frames as the server would send them (docs/protocol.md §3) and
asserted on the frames it queues and on what it would show.
"""

from __future__ import annotations

from typing import Any

import pytest

from squall.chat import commands
from squall.chat.net import websocket_url
from squall.chat.state import (
    MAX_RETRIES, READY_TIMEOUT, TYPING_EVERY, ChatMessage, ChatState, ConnectionState, MessageState, Notice,
)


def message(room: str, seq: int, nick: str = "bob", body: str = "hi", id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "room": room, "seq": seq, "id": id or f"{nick}-{seq}", "nick": nick,
            "body": body, "ts": 1_800_000_000_000 + seq, **extra}


def joined(room: str, seq: int, count: int = 1) -> dict[str, Any]:
    return {"type": "joined", "room": room, "seq": seq, "count": count, "members": [], "next": None}


def sends(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["room"], f["id"]) for f in frames if f["type"] == "send"]


def seqs(state: ChatState, room: str) -> list[int | None]:
    return [m.seq for m in state.rooms[room].messages]


def open_in(state: ChatState, room: str, seq: int = 0, now: float = 0.0) -> None:
    """Connect, and have the server answer the join with an empty backlog up to ``seq``."""
    state.connection_opened(now)
    state.frames_to_send()
    state.receive(joined(room, seq), now)


class TestCommands:
    @pytest.mark.parametrize(("line", "expected"), [
        ("hello", commands.Say("hello")),
        ("  hello  ", commands.Say("hello")),
        ("//join is a command", commands.Say("/join is a command")),
        ("/join #Lobby", commands.Join("lobby")),
        ("/j dev-ops", commands.Join("dev-ops")),
        ("/leave", commands.Leave(None)),
        ("/leave other", commands.Leave("other")),
        ("/rooms", commands.ListRooms()),
        ("/me waves", commands.Action("waves")),
        ("/nick carol", commands.ChangeNick("carol")),
        ("/quit", commands.Quit()),
        ("/HELP", commands.Help()),
    ])
    def test_lines(self, line: str, expected: commands.Command) -> None:
        assert commands.parse_line(line) == expected

    def test_blank_is_nothing(self) -> None:
        assert commands.parse_line("   ") is None

    @pytest.mark.parametrize(("line", "words"), [
        ("/join", "needs a room"),
        ("/join Bad Room!", "not a room name"),
        ("/join " + "a" * 65, "not a room name"),
        ("/me", "needs an action"),
        ("/nick", "needs one nick"),
        ("/nick two words", "needs one nick"),
        ("/frobnicate", "unknown command /frobnicate"),
    ])
    def test_refusals_say_why(self, line: str, words: str) -> None:
        result = commands.parse_line(line)
        assert isinstance(result, commands.Invalid)
        assert words in result.reason

    def test_websocket_url(self) -> None:
        assert websocket_url("http://127.0.0.1:8888") == "ws://127.0.0.1:8888/ws"
        assert websocket_url("https://chat.example/squall/") == "wss://chat.example/squall/ws"
        with pytest.raises(ValueError):
            websocket_url("ftp://x")


class TestResume:
    def test_every_room_rejoins_from_its_cursor(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.join("other", 0)
        state.connection_opened(0)
        assert state.frames_to_send() == [{"type": "join", "room": "lobby"}, {"type": "join", "room": "other"}]
        state.receive(joined("lobby", 2), 0)
        state.receive(message("lobby", 1), 0)
        state.receive(message("lobby", 2), 0)
        state.receive(joined("other", 0), 0)
        state.connection_lost()
        assert state.connection is ConnectionState.OFFLINE
        state.connection_opened(1)
        assert state.frames_to_send() == [
            {"type": "join", "room": "lobby", "since": 2},
            {"type": "join", "room": "other", "since": 0},  # empty then: everything from the start
        ]

    def test_a_resume_that_overlaps_has_no_duplicate(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby", 0)
        for seq in (1, 2, 3):
            state.receive(message("lobby", seq), 0)
        state.receive(message("lobby", 2), 0)  # a second copy, as an overlapping backlog would
        state.receive(message("lobby", 4), 0)
        assert seqs(state, "lobby") == [1, 2, 3, 4]

    def test_history_goes_in_below_and_never_moves_the_cursor(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby", 120)
        for seq in range(71, 121):  # the last 50 after a join without since
            state.receive(message("lobby", seq), 0)
        before = state.history_request("lobby")
        assert before == 71
        assert state.history_request("lobby") is None  # one read at a time
        added = state.add_history("lobby", [message("lobby", s) for s in range(21, 71)] + [message("lobby", 80)])
        assert added == 50
        assert seqs(state, "lobby") == list(range(21, 121))
        assert state.rooms["lobby"].cursor == 120
        assert state.history_request("lobby") == 21
        state.add_history("lobby", [message("lobby", s) for s in range(1, 21)])
        assert state.rooms["lobby"].history_done  # a short page: the beginning
        assert state.history_request("lobby") is None


class TestOutbox:
    def test_typed_offline_is_pending_then_sent_once_the_room_caught_up(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.connection_lost()
        shown = state.submit("while down", "c1", 0)
        assert shown is not None and shown.state is MessageState.PENDING
        assert state.frames_to_send() == []
        assert state.queued == 1
        state.connection_opened(1)
        assert state.frames_to_send() == [{"type": "join", "room": "lobby"}]
        state.receive(joined("lobby", 2), 1)
        state.receive(message("lobby", 1), 1)
        assert sends(state.frames_to_send()) == []  # the backlog is not read up to 2 yet
        state.receive(message("lobby", 2), 1)
        assert state.frames_to_send() == [{"type": "send", "room": "lobby", "body": "while down", "id": "c1"}]

    def test_unacked_is_sent_again_with_the_same_id_on_the_next_connection(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("hello", "c1", 0)
        assert sends(state.frames_to_send()) == [("lobby", "c1")]
        state.connection_lost()
        open_in(state, "lobby", 0, now=1)
        assert sends(state.frames_to_send()) == [("lobby", "c1")]

    def test_stored_before_the_crash_comes_back_in_the_backlog_and_is_not_resent(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("hello", "c1", 0)
        state.frames_to_send()
        state.connection_lost()
        state.connection_opened(1)
        state.frames_to_send()
        state.receive(joined("lobby", 1), 1)
        state.receive(message("lobby", 1, nick="Alice", body="hello", id="c1"), 1)
        assert state.frames_to_send() == []
        assert state.queued == 0
        assert state.rooms["lobby"].pending == {}
        assert seqs(state, "lobby") == [1]

    def test_ack_places_the_message_and_the_echo_is_not_a_second_copy(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("hello", "c1", 0)
        state.receive({"type": "ack", "id": "c1", "room": "lobby", "seq": 1}, 0)
        assert state.queued == 0
        assert [(m.seq, m.state) for m in state.rooms["lobby"].messages] == [(1, MessageState.SENT)]
        state.receive(message("lobby", 1, nick="alice", body="hello", id="c1"), 0)
        assert seqs(state, "lobby") == [1]

    def test_unavailable_is_retried_after_a_back_off_then_fails(self) -> None:
        state = ChatState("alice", rand=lambda: 0.0)
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("hello", "c1", 0)
        state.frames_to_send()
        now = 0.0
        for _ in range(MAX_RETRIES):
            state.receive({"type": "error", "id": "c1", "code": "unavailable", "reason": "busy"}, now)
            state.tick(now)
            assert state.frames_to_send() == []
            now += 0.5  # the back-off's floor
            state.tick(now)
            assert sends(state.frames_to_send()) == [("lobby", "c1")]
        state.receive({"type": "error", "id": "c1", "code": "unavailable", "reason": "busy"}, now)
        failed = state.rooms["lobby"].pending["c1"]
        assert failed.state is MessageState.FAILED and failed.error == "unavailable: busy"
        assert state.queued == 0

    def test_rate_limited_waits_for_retry_after(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("hello", "c1", 0)
        state.frames_to_send()
        state.receive({"type": "error", "id": "c1", "code": "rate_limited", "retry_after": 2.5}, 10)
        state.tick(12.4)
        assert state.frames_to_send() == []
        state.tick(12.5)
        assert sends(state.frames_to_send()) == [("lobby", "c1")]

    def test_a_refused_message_fails_with_the_reason(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("x" * 5000, "c1", 0)
        state.frames_to_send()
        state.receive({"type": "error", "id": "c1", "code": "body_too_long", "reason": "over 4000"}, 0)
        assert state.rooms["lobby"].pending["c1"].error == "body_too_long: over 4000"
        state.connection_lost()
        open_in(state, "lobby", now=1)
        assert sends(state.frames_to_send()) == []  # a failed message is not resent

    def test_a_room_with_holes_is_ready_after_the_timeout(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.submit("hello", "c1", 0)
        open_in(state, "lobby", 5, now=10)
        state.tick(10 + READY_TIMEOUT - 0.1)
        assert state.frames_to_send() == []
        state.tick(10 + READY_TIMEOUT)
        assert sends(state.frames_to_send()) == [("lobby", "c1")]

    def test_leaving_drops_the_rooms_queue(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.join("other", 0)
        state.connection_opened(0)
        state.frames_to_send()
        state.submit("to other", "c1", 0)
        assert state.leave("other")
        assert state.frames_to_send() == [{"type": "leave", "room": "other"}]
        assert state.queued == 0
        assert state.active == "lobby"
        assert not state.leave("other")

    def test_nick_changes_only_with_nothing_queued(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.submit("hello", "c1", 0)
        with pytest.raises(ValueError):
            state.set_nick("carol")
        state.receive({"type": "ack", "id": "c1", "room": "lobby", "seq": 1}, 0)
        state.set_nick("carol")
        assert state.nick == "carol"


class TestScreenFacts:
    def test_unread_and_mentions_count_in_rooms_not_on_screen(self) -> None:
        state = ChatState("Alice")
        state.join("other", 0)
        state.join("lobby", 0)
        state.connection_opened(0)
        state.receive(joined("lobby", 0), 0)
        state.receive(joined("other", 0), 0)
        assert state.receive(message("other", 1, mentions=["alice"], body="hi @alice"), 0) is not None
        state.receive(message("other", 2), 0)
        assert state.receive(message("lobby", 1), 0) is None
        assert (state.rooms["other"].unread, state.rooms["other"].mentions) == (2, 1)
        assert state.rooms["lobby"].unread == 0
        state.cycle(-1)
        assert state.active == "other"
        assert (state.rooms["other"].unread, state.rooms["other"].mentions) == (0, 0)

    def test_typing_is_sent_at_most_every_few_seconds_and_shown_for_a_while(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        assert not state.typing(0)  # not connected: nothing to tell
        open_in(state, "lobby")
        assert state.typing(100)
        assert not state.typing(100 + TYPING_EVERY - 0.1)
        assert state.typing(100 + TYPING_EVERY)
        assert state.frames_to_send() == [{"type": "typing", "room": "lobby"}] * 2
        state.receive({"type": "typing", "room": "lobby", "nicks": ["bob", "ALICE"]}, 100)
        room = state.rooms["lobby"]
        assert room.typing_nicks(101) == ["bob"]
        assert room.typing_nicks(107) == []

    def test_me_and_notices_in_the_timeline(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.receive(message("lobby", 1, body="/me waves"), 0)
        state.notice("something")
        state.submit("pending", "c1", 0)
        items = list(state.rooms["lobby"].timeline())
        assert isinstance(items[0], ChatMessage) and items[0].action == "waves"
        assert items[1] == Notice(1, "something")
        assert isinstance(items[2], ChatMessage) and items[2].state is MessageState.PENDING

    def test_notices_without_a_room_go_to_the_console(self) -> None:
        state = ChatState("alice")
        state.notice("hello")
        assert state.rooms == {}
        assert list(state.shown.timeline()) == [Notice(0, "hello")]


class TestRefusals:
    def test_a_rate_limited_join_goes_again_after_retry_after(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.connection_opened(0)
        state.frames_to_send()
        state.receive({"type": "error", "room": "lobby", "code": "rate_limited", "retry_after": 1.5}, 10)
        state.tick(11.4)
        assert state.frames_to_send() == []
        state.tick(11.5)
        assert state.frames_to_send() == [{"type": "join", "room": "lobby"}]

    def test_a_refused_join_drops_the_room_and_says_why(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        state.join("more", 0)
        state.connection_opened(0)
        state.submit("queued", "c1", 0)
        state.frames_to_send()
        state.receive({"type": "error", "room": "more", "code": "too_many_rooms", "reason": "at most 1"}, 0)
        assert list(state.rooms) == ["lobby"]
        assert state.queued == 0
        assert Notice(0, "cannot join #more: too_many_rooms: at most 1") in list(state.shown.timeline())

    def test_close_1009_fails_what_was_in_flight_instead_of_resending_it(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.submit("big", "c1", 0)
        state.frames_to_send()
        state.connection_lost(1009)
        assert state.queued == 0
        assert state.rooms["lobby"].pending["c1"].state is MessageState.FAILED


class TestRendering:
    def test_a_mention_of_me_is_marked_and_mine_is_not(self) -> None:
        from squall.chat.app import render_item

        theirs = ChatMessage.from_wire("lobby", message("lobby", 1, nick="bob", body="hi @Alice", mentions=["Alice"]))
        mine = ChatMessage.from_wire("lobby", message("lobby", 2, nick="alice", body="hi @alice", mentions=["alice"]))
        marked = render_item(theirs, "alice")
        assert all("class:mention" in fragment[0] for fragment in marked)
        assert "".join(fragment[1] for fragment in marked).endswith("hi @Alice ◀")
        assert not any("class:mention" in fragment[0] for fragment in render_item(mine, "alice"))

    def test_wrap_counts_cells_and_breaks_at_newlines(self) -> None:
        from squall.chat.app import wrap

        rows = wrap([("", "ab\n漢字漢字x")], 5)
        assert ["".join(f[1] for f in row) for row in rows] == ["ab", "漢字", "漢字x"]


def test_the_history_of_a_first_join_is_neither_unread_nor_a_mention() -> None:
    state = ChatState("alice")
    state.join("other", 0)
    state.join("lobby", 0)
    state.connection_opened(0)
    state.receive(joined("other", 2), 0)
    assert state.receive(message("other", 1, mentions=["alice"]), 0) is None
    state.receive(message("other", 2), 0)
    assert state.rooms["other"].unread == 0
    assert state.receive(message("other", 3, mentions=["alice"]), 0) is not None
    assert (state.rooms["other"].unread, state.rooms["other"].mentions) == (1, 1)
    state.connection_lost()
    state.connection_opened(1)
    state.receive(joined("other", 4), 1)
    state.receive(message("other", 4), 1)  # missed while away: unread
    assert state.rooms["other"].unread == 2


class TestChanges:
    """Edits, deletes and reactions (docs/protocol.md §2, *Changes*) take seqs of their own."""

    def change(self, seq: int, kind: str, target: int, **state: Any) -> dict[str, Any]:
        return {"type": "change", "kind": kind, "room": "lobby", "seq": seq, "id": f"x{seq}", "nick": "bob",
                "ts": 1, "target": target, "message": message("lobby", target, **state)}

    def test_a_change_replaces_what_is_held_and_moves_the_cursor(self) -> None:
        state = ChatState("alice")
        state.join("lobby", 0)
        open_in(state, "lobby")
        state.receive(message("lobby", 1, body="helo"), 0)
        state.receive(self.change(2, "edit", 1, body="hello", edited=True), 0)
        state.receive(self.change(3, "react", 1, body="hello", edited=True, reaction_counts={"👍": 2}), 0)
        [held] = state.rooms["lobby"].messages
        assert (held.body, held.edited, held.reactions) == ("hello", True, (("👍", 2),))
        assert state.rooms["lobby"].cursor == 3
        state.receive(self.change(4, "delete", 1, body="", deleted=True), 0)
        assert state.rooms["lobby"].messages[0].deleted
        state.receive(self.change(4, "delete", 1, body="", deleted=True), 0)  # a resume's overlap: once
        assert seqs(state, "lobby") == [1]

    def test_a_room_whose_newest_event_is_a_change_is_ready_at_once(self) -> None:
        """Without this, sends waited READY_TIMEOUT after each join into such a room."""
        state = ChatState("alice")
        state.join("lobby", 0)
        state.connection_lost()
        state.submit("queued", "c1", 0)
        state.connection_opened(0)
        state.frames_to_send()
        state.receive(joined("lobby", 2), 0)
        state.receive(message("lobby", 1), 0)
        state.receive(self.change(2, "react", 1, reaction_counts={"🎉": 1}), 0)
        assert sends(state.frames_to_send()) == [("lobby", "c1")]
