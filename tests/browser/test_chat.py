"""Two people chatting through real Chromium pages, over WebSocket and long-polling."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def texts(locator: Any) -> list[str]:
    return [text.strip() for text in locator.all_inner_texts()]


def bodies(chat: Any) -> list[str]:
    return texts(chat.page.locator("#messages li[data-seq] [data-testid=message-body]"))


def seqs(chat: Any) -> list[int]:
    return [int(seq) for seq in chat.page.locator("#messages li[data-seq]").evaluate_all(
        "items => items.map(item => item.dataset.seq)"
    )]


def test_two_users_see_the_same_messages_in_order(server: Any, open_chat: Any) -> None:
    alice = open_chat(server, "alice")
    bob = open_chat(server, "小明")  # a CJK nick
    for chat in (alice, bob):
        chat.join("lobby")
        chat.wait_open()
    expect(alice.page.locator("#transport-indicator")).to_have_attribute("data-transport", "ws")
    expect(alice.page.locator('#members li[data-nick="小明"]')).to_have_count(1)

    script = [
        (alice, "hello there"),
        (bob, "你好，世界"),
        (alice, "line one\nline two"),
        (bob, "@alice look at this"),
        (alice, "ok"),
    ]
    for chat, text in script:
        chat.send_confirmed(text)  # so that the order of the room is the order of the script
    for chat in (alice, bob):
        expect(chat.confirmed()).to_have_count(len(script))
        expect(chat.page.locator("#messages li.pending")).to_have_count(0)

    assert bodies(alice) == bodies(bob)
    assert seqs(alice) == seqs(bob) == sorted(seqs(alice))
    assert bodies(alice)[1] == "你好，世界"
    assert "line one\nline two" in bodies(alice)
    assert texts(alice.page.locator("#messages li[data-seq] [data-testid=message-nick]")) == [
        "alice", "小明", "alice", "小明", "alice",
    ]

    mention = alice.page.locator("#messages li.mention-me")
    expect(mention).to_have_count(1)
    expect(mention.locator("[data-testid=message-body]")).to_contain_text("look at this")
    expect(bob.page.locator("#messages li.mention-me")).to_have_count(0)
    for chat in (alice, bob):
        chat.assert_no_errors()


def test_mention_in_another_room_counts_as_unread_and_in_the_title(server: Any, open_chat: Any) -> None:
    carol = open_chat(server, "carol")
    dave = open_chat(server, "dave")
    carol.join("side")
    carol.join("main")  # carol now looks at #main
    dave.join("side")
    carol.wait_open()
    dave.wait_open()
    expect(carol.page.locator('#room-list li[data-room="side"]')).to_have_count(1)

    dave.send("hi @carol")
    dave.send("second")
    badge = carol.page.locator('#room-list li[data-room="side"] [data-testid=unread-badge]')
    expect(badge).to_have_text("2")
    expect(badge).to_have_class("unread-badge has-mentions")
    expect(carol.page).to_have_title("(1) Squall")
    icon = carol.page.locator("link#favicon")
    expect(icon).to_have_attribute("data-count", "1")
    expect(icon).to_have_attribute("href", re.compile(r"^data:image/svg\+xml,.*%3Ctext"))  # the badge drawn in

    carol.page.click('#room-list li[data-room="side"] .room-button')
    expect(badge).to_be_hidden()
    expect(carol.page).to_have_title("Squall")
    expect(icon).to_have_attribute("href", re.compile(r"/static/favicon\.svg"))
    expect(carol.page.locator("#messages li.mention-me")).to_have_count(1)
    carol.assert_no_errors()


def test_long_poll_and_websocket_users_see_the_same_sequence(server: Any, open_chat: Any) -> None:
    erin = open_chat(server, "erin", transport="longpoll")
    frank = open_chat(server, "frank")
    for chat in (erin, frank):
        chat.join("mixed")
        chat.wait_open()
    expect(erin.page.locator("#transport-indicator")).to_have_attribute("data-transport", "longpoll")
    expect(frank.page.locator("#transport-indicator")).to_have_attribute("data-transport", "ws")

    sent = []
    for n in range(6):
        for chat in (erin, frank):
            text = f"{chat.nick} {n}"
            chat.send(text)
            sent.append(text)
    for chat in (erin, frank):
        expect(chat.confirmed()).to_have_count(len(sent))
        expect(chat.page.locator("#messages li.pending")).to_have_count(0)
    assert bodies(erin) == bodies(frank)
    assert seqs(erin) == seqs(frank) == sorted(seqs(erin))
    assert sorted(bodies(erin)) == sorted(sent)
    # Each person's own messages keep the order they were written in.
    for chat in (erin, frank):
        own = [text for text in bodies(erin) if text.startswith(chat.nick)]
        assert own == [text for text in sent if text.startswith(chat.nick)]
    erin.assert_no_errors()
    frank.assert_no_errors()


def test_sse_user_receives_messages(server: Any, open_chat: Any) -> None:
    grace = open_chat(server, "grace", transport="sse")
    heidi = open_chat(server, "heidi")
    for chat in (grace, heidi):
        chat.join("streams")
        chat.wait_open()
    expect(grace.page.locator("#transport-indicator")).to_have_attribute("data-transport", "sse")
    heidi.send("over the socket")
    grace.send("over http")
    for chat in (grace, heidi):
        expect(chat.confirmed()).to_have_count(2)
    assert bodies(grace) == bodies(heidi)
    grace.assert_no_errors()


def test_enter_while_composing_does_not_send(server: Any, open_chat: Any) -> None:
    ivan = open_chat(server, "ivan")
    ivan.join("ime")
    ivan.wait_open()
    composer = ivan.page.locator("#composer")
    composer.fill("ni")
    # What an IME does when Enter picks a candidate: the keydown comes while composing.
    composer.dispatch_event("compositionstart")
    composer.evaluate(
        "el => el.dispatchEvent(new KeyboardEvent('keydown', "
        "{key: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true}))"
    )
    composer.fill("你")
    composer.dispatch_event("compositionend")
    expect(ivan.page.locator("#messages li")).to_have_count(0)
    expect(composer).to_have_value("你")

    ivan.page.press("#composer", "Shift+Enter")
    ivan.page.keyboard.type("好")
    expect(composer).to_have_value("你\n好")
    ivan.page.press("#composer", "Enter")
    expect(ivan.confirmed()).to_have_count(1)
    assert bodies(ivan) == ["你\n好"]
    ivan.assert_no_errors()
