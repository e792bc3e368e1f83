"""Rooms on the page: the default room on first sign-in, an empty room that says
what to do, the room browser (search, create, private), direct messages named
by the other person, a refusal shown in words; by keyboard, in both languages."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


def create_account(chat: Any, nick: str) -> None:
    page = chat.page
    page.check("#mode-create")
    page.fill("#nick-input", nick)
    page.fill("#password-input", PASSWORD)
    page.press("#password-input", "Enter")
    expect(page.locator("#app")).to_be_visible()
    chat.nick = nick


def test_rooms_browser_default_room_and_direct_messages(server: Any, open_page: Any) -> None:
    alice = open_page(server)
    page = alice.page
    create_account(alice, "rhea")
    # First sign-in: the default room, not an empty pane; the empty room says what to do.
    expect(page.locator("#room-title")).to_have_text("#lobby")
    expect(page.locator('#room-list li[data-room="lobby"]')).to_have_count(1)
    alice.wait_open()

    # The room browser, by keyboard: create a room with a topic.
    page.focus("#browse-button")
    page.keyboard.press("Enter")
    expect(page.locator("#room-browser")).to_be_visible()
    expect(page.locator("#room-search")).to_be_focused()
    page.fill("#create-name", "garden")
    page.fill("#create-topic", "plants and soil")
    page.press("#create-topic", "Enter")
    expect(page.locator("#room-browser")).to_be_hidden()
    expect(page.locator("#room-title")).to_have_text("#garden")
    expect(page.locator("#room-empty")).to_have_text(
        "No messages in #garden yet. Say hello below, or use “Browse rooms” to find other rooms.")
    expect(page.locator("#room-empty")).to_be_visible()
    alice.send_confirmed("first!")
    expect(page.locator("#room-empty")).to_be_hidden()

    # Search finds it, with its topic; a name taken is refused in words.
    page.click("#browse-button")
    page.fill("#room-search", "gard")
    found = page.locator("[data-testid=directory-room]")
    expect(found).to_have_count(1)
    expect(found.first).to_contain_text("#garden")
    expect(found.first).to_contain_text("plants and soil")
    expect(found.first).to_contain_text("1 members")
    page.fill("#create-name", "garden")
    page.press("#create-name", "Enter")
    expect(page.locator("#create-error")).to_have_text(
        "A room with that name exists already: join it, or pick another name.")
    page.keyboard.press("Escape")
    expect(page.locator("#room-browser")).to_be_hidden()

    # A private room, made with the checkbox, is not in anyone's directory.
    page.click("#browse-button")
    page.fill("#create-name", "hideout")
    page.check("#create-private")
    page.click("#create-submit")
    expect(page.locator("#room-title")).to_have_text("#hideout")
    page.click("#browse-button")
    page.fill("#room-search", "hideout")
    expect(page.locator("#directory-status")).to_have_text("No rooms match.")
    page.click("#browser-close")

    # A direct message, named by the other person, in its own list.
    server.api("POST", "/api/account", {"nick": "Silas", "password": PASSWORD})
    page.fill("#dm-input", "silas")
    page.press("#dm-input", "Enter")
    expect(page.locator("[data-testid=dm]")).to_have_text(["Silas"])
    expect(page.locator("#room-title")).to_have_text("Silas")
    alice.send_confirmed("hi Silas")
    page.fill("#dm-input", "nobody-here")
    page.press("#dm-input", "Enter")
    expect(page.locator("#dm-error")).to_contain_text("nobody-here")

    # Someone else is refused the private room, and told why; the room leaves their list.
    bob = open_page(server)
    create_account(bob, "tarn")
    expect(bob.page.locator("#room-title")).to_have_text("#lobby")
    bob.page.fill("#join-input", "hideout")
    bob.page.press("#join-input", "Enter")
    expect(bob.page.locator("#live-region")).to_contain_text(
        "You left #hideout: you are not a member of this room")
    expect(bob.page.locator('#room-list li[data-room="hideout"]')).to_have_count(0)

    # The same page in Chinese.
    page.select_option("#lang-select", "zh-CN")
    expect(page.locator("#browse-button")).to_have_text("浏览聊天室")
    expect(page.locator("#dm-heading")).to_have_text("私信")
    page.click('#room-list li[data-room="lobby"] .room-button')
    expect(page.locator("#room-empty")).to_contain_text("#lobby 里还没有消息")
    alice.assert_no_errors()
    bob.assert_no_errors()


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_reading_on_one_device_clears_the_unread_count_on_another(
    server: Any, open_page: Any, transport: str
) -> None:
    nick = f"uma-{transport}"
    phone = open_page(server, transport=transport)
    create_account(phone, nick)
    phone.wait_open()
    laptop = open_page(server, transport=transport)
    laptop.page.check("#mode-signin")
    laptop.page.fill("#nick-input", nick)
    laptop.page.fill("#password-input", PASSWORD)
    laptop.page.press("#password-input", "Enter")
    expect(laptop.page.locator("#room-title")).to_have_text("#lobby")
    laptop.wait_open()
    # Both look at another room while a message comes to the lobby: both count it.
    laptop.join(f"elsewhere-{transport}")
    phone.join(f"elsewhere-{transport}")
    writer = server.api("POST", "/api/session", {"nick": f"vic-{transport}"})["token"]
    server.api("POST", "/api/rooms/lobby/messages", {"id": f"r-{transport}", "body": "news"}, token=writer)
    lobby = '#room-list li[data-room="lobby"] [data-testid=unread-badge]'
    expect(phone.page.locator(lobby)).to_have_text("1")
    expect(laptop.page.locator(lobby)).to_have_text("1")
    # Read on the phone: the laptop's count clears, with no click there.
    phone.page.click('#room-list li[data-room="lobby"] .room-button')
    expect(phone.page.locator("#messages li[data-seq]").last).to_contain_text("news")
    expect(laptop.page.locator(lobby)).to_be_hidden()
    phone.assert_no_errors()
    laptop.assert_no_errors()
