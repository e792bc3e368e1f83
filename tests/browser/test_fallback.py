"""The page falls back from WebSocket by itself, and upgrades back when it can."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

FALLBACK_DEADLINE_MS = 5000  # the "falls back by itself within 5 s"


def bodies(chat: Any) -> list[str]:
    return [t.strip() for t in chat.page.locator("#messages li[data-seq] [data-testid=message-body]").all_inner_texts()]


def test_falls_back_within_5_seconds_and_chats(start_server: Any, open_chat: Any) -> None:
    no_websocket_server = start_server(web_args=("--no-websocket",))
    started = time.monotonic()
    judy = open_chat(no_websocket_server, "judy")
    judy.join("fallback")
    indicator = judy.page.locator("#transport-indicator")
    expect(indicator).to_have_attribute("data-state", "open", timeout=FALLBACK_DEADLINE_MS)
    assert time.monotonic() - started < FALLBACK_DEADLINE_MS / 1000 + 2  # page load and sign-in included
    assert indicator.get_attribute("data-transport") in {"sse", "longpoll"}
    expect(indicator).to_contain_text("(fallback)")
    expect(judy.page.locator("#live-region")).to_contain_text("WebSocket is unavailable")

    kim = open_chat(no_websocket_server, "kim", transport="longpoll")
    kim.join("fallback")
    kim.wait_open()
    expect(judy.page.locator('#members li[data-nick="kim"]')).to_have_count(1)
    judy.send_confirmed("can you hear me?")
    kim.send_confirmed("loud and clear")
    judy.send_confirmed("@kim great")
    for chat in (judy, kim):
        expect(chat.confirmed()).to_have_count(3)
        expect(chat.page.locator("#messages li.pending")).to_have_count(0)
    assert bodies(judy) == bodies(kim) == ["can you hear me?", "loud and clear", "@kim great"]
    expect(kim.page.locator("#messages li.mention-me")).to_have_count(1)
    judy.assert_no_errors()
    kim.assert_no_errors()


def test_upgrades_back_to_websocket_without_gap_or_duplicate(start_server: Any, open_chat: Any) -> None:
    server = start_server(web_args=("--no-websocket",), split=True)
    leo = open_chat(server, "leo")
    leo.join("upgrade")
    indicator = leo.page.locator("#transport-indicator")
    expect(indicator).to_have_attribute("data-state", "open", timeout=FALLBACK_DEADLINE_MS)
    assert indicator.get_attribute("data-transport") != "ws"
    leo.send("on the fallback")
    expect(leo.confirmed()).to_have_count(1)

    # The same web node, now accepting WebSocket: the page's background probe finds it.
    server.kill_web()
    server.web_args = ()
    server.start_web()
    session = server.api("POST", "/api/session", {"nick": "mia"})
    sent = ["on the fallback"]
    deadline = time.monotonic() + 60
    n = 0
    while indicator.get_attribute("data-transport") != "ws" or indicator.get_attribute("data-state") != "open":
        assert time.monotonic() < deadline, "never upgraded to WebSocket"
        n += 1
        text = f"while upgrading {n}"
        server.api("POST", "/api/rooms/upgrade/messages", {"body": text, "id": f"mia-{n}"}, session["token"])
        sent.append(text)
        leo.page.wait_for_timeout(250)  # pacing the other person's messages, not a wait for state
    expect(leo.page.locator("#live-region")).to_contain_text("Switched back to WebSocket")
    for extra in ("after the upgrade 1", "after the upgrade 2"):
        server.api("POST", "/api/rooms/upgrade/messages", {"body": extra, "id": extra.replace(" ", "-")}, session["token"])
        sent.append(extra)
    leo.send("mine on websocket")
    sent.append("mine on websocket")
    expect(leo.confirmed()).to_have_count(len(sent))
    assert sorted(bodies(leo)) == sorted(sent)
    stored = server.api("GET", "/api/rooms/upgrade/messages?limit=1000", token=session["token"])
    assert bodies(leo) == [m["body"] for m in stored["messages"]]
    leo.assert_no_errors()
