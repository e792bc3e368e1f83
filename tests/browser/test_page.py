"""Language, phone width and keyboard use of the page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

CATALOGUES = Path(__file__).resolve().parents[2] / "squall" / "static" / "i18n"


def test_catalogues_have_the_same_keys() -> None:
    english = json.loads((CATALOGUES / "en.json").read_text(encoding="utf-8"))
    chinese = json.loads((CATALOGUES / "zh-CN.json").read_text(encoding="utf-8"))
    assert set(english) == set(chinese)


def test_chinese_browser_gets_chinese_and_the_switch_overrides_it(server: Any, browser: Any) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        expect(page.locator("#nick-submit")).to_have_text("以访客身份继续")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        page.fill("#nick-input", "王芳")
        page.press("#nick-input", "Enter")
        expect(page.locator("#me")).to_have_text("当前昵称：王芳")
        page.fill("#join-input", "cn")
        page.press("#join-input", "Enter")
        expect(page.locator("#composer")).to_have_attribute("placeholder", "在 #cn 发消息（Enter 发送，Shift+Enter 换行）")
        expect(page.locator("#transport-indicator")).to_have_text("WebSocket")

        page.select_option("#lang-select", "en")
        expect(page.locator("#join-submit")).to_have_text("Join")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        page.reload()  # the choice is remembered, and so are the session and the rooms
        expect(page.locator("#join-submit")).to_have_text("Join")
        expect(page.locator("#room-title")).to_have_text("#cn")
    finally:
        context.close()


def test_phone_width_with_the_keyboard_alone(server: Any, open_chat: Any) -> None:
    sam = open_chat(server, "sam", viewport={"width": 390, "height": 760})
    page = sam.page
    expect(page.locator("#sidebar")).to_be_hidden()
    page.locator("#rooms-toggle").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#rooms-toggle")).to_have_attribute("aria-expanded", "true")
    page.locator("#join-input").focus()
    page.keyboard.type("phone")
    page.keyboard.press("Enter")
    page.locator("#join-input").focus()
    page.keyboard.type("second")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#second")
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).to_be_hidden()
    expect(page.locator("#rooms-toggle")).to_be_focused()

    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("#room-title")).to_have_text("#phone")
    page.locator("#composer").focus()
    page.keyboard.type("typed on a phone")
    page.keyboard.press("Enter")
    expect(sam.confirmed()).to_have_count(1)
    # Nothing is wider than the screen.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    # Every control has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, input, textarea, select')]
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
            .map(el => el.id || el.className)"""
    )
    assert unnamed == []
    sam.assert_no_errors()


def test_a_room_link_opens_the_room(server: Any, open_chat: Any) -> None:
    """Mention e-mails link to ``/#room/seq``: following one opens that room."""
    kim = open_chat(server, "kim")
    page = kim.page
    page.goto(server.url + "/#linked-room/1")  # same page: a hashchange
    expect(page.locator('#room-list li[data-room="linked-room"]')).to_have_count(1)
    expect(page.locator("#room-title")).to_have_text("#linked-room")
    page.goto(server.url + "/")
    page.goto(server.url + "/#mailed/7")  # a fresh load, as from an e-mail
    page.reload()
    expect(page.locator("#room-title")).to_have_text("#mailed")
    page.goto(server.url + "/#Not%20A%20Room")
    expect(page.locator('#room-list li[data-room="Not A Room"]')).to_have_count(0)
    kim.assert_no_errors()


def test_loading_the_page_asks_for_nothing_that_is_missing(server: Any, browser: Any) -> None:
    """No 404 on any load (the favicon was one), and the icon is a real image."""
    context = browser.new_context()
    page = context.new_page()
    failures: list[str] = []
    page.on("response", lambda response: failures.append(f"{response.status} {response.url}") if response.status >= 400 else None)
    try:
        page.goto(server.url + "/")
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        icon = page.request.get(server.url + "/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml", (icon.status, icon.headers)
        linked = page.locator("link#favicon").evaluate("link => link.href")
        assert page.request.get(linked).status == 200, linked
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        assert failures == []
    finally:
        context.close()
