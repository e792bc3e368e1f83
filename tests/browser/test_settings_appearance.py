"""Settings hold the language and the theme (system, light, dark), remembered."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def background(page: Any) -> str:
    return page.evaluate("() => getComputedStyle(document.body).backgroundColor")


def test_theme_and_language_from_settings(server: Any, open_chat: Any) -> None:
    chat = open_chat(server, "themer")
    page = chat.page
    page.emulate_media(color_scheme="light")
    system_light = background(page)
    page.emulate_media(color_scheme="dark")
    system_dark = background(page)
    assert system_light != system_dark  # "system" follows the system

    page.click("#settings-button")
    expect(page.locator("#theme-system")).to_be_checked()
    page.check("#theme-light")
    assert background(page) == system_light  # pinned light although the system is dark
    page.check("#theme-dark")
    page.emulate_media(color_scheme="light")
    assert background(page) == system_dark
    page.select_option("#settings-lang", "zh-CN")
    expect(page.locator("#settings-heading")).to_have_text("设置")
    expect(page.locator("#appearance-heading")).to_have_text("外观")
    page.keyboard.press("Escape")

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background(page) == system_dark
    expect(page.locator("#settings-button")).to_be_visible()
    page.click("#settings-button")
    expect(page.locator("#theme-dark")).to_be_checked()
    expect(page.locator("#settings-lang")).to_have_value("zh-CN")
    page.check("#theme-system")
    expect(page.locator("html")).not_to_have_attribute("data-theme", "dark")
    assert background(page) == system_light
    chat.assert_no_errors()


def test_on_a_phone_the_language_picker_lives_in_settings(server: Any, open_chat: Any) -> None:
    chat = open_chat(server, "pocket", viewport={"width": 390, "height": 760})
    page = chat.page
    expect(page.locator("#lang-select")).to_be_hidden()
    page.click("#settings-button")
    expect(page.locator("#settings-lang")).to_be_visible()
    chat.assert_no_errors()
