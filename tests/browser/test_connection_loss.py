"""Losing the connection is plain to see, and what was typed meanwhile is sent once.

Two ways a network goes: the browser says so (``offline``), or the path dies
without a word (a half-open socket: here a web node stopped with SIGSTOP, whose
kernel keeps the TCP connection up while nothing answers). The page used to
show a green "WebSocket" pill for 45 s in the second case.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

# The heartbeat's worst case is PING_AFTER_MS + PONG_DEADLINE_MS + HEARTBEAT_CHECK_MS
# (transport.js: 8 + 4 + 2 s); the old silence limit was 45 s.
HEARTBEAT_WORST_MS = 14_000


def test_going_offline_shows_a_banner_that_counts_the_queued_messages(start_server: Any, open_chat: Any) -> None:
    server = start_server()
    pia = open_chat(server, "pia")
    pia.join("offline")
    pia.wait_open()
    pia.send_confirmed("before")
    banner = pia.page.locator("#connection-banner")
    expect(banner).to_be_hidden()

    pia.page.context.set_offline(True)
    expect(banner).to_be_visible(timeout=3000)  # the `offline` event, not a time-out
    expect(pia.page.locator("#transport-indicator")).not_to_have_attribute("data-state", "open")
    pia.send("written offline 1")
    pia.send("written offline 2")
    expect(banner).to_have_attribute("data-queued", "2")
    expect(pia.page.locator("#connection-banner-text")).to_contain_text("2")

    pia.page.context.set_offline(False)
    expect(banner).to_be_hidden(timeout=10_000)
    expect(pia.confirmed()).to_have_count(3)
    expect(pia.page.locator("#messages li.pending")).to_have_count(0)
    assert pia.bodies() == ["before", "written offline 1", "written offline 2"]
    pia.assert_no_errors()


def test_a_silent_dead_connection_is_noticed_by_the_heartbeat(start_server: Any, open_chat: Any) -> None:
    server = start_server(split=True)
    raj = open_chat(server, "raj")
    raj.join("silent")
    raj.wait_open()
    raj.send_confirmed("before")
    banner = raj.page.locator("#connection-banner")

    server.pause_web()
    try:
        expect(banner).to_be_visible(timeout=HEARTBEAT_WORST_MS + 4000)
        raj.send("written while it hangs")
        expect(banner).to_have_attribute("data-queued", "1")
    finally:
        server.resume_web()
    expect(banner).to_be_hidden(timeout=30_000)
    expect(raj.confirmed()).to_have_count(2, timeout=30_000)
    assert raj.bodies() == ["before", "written while it hangs"]
    # A dead path is not a reason to give WebSocket up.
    expect(raj.page.locator("#transport-indicator")).to_have_attribute("data-transport", "ws")
    raj.assert_no_errors()
