"""User text never runs: XSS payloads show as text, and nothing executes.

Execution is detected by hooks, not by eye: every payload calls
``window.__xssHit`` (a Python function exposed to the page), sets
``window.__xss``, or opens a dialog; all three are watched.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PAYLOADS = [
    "<script>window.__xssHit('script'); window.__xss = 1</script>",
    "<img src=x onerror=\"window.__xssHit('img'); window.__xss = 2\">",
    "<svg onload=\"window.__xssHit('svg')\"><circle r=1></svg>",
    "\"><img src=x onerror=alert('attr-breakout')>",
    "<a href=\"javascript:window.__xssHit('js-href')\">click me</a>",
    "[markdown link](javascript:window.__xssHit('md-link'))",
    "<iframe src=\"javascript:parent.__xssHit('iframe')\"></iframe>",
    "<details open ontoggle=\"window.__xssHit('details')\">x</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__xssHit('mxss')\">",
    "<style>@import 'javascript:alert(1)';</style><b style=\"background:url(javascript:alert(2))\">b</b>",
    "<body onload=alert('body')>",
    "<input autofocus onfocus=\"window.__xssHit('autofocus')\">",
    "{{7*7}} ${alert('template')} <!--<img src=x onerror=alert('comment')>-->",
    "<object data=\"data:text/html,<script>parent.__xssHit('object')</script>\"></object>",
]


def test_xss_payloads_show_as_text_and_nothing_runs(server: Any, open_chat: Any) -> None:
    hits: list[str] = []
    dialogs: list[str] = []
    victim = open_chat(server, "victim")
    attacker = open_chat(server, "mallory")
    victim.page.expose_function("__xssHit", lambda where="?": hits.append(str(where)))
    victim.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    attacker.page.expose_function("__xssHit", lambda where="?": hits.append(f"sender: {where}"))
    attacker.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for chat in (victim, attacker):
        chat.join("xss")
        chat.wait_open()

    for payload in PAYLOADS:
        attacker.send(payload)
    for chat in (victim, attacker):
        expect(chat.confirmed()).to_have_count(len(PAYLOADS))
        expect(chat.page.locator("#messages li.pending")).to_have_count(0)

    for chat in (victim, attacker):
        messages = chat.page.locator("#messages")
        # Nothing active made it into the DOM from a message.
        for selector in ("script", "iframe", "object", "embed", "svg", "math", "style", "input",
                         "details", "img", "[style]", "a[href^='javascript:' i]"):
            expect(messages.locator(selector)).to_have_count(0)
        assert messages.evaluate(
            "el => [...el.querySelectorAll('*')].flatMap(n => [...n.attributes].map(a => a.name))"
            ".filter(name => name.startsWith('on'))"
        ) == []
        shown = chat.page.locator("#messages li[data-seq] [data-testid=message-body]").all_inner_texts()
        assert "<script>" in shown[0]
        assert "onerror" in shown[1]
        # Clicking what looks like a link must not run it either.
        for link in chat.page.locator("#messages a").all():
            link.click(modifiers=["Alt"], no_wait_after=True)  # Alt: don't open a new tab
        chat.page.locator("#composer").focus()

    assert victim.page.evaluate("() => window.__xss") is None
    assert attacker.page.evaluate("() => window.__xss") is None
    assert hits == []
    assert dialogs == []
    victim.assert_no_errors()
    attacker.assert_no_errors()
