"""Presence without a clock: every call says which transitions it caused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.presence import MembersPage, PresenceTable

CYRILLIC_ALICE = "\u0430lice"  # а is U+0430 CYRILLIC SMALL LETTER A
FULL_WIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"


def test_first_connection_goes_online_and_last_goes_offline() -> None:
    table = PresenceTable()
    assert table.connect("r", "Alice", "alice") == [("r", "Alice", "online")]
    assert table.connect("r", "Alice", "alice") == []  # a second tab
    assert table.members("r") == ["Alice"]
    assert table.disconnect("r", "alice") == []
    assert table.disconnect("r", "alice") == [("r", "Alice", "offline")]
    assert table.members("r") == []


def test_rooms_are_independent() -> None:
    table = PresenceTable()
    assert table.connect("a", "Bob", "bob") == [("a", "Bob", "online")]
    assert table.connect("b", "Bob", "bob") == [("b", "Bob", "online")]
    assert table.disconnect("a", "bob") == [("a", "Bob", "offline")]
    assert table.members("a") == []
    assert table.members("b") == ["Bob"]


def test_disconnect_without_connect_changes_nothing() -> None:
    table = PresenceTable()
    assert table.disconnect("r", "ghost") == []
    table.connect("r", "Alice", "alice")
    assert table.disconnect("r", "ghost") == []
    assert table.members("r") == ["Alice"]


def test_a_poll_keeps_a_nick_online_for_wait_plus_grace() -> None:
    table = PresenceTable(grace=30.0)
    assert table.poll("r", "Carol", "carol", now=100.0, wait=25.0) == [("r", "Carol", "online")]
    assert table.poll("r", "Carol", "carol", now=110.0, wait=25.0) == []  # extends to 165
    assert table.expire(now=164.9) == []
    assert table.members("r") == ["Carol"]
    assert table.expire(now=165.0) == [("r", "Carol", "offline")]
    assert table.members("r") == []
    assert table.expire(now=1000.0) == []


def test_expiry_of_a_poll_keeps_a_nick_with_a_connection_online() -> None:
    table = PresenceTable(grace=10.0)
    table.poll("r", "Dan", "dan", now=0.0)
    assert table.connect("r", "Dan", "dan") == []  # already online by polling
    assert table.expire(now=10.0) == []
    assert table.members("r") == ["Dan"]
    assert table.disconnect("r", "dan") == [("r", "Dan", "offline")]


def test_disconnect_of_a_nick_that_still_polls_stays_online() -> None:
    table = PresenceTable(grace=10.0)
    table.connect("r", "Eve", "eve")
    assert table.poll("r", "Eve", "eve", now=0.0) == []
    assert table.disconnect("r", "eve") == []
    assert table.expire(now=9.99) == []
    assert table.expire(now=10.0) == [("r", "Eve", "offline")]


def test_expire_handles_many_rooms_and_nicks_at_once() -> None:
    table = PresenceTable(grace=5.0)
    table.poll("a", "X", "x", now=0.0)
    table.poll("a", "Y", "y", now=3.0)
    table.poll("b", "X", "x", now=1.0)
    assert sorted(table.expire(now=6.0)) == [("a", "X", "offline"), ("b", "X", "offline")]
    assert table.members("a") == ["Y"]
    assert table.expire(now=8.0) == [("a", "Y", "offline")]


def test_nicks_are_one_user_across_spellings_and_shown_as_last_written() -> None:
    table = PresenceTable()
    assert table.connect("r", "Alice", "alice") == [("r", "Alice", "online")]
    assert table.connect("r", "ALICE", "alice") == []
    assert table.members("r") == ["ALICE"]
    table.disconnect("r", "alice")
    assert table.disconnect("r", "alice") == [("r", "ALICE", "offline")]


def test_members_are_sorted_without_regard_to_case() -> None:
    table = PresenceTable()
    for nick in ["bob", "Alice", "carol", "Bert"]:
        table.connect("r", nick, nick.casefold())
    table.poll("r", "aaron", "aaron", now=0.0)
    assert table.members("r") == ["aaron", "Alice", "Bert", "bob", "carol"]


def test_presence_finds_online_lookalikes_but_not_the_user_itself() -> None:
    table = PresenceTable()
    table.connect("r", "alice", "alice")
    assert table.online("alice") == "alice"
    assert table.lookalike(CYRILLIC_ALICE, besides=CYRILLIC_ALICE) == "alice"
    assert table.lookalike(FULL_WIDTH_ALICE, besides=FULL_WIDTH_ALICE.casefold()) == "alice"
    assert table.lookalike("Alice", besides="alice") is None
    table.connect("s", "alice", "alice")
    table.disconnect("r", "alice")
    assert table.online("alice") == "alice"  # still in room s
    table.disconnect("s", "alice")
    assert table.online("alice") is None
    assert table.lookalike(CYRILLIC_ALICE, besides=CYRILLIC_ALICE) is None


def test_a_poller_is_online_until_its_grace_runs_out() -> None:
    table = PresenceTable(grace=30)
    table.poll("r", "bob", "bob", now=0, wait=10)
    assert table.lookalike("b0b", besides="b0b") == "bob"
    table.expire(now=41)
    assert table.online("bob") is None and table.lookalike("b0b", besides="b0b") is None


def test_a_page_starts_after_its_cursor_and_says_where_the_next_begins() -> None:
    table = PresenceTable()
    for nick in ["dora", "Bob", "carl", "ALICE", "eve"]:
        table.connect("r", nick, nick.casefold())
    first = table.page("r", limit=2)
    assert (first.count, first.nicks, first.next) == (5, ["ALICE", "Bob"], "bob")
    second = table.page("r", after=first.next, limit=2)
    assert (second.nicks, second.next) == (["carl", "dora"], "dora")
    last = table.page("r", after=second.next, limit=2)
    assert (last.nicks, last.next) == (["eve"], None)
    assert table.page("r", after="eve", limit=2).nicks == []
    assert table.page("empty", limit=10) == MembersPage(0, [], None)


def test_paging_while_members_come_and_go_lists_those_present_throughout_once() -> None:
    table = PresenceTable()
    for i in range(250):
        table.connect("r", f"u{i:03d}", f"u{i:03d}")
    seen: list[str] = []
    cursor = None
    while True:
        page = table.page("r", after=cursor, limit=40)
        seen += page.nicks
        # Churn between pages: one leaves, one comes, on both sides of the cursor.
        n = len(seen)
        table.disconnect("r", f"u{n % 250:03d}")
        table.connect("r", f"x{n}", f"x{n}")
        table.connect("r", f"a{n}", f"a{n}")
        if page.next is None:
            break
        cursor = page.next
    assert len(seen) == len(set(seen))  # nobody twice
    stayed = {f"u{i:03d}" for i in range(250)} & set(table.members("r"))
    assert stayed <= set(seen)  # nobody who stayed is skipped


def test_count_follows_connections_and_polls() -> None:
    table = PresenceTable(grace=1.0)
    table.connect("r", "a", "a")
    table.connect("r", "a", "a")
    table.poll("r", "b", "b", now=0.0)
    assert table.count("r") == 2
    table.disconnect("r", "a")
    assert table.count("r") == 2
    table.disconnect("r", "a")
    table.expire(now=5.0)
    assert table.count("r") == 0 and table.members("r") == []



@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["connect", "disconnect", "poll", "expire"]),
    st.sampled_from(["a", "b"]),  # rooms
    st.sampled_from(["ann", "Ann", "bob", "cy", "Dee", "dee", "eve", "fox"]),
    st.floats(min_value=0, max_value=100),
), max_size=60))
def test_the_first_page_is_always_what_the_members_say(operations: list[tuple[str, str, str, float]]) -> None:
    """The first page is kept between joins; whatever happens, it is the room's first members."""
    table = PresenceTable(grace=5.0)
    now = 0.0
    for operation, room, nick, step in operations:
        now += step / 10
        if operation == "connect":
            table.connect(room, nick, nick.casefold())
        elif operation == "disconnect":
            table.disconnect(room, nick.casefold())
        elif operation == "poll":
            table.poll(room, nick, nick.casefold(), now=now)
        else:
            table.expire(now=now)
        for each in ("a", "b"):
            everyone = table.members(each)
            page = table.page(each, limit=3)
            expected_next = everyone[2].casefold() if len(everyone) > 3 else None
            assert (page.count, page.nicks, page.next) == (len(everyone), everyone[:3], expected_next)
