"""Scrolling back through history, and sends that fail."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SEEDED = 120
PAGE = 50  # what the page shows on join and loads per step


@pytest.fixture
def seeded_server(start_server: Any) -> Any:
    # Seeding writes faster than a person may: lift the per-sender and per-address rate limits.
    return start_server(web_args=("--send-burst", "1000", "--send-burst-per-ip", "1000"))


def test_scrolling_up_loads_older_messages_in_place(seeded_server: Any, open_chat: Any) -> None:
    server = seeded_server
    session = server.api("POST", "/api/session", {"nick": "archivist"})
    for n in range(1, SEEDED + 1):
        server.api("POST", "/api/rooms/archive/messages", {"body": f"old message {n}", "id": f"seed-{n}"},
                   session["token"])
    reader = open_chat(server, "reader", viewport={"width": 1000, "height": 600})
    reader.join("archive")
    reader.wait_open()
    confirmed = reader.confirmed()
    expect(confirmed).to_have_count(PAGE)
    expect(confirmed.last).to_contain_text(f"old message {SEEDED}")
    expect(confirmed.first).to_contain_text(f"old message {SEEDED - PAGE + 1}")

    anchor = reader.page.locator(f"#messages li[data-seq]:has-text('old message {SEEDED - PAGE + 1}')")
    reader.page.locator("#scroller").evaluate("el => { el.scrollTop = 0 }")
    expect(confirmed).to_have_count(2 * PAGE)
    # The message that was at the top is still where it was on screen.
    box = anchor.bounding_box()
    assert box is not None and box["y"] > 0, "view jumped to the top of the older messages"
    assert reader.page.locator("#scroller").evaluate("el => el.scrollTop") > 0

    reader.page.locator("#scroller").evaluate("el => { el.scrollTop = 0 }")
    expect(confirmed).to_have_count(SEEDED)
    expect(reader.page.locator("#history-start")).to_be_visible()
    texts = [t.strip() for t in reader.page.locator("#messages li[data-seq] [data-testid=message-body]").all_inner_texts()]
    assert texts == [f"old message {n}" for n in range(1, SEEDED + 1)]
    reader.assert_no_errors()


LOAD_OLDER_AT_PX = 60  # js/main.js: a scroll that ends this close to the top loads older messages
# Resolves after the next rendering step; a scroll event queued by a change of scrollTop
# is dispatched in that step, before the animation-frame callbacks run.
NEXT_FRAME = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def test_messages_arriving_at_the_bottom_never_load_older_ones_by_themselves(
    seeded_server: Any, open_chat: Any,
) -> None:
    """The race behind the flaky scroll test, made certain.

    While messages arrive at the bottom, the page keeps the view stuck to the bottom
    (``scrollToBottom``). The first message that makes the list overflow its box moves
    ``scrollTop`` from 0 to less than one message's height, which is under the
    "near the top" threshold: the scroll event that this programmatic move fires was
    taken for the reader scrolling up, and a page of history loaded by itself. On join
    the same happens when the backlog arrives over more than one frame.
    """
    server = seeded_server
    session = server.api("POST", "/api/session", {"nick": "seeder"})
    token = session["token"]
    for n in range(1, PAGE + 6):
        server.api("POST", "/api/rooms/bottom/messages", {"body": f"old {n}", "id": f"old-{n}"}, token)
    reader = open_chat(server, "watcher", viewport={"width": 1000, "height": 3000})
    reader.join("bottom")
    reader.wait_open()
    confirmed = reader.confirmed()
    expect(confirmed).to_have_count(PAGE)  # the newest 50 of 55: there is older history
    scroller = reader.page.locator("#scroller")
    assert scroller.evaluate("el => el.scrollHeight <= el.clientHeight"), "the room must start without overflow"

    shown, overflowed_at = PAGE, None
    for n in range(1, 80):
        server.api("POST", "/api/rooms/bottom/messages", {"body": f"live {n}", "id": f"live-{n}"}, token)
        shown += 1
        expect(reader.page.locator(f"#messages li[data-seq]:has-text('live {n}')")).to_have_count(1)
        reader.page.evaluate(NEXT_FRAME)
        # Nothing asked for older messages: none loading, none loaded.
        assert confirmed.count() == shown, f"older messages loaded by themselves after live message {n}"
        assert reader.page.locator("#load-older").is_enabled(), f"older messages loading by themselves after {n}"
        top = scroller.evaluate("el => el.scrollTop")
        if overflowed_at is None and top > 0:
            overflowed_at = n
            assert top < LOAD_OLDER_AT_PX, f"first overflow scrolled to {top} px: this test needs it under the threshold"
        if overflowed_at is not None and n >= overflowed_at + 3:
            break
    assert overflowed_at is not None, "the live messages never made the list overflow"

    # Scrolling up to the top still loads them.
    scroller.evaluate("el => { el.scrollTop = 0 }")
    expect(confirmed).to_have_count(shown + 5)
    expect(reader.page.locator("#history-start")).to_be_visible()
    reader.assert_no_errors()


def test_keyboard_button_loads_older_messages(seeded_server: Any, open_chat: Any) -> None:
    server = seeded_server
    session = server.api("POST", "/api/session", {"nick": "archivist2"})
    for n in range(1, PAGE + 6):
        server.api("POST", "/api/rooms/archive2/messages", {"body": f"msg {n}", "id": f"seed2-{n}"},
                   session["token"])
    reader = open_chat(server, "keyboarder", viewport={"width": 1000, "height": 3000})
    reader.join("archive2")
    expect(reader.confirmed()).to_have_count(PAGE)
    reader.page.locator("#load-older").focus()
    reader.page.keyboard.press("Enter")
    expect(reader.confirmed()).to_have_count(PAGE + 5)
    expect(reader.page.locator("#history-start")).to_be_visible()
    reader.assert_no_errors()
