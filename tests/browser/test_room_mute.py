"""Desktop notifications on a mention elsewhere, and rooms muted per device: no
notification, and not counted in the title or the icon."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

# Records each Notification the page makes instead of showing it.
SPY = """
window.__notes = [];
const Real = window.Notification;
window.Notification = class {
  constructor(title, options) { window.__notes.push({ title, body: options?.body }); }
  close() {}
  static get permission() { return Real.permission; }
  static requestPermission() { return Real.requestPermission(); }
};
"""


def test_a_muted_room_neither_notifies_nor_counts_in_the_title(server: Any, open_chat: Any) -> None:
    carol, dave = open_chat(server, "carol5"), open_chat(server, "dave5")
    carol.page.context.grant_permissions(["notifications"], origin=server.url)
    carol.page.add_init_script(SPY)
    carol.page.reload()
    carol.join("loud")
    carol.join("quiet")
    carol.join("main5")  # carol looks at #main5
    for room in ("loud", "quiet"):
        dave.join(room)
    for chat in (carol, dave):
        chat.wait_open()
    mute = carol.page.locator('#room-list li[data-room="quiet"] [data-testid=mute-room]')
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")

    dave.page.click('#room-list li[data-room="quiet"] .room-button')
    dave.send_confirmed("psst @carol5")
    quiet_badge = carol.page.locator('#room-list li[data-room="quiet"] [data-testid=unread-badge]')
    expect(quiet_badge).to_have_text("1")  # still counted in its own badge
    dave.page.click('#room-list li[data-room="loud"] .room-button')
    dave.send_confirmed("hey @carol5")
    expect(carol.page.locator('#room-list li[data-room="loud"] [data-testid=unread-badge]')).to_have_text("1")
    expect(carol.page).to_have_title("(1) Squall")  # the loud mention only
    expect(carol.page.locator("link#favicon")).to_have_attribute("data-count", "1")
    notes = carol.page.evaluate("() => window.__notes")
    assert [n["body"] for n in notes] == ["hey @carol5"], notes

    carol.page.reload()  # the choice is kept on this device
    expect(carol.page.locator('#room-list li[data-room="quiet"] [data-testid=mute-room]')).to_have_attribute(
        "aria-pressed", "true"
    )
    carol.page.locator('#room-list li[data-room="quiet"] [data-testid=mute-room]').click()
    expect(carol.page.locator('#room-list li[data-room="quiet"]')).not_to_have_class("room muted")
    carol.assert_no_errors()
