"""Edits, deletes, reactions and replies in real Chromium pages (issue 12,
items 3-5): one person over WebSocket, one over long-polling or SSE (that page
in Chinese), each seeing the other's changes live; keyboard only where a
person would use the keyboard (Up-arrow edit, Escape, the emoji picker)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def item(chat: Any, text: str) -> Any:
    """The confirmed message whose own body (not a quote of it) holds ``text``."""
    body = chat.page.locator("[data-testid=message-body]", has_text=text)
    return chat.page.locator("#messages li[data-seq]").filter(has=body)


@pytest.mark.parametrize("transport", ["longpoll", "sse"])
def test_edit_delete_react_and_reply(server: Any, open_chat: Any, transport: str) -> None:
    alice = open_chat(server, f"alice-{transport}")
    bob = open_chat(server, f"bob-{transport}", transport=transport, locale="zh-CN")
    for chat in (alice, bob):
        chat.join(f"events-{transport}")
        chat.wait_open()
    alice.send_confirmed("teh first message")
    alice.send_confirmed("second one")
    expect(bob.confirmed()).to_have_count(2)

    # Up in the empty composer edits the last own message; Escape cancels; Up again, then save.
    composer = alice.page.locator("#composer")
    composer.focus()
    composer.press("ArrowUp")
    expect(alice.page.locator("#composer-context")).to_be_visible()
    expect(composer).to_have_value("second one")
    composer.press("Escape")
    expect(alice.page.locator("#composer-context")).to_be_hidden()
    composer.fill("")
    # The first message, through its Edit button.
    first = item(alice, "teh first message")
    first.hover()
    first.locator("[data-testid=edit-button]").click()
    expect(composer).to_have_value("teh first message")
    composer.fill("the first message")
    composer.press("Enter")
    for chat in (alice, bob):
        edited = item(chat, "the first message")
        expect(edited.locator("[data-testid=edited]")).to_be_visible()
    expect(item(bob, "the first message").locator("[data-testid=edited]")).to_have_text("（已编辑）")

    # Bob reacts through the picker, with the keyboard; alice sees the chip and adds hers.
    target = item(bob, "the first message")
    target.hover()
    target.locator("[data-testid=react-add]").click()
    picker = target.locator("[data-testid=picker]")
    expect(picker).to_be_visible()
    expect(picker.locator("button").first).to_be_focused()
    bob.page.keyboard.press("Enter")  # the first emoji, 👍
    chip = item(alice, "the first message").locator("[data-testid=reaction]")
    expect(chip).to_have_count(1)
    expect(chip).to_contain_text("👍1")
    expect(chip).to_have_attribute("aria-pressed", "false")
    chip.click()
    for chat in (alice, bob):
        expect(item(chat, "the first message").locator("[data-testid=reaction]")).to_contain_text("👍2")
    expect(chip).to_have_attribute("aria-pressed", "true")
    chip.click()  # toggles hers off again
    expect(item(bob, "the first message").locator("[data-testid=reaction]")).to_contain_text("👍1")

    # Bob replies to the edited message; both see the quote, which jumps to the original.
    target.hover()
    target.locator("[data-testid=reply-button]").click()
    expect(bob.page.locator("#composer-context")).to_contain_text(f"alice-{transport}")
    bob.page.locator("#composer").fill("agreed")
    bob.page.locator("#composer").press("Enter")
    for chat in (alice, bob):
        quote = item(chat, "agreed").locator("[data-testid=reply-quote]")
        expect(quote).to_contain_text("the first message")
    item(alice, "agreed").locator("[data-testid=reply-quote]").click()
    expect(item(alice, "the first message")).to_be_focused()

    # Alice deletes the original: a tombstone for both, and the quote goes with it.
    original = item(alice, "the first message")
    original.hover()
    original.locator("[data-testid=delete-button]").click()
    for chat in (alice, bob):
        expect(chat.page.locator("#messages li.deleted")).to_have_count(1)
        expect(item(chat, "agreed").locator("[data-testid=reply-quote]")).not_to_contain_text("the first message")
    expect(alice.page.locator("#messages li.deleted")).to_contain_text("This message was deleted.")
    expect(bob.page.locator("#messages li.deleted")).to_contain_text("此消息已被删除。")
    for chat in (alice, bob):
        chat.assert_no_errors()

    # A reload reads history: the page shows the current state, no change rows as messages.
    alice.page.reload()
    alice.wait_open()
    expect(alice.confirmed()).to_have_count(3)
    expect(alice.page.locator("#messages li.deleted")).to_have_count(1)
    expect(item(alice, "agreed").locator("[data-testid=reply-quote]")).to_be_visible()
    alice.assert_no_errors()
