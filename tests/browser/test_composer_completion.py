"""@-completion of nicks (and @room) and :emoji: shortcodes in the composer, by keyboard."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_nicks_and_emoji_complete_from_the_keyboard(server: Any, open_chat: Any) -> None:
    writer, rosa, robin = open_chat(server, "writer3"), open_chat(server, "rosa"), open_chat(server, "robin")
    for chat in (writer, rosa, robin):
        chat.join("completion")
        chat.wait_open()
    expect(writer.page.locator("#members li")).to_have_count(3)
    page = writer.page
    composer = page.locator("#composer")
    suggestions = page.locator("#suggestions [data-testid=suggestion]")

    composer.click()
    page.keyboard.type("hi @ro")
    expect(suggestions).to_have_text(["@robin", "@rosa", "@room"])  # people first, then the room
    expect(composer).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowUp")  # wraps to the last
    expect(suggestions.nth(2)).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowUp")
    expect(suggestions.nth(1)).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")  # picks, does not send
    expect(composer).to_have_value("hi @rosa ")
    expect(page.locator("#suggestions")).to_be_hidden()
    expect(page.locator("#messages li")).to_have_count(0)

    page.keyboard.type("look :tad")
    expect(suggestions).to_have_text(["🎉 :tada:"])
    page.keyboard.press("Tab")
    expect(composer).to_have_value("hi @rosa look 🎉 ")
    page.keyboard.type("@wri")  # yourself is not offered
    expect(page.locator("#suggestions")).to_be_hidden()
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("@r")
    expect(suggestions).to_have_count(3)
    page.keyboard.press("Escape")
    expect(page.locator("#suggestions")).to_be_hidden()
    expect(composer).to_have_value("hi @rosa look 🎉 @r")
    page.keyboard.press("Enter")  # list closed: Enter sends
    expect(writer.confirmed()).to_have_count(1)
    composer.fill("thanks @robin")  # typed out in full: no list, Enter sends
    expect(page.locator("#suggestions")).to_be_hidden()
    page.keyboard.press("Enter")
    expect(writer.confirmed()).to_have_count(2)
    expect(rosa.page.locator("#messages li.mention-me")).to_have_count(1)
    writer.assert_no_errors()
