"""How Markdown looks on the page: code stands out, quotes and lists are quotes and
lists, and a very long message is folded until asked for."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_code_quotes_lists_and_long_messages(server: Any, open_chat: Any) -> None:
    reader = open_chat(server, "typesetter")
    reader.join("typeset")
    reader.wait_open()
    reader.send_confirmed("run `make test` now")
    reader.send_confirmed("> quoted\n> twice")
    reader.send_confirmed("- apples\n- pears\n\n3. third\n4. fourth")
    long_text = "\n".join(f"line {n}" for n in range(1, 41))
    reader.send_confirmed(long_text)
    items = reader.page.locator("#messages li[data-seq]")
    expect(items).to_have_count(4)

    code = items.nth(0).locator("code")
    expect(code).to_have_text("make test")
    styles = code.evaluate("c => { const s = getComputedStyle(c); return [s.backgroundColor, s.fontSize] }")
    body_size = items.nth(0).locator(".body").evaluate("b => getComputedStyle(b).fontSize")
    assert styles[0] not in ("rgba(0, 0, 0, 0)", "transparent"), styles  # it has a background
    assert float(styles[1].rstrip("px")) >= 0.85 * float(body_size.rstrip("px")), (styles, body_size)

    quote = items.nth(1).locator("blockquote")
    expect(quote).to_contain_text("quoted")
    assert quote.evaluate("q => parseFloat(getComputedStyle(q).borderLeftWidth)") > 0

    expect(items.nth(2).locator("ul > li")).to_have_text(["apples", "pears"])
    expect(items.nth(2).locator("ol")).to_have_attribute("start", "3")
    expect(items.nth(2).locator("ol > li")).to_have_count(2)

    long_item = items.nth(3)
    body = long_item.locator(".body")
    expect(body).to_have_class("body collapsed")
    folded = body.evaluate("b => b.clientHeight")
    assert folded < body.evaluate("b => b.scrollHeight")
    expand = long_item.locator("button.expand")
    expect(expand).to_have_text("Show more")
    expand.click()
    expect(body).not_to_have_class("body collapsed")
    expect(expand).to_have_attribute("aria-expanded", "true")
    assert body.evaluate("b => b.clientHeight") > folded
    expect(items.nth(0).locator("button.expand")).to_have_count(0)  # short ones are never folded
    reader.assert_no_errors()


def test_a_me_action_reads_as_an_action(server: Any, open_chat: Any) -> None:
    """`squall chat`'s /me arrives as a body starting "/me ": the page shows "* nick waves"."""
    actor = open_chat(server, "actor")
    actor.join("actions")
    actor.wait_open()
    actor.send_confirmed("/me waves at **everyone**")
    item = actor.page.locator("#messages li[data-seq]").first
    expect(item).to_have_class(re.compile(r"\baction\b"))
    expect(item.locator("[data-testid=message-body]")).to_have_text("* actor waves at everyone")
    expect(item.locator("[data-testid=message-body] strong")).to_have_text("everyone")  # the server's html kept
    actor.send_confirmed("/mention is not an action")
    expect(actor.page.locator("#messages li.action")).to_have_count(1)
    actor.assert_no_errors()
