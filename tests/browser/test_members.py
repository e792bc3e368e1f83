"""The members panel: "N online", a first page, "Show more", and live presence and typing."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOM = "crowd"
OTHERS = ["bea", "cal", "dan", "eve"]  # online by long-polling; "ann" opens the page


def online_by_polling(server: Any, nick: str) -> str:
    """A session for ``nick``, online in the room for poll_grace (30 s) after one poll."""
    token = server.api("POST", "/api/session", {"nick": nick})["token"]
    server.api("GET", f"/api/rooms/{ROOM}/messages?since=0&wait=0", token=token)
    return str(token)


def names(chat: Any) -> list[str]:
    return chat.page.locator("#members li").evaluate_all("items => items.map(item => item.dataset.nick)")


@pytest.mark.parametrize("transport", [None, "sse", "longpoll"])
def test_the_panel_counts_everyone_and_pages_through_them(
    start_server: Any, open_chat: Any, transport: str | None
) -> None:
    server = start_server(web_args=("--members-page", "2"))
    for nick in OTHERS:
        online_by_polling(server, nick)
    ann = open_chat(server, "ann", transport=transport)
    ann.join(ROOM)
    ann.wait_open()
    items = ann.page.locator("#members li")
    more = ann.page.locator("#members-more")
    # Long-polling learns the count from /members, every 10 s; the others at once.
    expect(ann.page.locator("#members-count")).to_have_text("5 online", timeout=25_000)
    expect(more).to_be_visible()
    assert items.count() < 5  # a first page of 2 (and ann, who may not be on it yet)
    for _ in range(len(OTHERS)):
        if more.is_hidden():
            break
        shown = items.count()
        more.click()
        expect(items).not_to_have_count(shown)
    expect(more).to_be_hidden()
    assert names(ann) == ["ann", "bea", "cal", "dan", "eve"]
    ann.assert_no_errors()


@pytest.mark.parametrize("transport", [None, "sse"])
def test_presence_and_typing_arrive_batched(start_server: Any, open_chat: Any, transport: str | None) -> None:
    server = start_server()
    ann = open_chat(server, "ann", transport=transport)
    ann.join(ROOM)
    ann.wait_open()
    expect(ann.page.locator("#members-count")).to_have_text("1 online")
    tokens = [online_by_polling(server, nick) for nick in OTHERS]
    expect(ann.page.locator("#members-count")).to_have_text("5 online")
    expect(ann.page.locator("#members li")).to_have_count(5)
    server.api("POST", f"/api/rooms/{ROOM}/typing", token=tokens[0])
    expect(ann.page.locator("#typing")).to_have_text("bea is typing…")
    ann.assert_no_errors()
