"""A link to a page on a local, allow-listed HTTP server gets a preview card."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from squall.config import Settings

pytestmark = pytest.mark.browser

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8">
<title>Fallback title</title>
<meta property="og:title" content="Squall &lt;b&gt;release notes&lt;/b&gt;">
<meta property="og:description" content="What changed in 0.1: <script>window.__xss=1</script>">
<meta property="og:site_name" content="Local test site">
<meta property="og:image" content="javascript:alert(1)">
</head><body><p>hello</p></body></html>
"""


def _previews_available() -> str | None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if "preview_allow" not in fields:
        return "the link-preview pipeline has not landed (no preview_allow setting)"
    if "previews" not in Settings().stages:
        return "the previews stage is not in the default pipeline"
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep the test output quiet


@pytest.fixture
def site() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_link_gets_a_preview_card(start_server: Any, open_chat: Any, site: str) -> None:
    reason = _previews_available()
    if reason:
        pytest.skip(reason)
    server = start_server(web_args=("--preview-allow", site))
    pat = open_chat(server, "pat")
    quinn = open_chat(server, "quinn")
    for chat in (pat, quinn):
        chat.join("links")
        chat.wait_open()
    url = f"http://{site}/notes"
    pat.send(f"release notes: {url}")
    for chat in (pat, quinn):
        card = chat.page.locator("#messages li[data-seq] a.preview-card")
        expect(card).to_have_count(1, timeout=20_000)
        expect(card).to_have_attribute("href", url)
        expect(card.locator(".preview-title")).to_have_text("Squall <b>release notes</b>")
        expect(card.locator(".preview-site")).to_have_text("Local test site")
        expect(card.locator(".preview-description")).to_contain_text("What changed in 0.1")
        expect(card.locator("img")).to_have_count(0)  # a javascript: image is dropped
        assert chat.page.evaluate("() => window.__xss") is None
        chat.assert_no_errors()

