"""Regenerate docs/screenshots/{desktop,phone,search,events}.png from a real server and Chromium.

Run from the repository root: ``.venv/bin/python tests/browser/make_screenshots.py``.
Not a test (pytest does not collect it); it reuses the test fixtures' server class.
Run it as a file, not with ``-m tests.…``: the ``confusables`` package installs a
top-level ``tests`` package into site-packages, and a regular package there
shadows this repository's ``tests`` folder (a namespace package).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from conftest import CHROMIUM, CHROMIUM_ARGS, SKIP_REASON, SquallServer  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CONVERSATION = [
    ("bob", "Morning all! Is the deploy still on for 14:00?"),
    ("alice", "Yes. I've put the checklist in the wiki: https://example.com/deploy-checklist"),
    ("李雷", "我这边准备好了，数据库迁移已经测过 👍"),
    ("bob", "@alice can you keep an eye on the error rate afterwards?"),
    ("alice", "Sure, I'll watch the dashboards.\nPing me if anything looks odd."),
    ("李雷", "`make test` passes on my machine too"),
]


def main() -> int:
    if not CHROMIUM.exists():
        print(SKIP_REASON, file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        # No previews: the sample conversation links to a public host, and test
        # traffic stays on this machine.
        server = SquallServer(Path(tmp), web_args=("--stages", "validate,filter,render,mentions,store"))
        server.start()
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            pages = {}
            for nick in ("alice", "bob", "李雷"):
                context = browser.new_context(viewport={"width": 1280, "height": 760}, locale="en-US")
                page = context.new_page()
                page.goto(server.url + "/")
                page.fill("#nick-input", nick)
                page.press("#nick-input", "Enter")
                for room in ("random", "deploys"):
                    page.fill("#join-input", room)
                    page.press("#join-input", "Enter")
                expect(page.locator("#transport-indicator")).to_have_attribute("data-state", "open")
                pages[nick] = page
            for count, (nick, text) in enumerate(CONVERSATION, start=1):
                pages[nick].fill("#composer", text)
                pages[nick].press("#composer", "Enter")
                expect(pages["alice"].locator("#messages li[data-seq]")).to_have_count(count)
            pages["bob"].click('#room-list li[data-room="random"] .room-button')
            for text in ("anyone up for lunch?", "@alice tacos?"):
                pages["bob"].fill("#composer", text)
                pages["bob"].press("#composer", "Enter")
            alice = pages["alice"]
            expect(alice.locator('#room-list li[data-room="random"] [data-testid=unread-badge]')).to_have_text("2")
            alice.fill("#composer", "Sounds good")
            pages["bob"].click('#room-list li[data-room="deploys"] .room-button')
            # The server relays "typing" at most every 2 s per person: keep typing until it shows.
            for _ in range(10):
                pages["bob"].type("#composer", "ty")
                try:
                    expect(alice.locator("#typing")).not_to_be_empty(timeout=1000)
                    break
                except AssertionError:
                    continue
            alice.screenshot(path=str(OUT / "desktop.png"))
            alice.set_viewport_size({"width": 390, "height": 760})
            alice.screenshot(path=str(OUT / "phone.png"))
            # Search: results for "deploy", one of them opened among its neighbours.
            alice.set_viewport_size({"width": 1280, "height": 760})
            alice.keyboard.press("Escape")
            alice.locator("#scroller").focus()
            alice.keyboard.press("/")
            alice.keyboard.type("deploy")
            alice.keyboard.press("Enter")
            expect(alice.locator("#search-results button.search-hit")).to_have_count(2)
            alice.screenshot(path=str(OUT / "search.png"))
            alice.set_viewport_size({"width": 1280, "height": 760})
            _message_events(pages)
            alice.screenshot(path=str(OUT / "events.png"))
            browser.close()
        finally:
            server.stop()
    print(f"wrote {OUT / 'desktop.png'}, {OUT / 'phone.png'}, {OUT / 'search.png'} and {OUT / 'events.png'}")
    return 0


def _message_events(pages: dict[str, Any]) -> None:
    """A room with an edit, reactions, a reply and a deleted message (events.png)."""
    for page in pages.values():
        page.fill("#join-input", "launch")
        page.press("#join-input", "Enter")
    alice, bob, lilei = pages["alice"], pages["bob"], pages["李雷"]
    script = [(alice, "Launch is at 15:00, checklist is final"), (lilei, "发布前我再检查一遍"),
              (bob, "oops, wrong room")]
    for count, (page, text) in enumerate(script, start=1):
        page.fill("#composer", text)
        page.press("#composer", "Enter")
        expect(alice.locator("#messages li[data-seq]")).to_have_count(count)

    def message(page: Any, text: str) -> Any:
        body = page.locator("[data-testid=message-body]", has_text=text)
        return page.locator("#messages li[data-seq]").filter(has=body)

    # Alice fixes the time with Up-arrow; bob deletes his stray message.
    alice.locator("#composer").press("ArrowUp")
    alice.fill("#composer", "Launch is at 16:00, checklist is final")
    alice.press("#composer", "Enter")
    stray = message(bob, "oops, wrong room")
    stray.hover()
    stray.locator("[data-testid=delete-button]").click()
    for page, emoji in ((bob, "👍"), (lilei, "👍"), (lilei, "🎉")):
        target = message(page, "16:00")
        target.hover()
        target.locator("[data-testid=react-add]").click()
        target.locator(f'.picker-emoji[data-emoji="{emoji}"]').click()
    target = message(bob, "16:00")
    target.hover()
    target.locator("[data-testid=reply-button]").click()
    bob.fill("#composer", "Works for me, I'll be around")
    bob.press("#composer", "Enter")
    expect(message(alice, "I'll be around").locator("[data-testid=reply-quote]")).to_be_visible()
    expect(message(alice, "16:00").locator("[data-testid=reaction]").first).to_contain_text("👍2")
    expect(alice.locator("#messages li.deleted")).to_have_count(1)
    alice.mouse.move(0, 0)


if __name__ == "__main__":
    sys.exit(main())
