"""A message the server refuses stays where it was in time, says why, and can be
fixed or dropped; a message over the length limit is not sent at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def order(chat: Any) -> list[str]:
    """The message list top to bottom: a seq, or "failed"/"pending"."""
    return chat.page.locator("#messages li").evaluate_all(
        "items => items.map(i => i.dataset.seq ?? (i.classList.contains('failed') ? 'failed' : 'pending'))"
    )


def test_a_refused_message_keeps_its_place_and_is_edited_or_discarded(
    start_server: Any, open_chat: Any, tmp_path: Path
) -> None:
    words = tmp_path / "filter.txt"
    words.write_text("frack reject\n", encoding="utf-8")
    server = start_server(web_args=("--filter-file", str(words)))
    writer, other = open_chat(server, "writer"), open_chat(server, "other")
    for chat in (writer, other):
        chat.join("refusals")
        chat.wait_open()

    writer.send("what the frack")
    failed = writer.page.locator("#messages li.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator("[data-testid=failure]")).to_have_attribute("data-code", "filtered")
    expect(failed).to_contain_text("the message was blocked by a filter")
    expect(failed.locator("button.retry")).to_have_count(0)  # it would be refused again
    composer = writer.page.locator("#composer")
    expect(composer).to_have_value("")

    # Newer messages go below it, not above: it stays where it was in time.
    other.send_confirmed("newer 1")
    other.send_confirmed("newer 2")
    expect(writer.confirmed()).to_have_count(2)
    assert order(writer) == ["failed", "1", "2"]

    # Edit puts the text back into the composer; sending the fixed text works.
    composer.fill("kept draft")
    failed.locator("button.edit").click()
    expect(failed).to_have_count(0)
    expect(composer).to_have_value("what the frack\nkept draft")
    expect(composer).to_be_focused()
    composer.fill("what the heck")
    composer.press("Enter")
    expect(writer.confirmed()).to_have_count(3)

    writer.send("frack again")
    expect(failed).to_have_count(1)
    failed.locator("button.discard").click()
    expect(failed).to_have_count(0)
    assert order(writer) == ["1", "2", "3"]
    # And after a reload of the room nothing of it comes back.
    assert [m["body"] for m in server.api(
        "GET", "/api/rooms/refusals/messages", token=server.api("POST", "/api/session", {"nick": "auditor"})["token"]
    )["messages"]] == ["newer 1", "newer 2", "what the heck"]
    writer.assert_no_errors()


def test_over_the_length_limit_the_counter_says_so_and_nothing_is_sent(server: Any, open_chat: Any) -> None:
    writer = open_chat(server, "counter")
    writer.join("lengths")
    writer.wait_open()
    counter = writer.page.locator("#composer-counter")
    composer = writer.page.locator("#composer")
    composer.fill("x" * 3000)
    expect(counter).to_be_hidden()  # far from the limit (4000)
    composer.fill("x" * 3950)
    expect(counter).to_be_visible()
    expect(counter).to_have_text("50")
    composer.fill("字" * 4010)  # characters, not bytes or UTF-16 units
    expect(counter).to_have_text("-10")
    expect(counter).to_have_class("composer-counter over")
    composer.press("Enter")
    expect(writer.page.locator("#live-region")).to_contain_text("10 characters too long")
    expect(writer.page.locator("#messages li")).to_have_count(0)  # not sent, not shown as failed
    expect(composer).to_have_value("字" * 4010)  # and not lost
    composer.fill("字" * 4000)
    composer.press("Enter")
    expect(writer.confirmed()).to_have_count(1)
    expect(counter).to_be_hidden()
    writer.assert_no_errors()


def test_on_a_touch_screen_enter_is_a_new_line_and_the_button_sends(server: Any, browser: Any) -> None:
    context = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 390, "height": 760})
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        page.fill("#nick-input", "thumbs")
        page.click("#nick-submit")
        page.click("#rooms-toggle")
        page.fill("#join-input", "touch")
        page.press("#join-input", "Enter")
        expect(page.locator("#room-title")).to_have_text("#touch")
        page.keyboard.press("Escape")  # close the drawer
        expect(page.locator("#sidebar")).to_be_hidden()
        composer = page.locator("#composer")
        expect(composer).to_have_attribute("placeholder", "Message #touch")
        composer.click()
        composer.type("first line")
        composer.press("Enter")
        composer.type("second line")
        expect(composer).to_have_value("first line\nsecond line")
        expect(page.locator("#messages li")).to_have_count(0)
        page.click("#send-button")
        expect(page.locator("#messages li[data-seq]")).to_have_count(1)
        expect(composer).to_have_value("")
    finally:
        context.close()
