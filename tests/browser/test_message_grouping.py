"""One person's consecutive messages share one header; each day starts with a
separator; every header has an avatar with the nick's initials and colour."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_runs_of_one_persons_messages_share_a_header(server: Any, open_chat: Any, tmp_path: Any) -> None:
    ann, ben = open_chat(server, "ann_lee"), open_chat(server, "ben")
    for chat in (ann, ben):
        chat.join("grouping")
        chat.wait_open()
    ann.send_confirmed("one")
    ann.send_confirmed("two")
    expect(ben.confirmed()).to_have_count(2)
    ben.send_confirmed("three")
    expect(ann.confirmed()).to_have_count(3)
    ann.send_confirmed("four")

    items = ann.page.locator("#messages li")
    expect(items).to_have_count(4)
    continued = items.evaluate_all("items => items.map(i => i.classList.contains('continued'))")
    assert continued == [False, True, False, False]
    days = items.evaluate_all("items => items.map(i => i.dataset.day ?? null)")
    assert days == ["Today", None, None, None]
    separator = items.nth(0).evaluate("i => getComputedStyle(i, '::before').content")
    assert separator == '"Today"', separator
    expect(items.nth(0).locator(".avatar")).to_have_text("AL")  # initials of "ann_lee"
    expect(items.nth(2).locator(".avatar")).to_have_text("B")
    # A continued message hides its header from the eye, not from a screen reader.
    expect(items.nth(1).locator(".avatar")).to_be_hidden()
    expect(items.nth(1).locator("[data-testid=message-nick]")).to_have_text("ann_lee")
    assert items.nth(1).bounding_box()["height"] < items.nth(0).bounding_box()["height"]
    # The same person's avatar has the same colour everywhere.
    colours = ann.page.locator("#messages li .avatar").evaluate_all(
        "avatars => avatars.map(a => getComputedStyle(a).backgroundColor)"
    )
    assert colours[0] == colours[1] == colours[3] != colours[2]
    ann.page.screenshot(path=str(tmp_path / "grouping.png"))
    ann.assert_no_errors()
