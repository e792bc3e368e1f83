"""Where you left off: a "New messages" divider, and a "Jump to newest" button with
a count while you read further up; the view never moves by itself while you read."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_a_room_opens_at_the_new_messages_divider(server: Any, open_chat: Any) -> None:
    reader, writer = open_chat(server, "reader1"), open_chat(server, "writer1")
    reader.join("elsewhere")
    reader.join("busy")
    writer.join("busy")
    for chat in (reader, writer):
        chat.wait_open()
    writer.send_confirmed("already read")
    expect(reader.confirmed()).to_have_count(1)
    reader.page.click('#room-list li[data-room="elsewhere"] .room-button')
    expect(reader.page.locator("#room-title")).to_have_text("#elsewhere")
    for n in range(1, 4):
        writer.send_confirmed(f"unread {n}")
    badge = reader.page.locator('#room-list li[data-room="busy"] [data-testid=unread-badge]')
    expect(badge).to_have_text("3")

    reader.page.click('#room-list li[data-room="busy"] .room-button')
    divider = reader.page.locator("#messages [data-testid=unread-divider]")
    expect(divider).to_have_count(1)
    expect(divider).to_have_text("New messages")
    first_unread = reader.page.locator("#messages li.first-unread")
    expect(first_unread.locator("[data-testid=message-body]")).to_have_text("unread 1")
    expect(divider).to_be_in_viewport()
    # Away and back with nothing new: no divider.
    reader.page.click('#room-list li[data-room="elsewhere"] .room-button')
    reader.page.click('#room-list li[data-room="busy"] .room-button')
    expect(reader.page.locator("#messages li")).to_have_count(4)
    expect(divider).to_have_count(0)
    reader.assert_no_errors()


def test_scrolled_up_the_view_stays_and_a_button_counts_what_arrives(server: Any, open_chat: Any) -> None:
    reader, writer = open_chat(server, "reader2"), open_chat(server, "writer2")
    for chat in (reader, writer):
        chat.join("scrollback")
        chat.wait_open()
    for n in range(80):
        writer.send(f"filler {n}")
    expect(writer.confirmed()).to_have_count(80)
    expect(reader.confirmed()).to_have_count(80)
    jump = reader.page.locator("#jump-newest")
    expect(jump).to_be_hidden()

    scroller = reader.page.locator("#scroller")
    scroller.evaluate("s => { s.scrollTop = 0 }")  # the room's whole history is here: nothing to load
    expect(jump).to_be_visible()  # far from the newest
    expect(jump).to_have_attribute("data-count", "0")
    top = scroller.evaluate("s => s.scrollTop")
    for n in range(3):
        writer.send_confirmed(f"while reading {n}")
    expect(reader.confirmed()).to_have_count(83)
    expect(jump).to_have_attribute("data-count", "3")
    expect(jump).to_have_text("3 new ↓")
    assert scroller.evaluate("s => s.scrollTop") == top  # nothing moved under the reader

    jump.click()
    expect(jump).to_be_hidden()
    assert scroller.evaluate("s => s.scrollHeight - s.scrollTop - s.clientHeight") < 80
    writer.send_confirmed("at the bottom again")
    expect(reader.confirmed()).to_have_count(84)
    expect(jump).to_be_hidden()  # followed, not counted
    reader.assert_no_errors()
