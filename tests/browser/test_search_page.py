"""Search on the page: the box (`/`, Ctrl+K), highlighted results, the
message in its context, and back to the room — by keyboard, in both languages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=alert(1)> deploy now"


def seed(server: Any) -> None:
    session = server.api("POST", "/api/session", {"nick": "archivist"})
    bodies = [f"filler {n}" for n in range(1, 8)] + ["我们的数据库挂了", EVIL] + [f"after {n}" for n in range(1, 8)]
    for n, body in enumerate(bodies, 1):
        server.api("POST", "/api/rooms/ops/messages", {"body": body, "id": f"seed-{n}"}, session["token"])


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_search_finds_highlights_and_jumps_to_the_message(
    start_server: Any, open_chat: Any, locale: str,
) -> None:
    server = start_server(web_args=("--send-burst", "1000", "--send-burst-per-ip", "1000"))
    seed(server)
    reader = open_chat(server, "reader", locale=locale)
    reader.join("lobby")
    reader.wait_open()
    page = reader.page
    search_input = page.locator("#search-input")

    # `/` from outside a text field focuses the box; Enter searches.
    page.locator("#scroller").focus()
    page.keyboard.press("/")
    expect(search_input).to_be_focused()
    page.keyboard.type("数据库")
    page.keyboard.press("Enter")
    hits = page.locator("#search-results button.search-hit")
    expect(hits).to_have_count(1)
    expect(hits.first.locator("mark")).to_have_text("数据库")
    expect(hits.first).to_contain_text("#ops")

    # A body's markup is text, never markup; only the match is marked.
    page.locator("#composer").focus()
    page.keyboard.press("Control+k")
    expect(search_input).to_be_focused()
    search_input.fill("deploy")
    page.keyboard.press("Enter")
    expect(hits).to_have_count(1)
    expect(hits.first.locator("mark")).to_have_text("deploy")
    expect(hits.first.locator(".search-hit-text")).to_have_text(EVIL)
    assert page.locator("#search-results img").count() == 0

    # ↓ then Enter: the message among the ones around it.
    page.keyboard.press("ArrowDown")
    expect(hits.first).to_be_focused()
    page.keyboard.press("Enter")
    context = page.locator("#search-context-list li")
    expect(context).to_have_count(11)  # five before, the message, five after
    target = page.locator("#search-context-list li[aria-current=true]")
    expect(target).to_contain_text(EVIL)
    expect(target).to_have_attribute("data-seq", "9")
    expect(context.first).to_contain_text("filler 4")
    expect(context.last).to_contain_text("after 5")
    expect(page.locator("#search-open")).to_be_focused()

    # Escape goes back to the results, on the same one.
    page.keyboard.press("Escape")
    expect(page.locator("#search-context")).to_be_hidden()
    expect(hits.first).to_be_focused()

    # Open in room: the room, scrolled to the message.
    page.keyboard.press("Enter")
    expect(page.locator("#search-open")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#search-panel")).to_be_hidden()
    expect(page.locator("#room-title")).to_have_text("#ops")
    found = page.locator('#messages li[data-seq="9"]')
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()

    # Nothing found, and a refused query, are said so.
    page.keyboard.press("/")
    search_input.fill("nowhere-to-be-found")
    page.keyboard.press("Enter")
    expect(page.locator("#search-status")).to_contain_text("nowhere-to-be-found")
    expect(hits).to_have_count(0)
    search_input.fill(" ".join(f"w{n}" for n in range(9)))
    page.keyboard.press("Enter")
    expect(page.locator("#search-status")).to_have_class("status-line error")
    page.keyboard.press("Escape")
    expect(page.locator("#search-panel")).to_be_hidden()
    reader.assert_no_errors()


def test_open_in_room_reaches_a_message_older_than_the_room_shows(start_server: Any, open_chat: Any) -> None:
    server = start_server(web_args=("--send-burst", "1000", "--send-burst-per-ip", "1000"))
    session = server.api("POST", "/api/session", {"nick": "archivist"})
    for n in range(1, 71):  # the join shows the last 50: seq 3 is on an older page
        body = "the needle is here" if n == 3 else f"hay {n}"
        server.api("POST", "/api/rooms/archive/messages", {"body": body, "id": f"seed-{n}"}, session["token"])
    reader = open_chat(server, "reader")
    reader.join("lobby")
    reader.wait_open()
    page = reader.page
    page.keyboard.press("Control+k")
    page.keyboard.type("needle")
    page.keyboard.press("Enter")
    expect(page.locator("#search-results button.search-hit")).to_have_count(1)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#search-context-list li[aria-current=true]")).to_have_attribute("data-seq", "3")
    page.locator("#search-open").click()
    expect(page.locator("#room-title")).to_have_text("#archive")
    found = page.locator('#messages li[data-seq="3"]')
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()
    expect(found).to_have_class(re.compile(r"\bfound\b"))
    reader.assert_no_errors()
