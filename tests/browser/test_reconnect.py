"""The web node dies and comes back while someone keeps typing."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def bodies(chat: Any) -> list[str]:
    return [t.strip() for t in chat.page.locator("#messages li[data-seq] [data-testid=message-body]").all_inner_texts()]


@pytest.mark.parametrize("transport", [None, "longpoll", "sse"])
def test_messages_typed_during_a_restart_are_sent_once(
    start_server: Any, open_chat: Any, transport: str | None
) -> None:
    server = start_server(split=True)
    nina = open_chat(server, "nina", transport=transport)
    omar = open_chat(server, "omar")
    for chat in (nina, omar):
        chat.join("crash")
        chat.wait_open()
    nina.send("before the crash")
    expect(omar.confirmed()).to_have_count(1)

    nina.send("just as it dies")  # may or may not have reached the node: either way, once
    server.kill_web()
    indicator = nina.page.locator("#transport-indicator")
    expect(indicator).not_to_have_attribute("data-state", "open")
    typed = [f"while it is down {n}" for n in range(3)]
    for text in typed:
        nina.send(text)
    queued = nina.page.locator("#messages li.pending", has_text="while it is down")
    expect(queued).to_have_count(len(typed))

    server.start_web()
    nina.send("right after the restart")
    expected = ["before the crash", "just as it dies", *typed, "right after the restart"]
    for chat in (nina, omar):
        expect(chat.confirmed()).to_have_count(len(expected), timeout=30_000)
        expect(chat.page.locator("#messages li.pending")).to_have_count(0)
        assert bodies(chat) == expected

    session = server.api("POST", "/api/session", {"nick": "observer"})
    stored = server.api("GET", "/api/rooms/crash/messages?limit=1000", token=session["token"])
    assert [m["body"] for m in stored["messages"]] == expected
    if transport is None:
        expect(indicator).to_have_attribute("data-transport", "ws")
    nina.assert_no_errors()
    omar.assert_no_errors()
