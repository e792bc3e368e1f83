"""Rich text: the Markdown subset, and XSS vectors that must come out inert."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.pipeline.richtext import LINK_REL, Renderer


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


class _Audit(HTMLParser):
    """Collects every tag and attribute, the way a browser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    handle_startendtag = handle_starttag


def audit(html: str) -> _Audit:
    a = _Audit()
    a.feed(html)
    a.close()
    return a


XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://x/xss.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<body onload=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](java&#9;script:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](&#x6A;avascript:alert(1))",
    "[x](&#0000106avascript:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x](  javascript:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](\x01javascript:alert(1))",
    "[x](java\nscript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](VBScript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](file:///etc/passwd)",
    "[x](//evil.example/x)",
    "[x](/relative)",
    "<javascript:alert(1)>",
    "<JAVASCRIPT:alert(1)>",
    "![x](javascript:alert(1))",
    '[x](http://ok.example "a\\" onmouseover=\\"alert(1))',
    '[x](http://ok.example/"onmouseover="alert(1))',
    "`<script>alert(1)</script>`",
    "```\n<script>alert(1)</script>\n```",
    '```html" onclick="alert(1)\nx\n```',
    "> <img src=x onerror=alert(1)>",
    "**<img src=x onerror=alert(1)>**",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "<!-- x --><script>alert(1)</script>",
    "<style>*{x:expression(alert(1))}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "[a](https://ok.example)<img src=x onerror=alert(1)>",
    "https://ok.example/<script>alert(1)</script>",
    'https://ok.example/"onmouseover="alert(1)',
    "mailto:x@y.z?body=<script>",
]


@pytest.mark.parametrize("body", XSS)
def test_xss_vectors_come_out_inert(renderer: Renderer, body: str) -> None:
    html = renderer.render(body).html
    a = audit(html)
    assert set(a.tags) <= {"p", "br", "em", "strong", "del", "code", "pre", "blockquote", "a"}
    assert "script" not in a.tags
    for tag, name, value in a.attrs:
        assert not name.startswith("on"), html
        assert name in {"href", "rel", "target", "class", "start"}, html
        if name == "href":
            assert urlsplit(value).scheme in {"http", "https", "mailto"}, html
            assert value[: len(urlsplit(value).scheme)].islower()
        if name == "class":
            assert value.startswith("language-") and '"' not in value


@pytest.mark.parametrize(
    ("body", "html"),
    [
        ("hello", "<p>hello</p>"),
        ("*em* _em_", "<p><em>em</em> <em>em</em></p>"),
        ("**strong** __strong__", "<p><strong>strong</strong> <strong>strong</strong></p>"),
        ("~~gone~~", "<p><del>gone</del></p>"),
        ("`a <b> c`", "<p><code>a &lt;b&gt; c</code></p>"),
        ("```py\nx = 1 < 2\n```", '<pre><code class="language-py">x = 1 &lt; 2\n</code></pre>'),
        ("    indented", "<pre><code>indented\n</code></pre>"),
        ("> quoted\n> more", "<blockquote>\n<p>quoted<br>\nmore</p>\n</blockquote>"),
        ("line one\nline two", "<p>line one<br>\nline two</p>"),
        ("a & b < c", "<p>a &amp; b &lt; c</p>"),
        ("\\*not em\\*", "<p>*not em*</p>"),
        ("- one\n- two", "<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
        ("3. three\n4. **four**", '<ol start="3">\n<li>three</li>\n<li><strong>four</strong></li>\n</ol>'),
        ("- outer\n  - inner", "<ul>\n<li>outer<ul>\n<li>inner</li>\n</ul>\n</li>\n</ul>"),
        # A marker alone is an answer ("1."), not an empty list; numbers are not lists.
        ("1.", "<p>1.</p>"),
        ("-", "<p>-</p>"),
        ("-5 degrees", "<p>-5 degrees</p>"),
        ("1.5 litres", "<p>1.5 litres</p>"),
        # Not in the subset: shown as typed.
        ("# heading", "<p># heading</p>"),
        ("| a | b |\n|---|---|", "<p>| a | b |<br>\n|---|---|</p>"),
        ("<b>raw</b>", "<p>&lt;b&gt;raw&lt;/b&gt;</p>"),
        ("---", "<p>---</p>"),
    ],
)
def test_markdown_subset(renderer: Renderer, body: str, html: str) -> None:
    assert renderer.render(body).html.strip() == html


@pytest.mark.parametrize(
    ("body", "href", "text"),
    [
        ("[site](https://example.com/a?b=1&c=2)", "https://example.com/a?b=1&c=2", "site"),
        ("see https://example.com/x.", "https://example.com/x", "https://example.com/x"),
        ("<http://example.com>", "http://example.com", "http://example.com"),
        ("[mail](mailto:bob@example.com)", "mailto:bob@example.com", "mail"),
        ("![cat](https://example.com/cat.png)", "https://example.com/cat.png", "cat"),
    ],
)
def test_links(renderer: Renderer, body: str, href: str, text: str) -> None:
    html = renderer.render(body).html
    a = audit(html)
    assert a.tags.count("a") == 1
    attrs = {k: v for t, k, v in a.attrs if t == "a"}
    assert attrs == {"href": href, "rel": LINK_REL, "target": "_blank"}
    assert f">{text}</a>" in html.replace("&amp;", "&")


def test_bad_link_keeps_its_text(renderer: Renderer) -> None:
    assert renderer.render("[click me](java&#x09;script:alert(1))").html.strip() == (
        "<p>click me</p>"
    )


def test_extract_links(renderer: Renderer) -> None:
    body = (
        "a https://one.example/x and [two](http://two.example) and "
        "https://one.example/x again, <https://three.example/>, "
        "[m](mailto:x@y.z) `https://in-code.example` [bad](javascript:x)"
    )
    expected = ["https://one.example/x", "http://two.example", "https://three.example/"]
    assert renderer.extract_links(body) == expected
    assert list(renderer.render(body).links) == expected


def test_empty(renderer: Renderer) -> None:
    assert renderer.render("") .html == ""
    assert renderer.extract_links("") == []


@pytest.mark.parametrize("body", [">" * 5000 + " x", "*" * 5000 + "x" + "*" * 5000, "[" * 5000])
def test_deep_nesting(renderer: Renderer, body: str) -> None:
    assert renderer.render(body).html.startswith("<")


@given(st.text(alphabet=st.sampled_from("*_~`>[]()<>!#&;:/\\\n @ajvsx.chtp0123456789")))
def test_never_raises_and_stays_inert(body: str) -> None:
    html = Renderer().render(body).html
    for _tag, name, value in audit(html).attrs:
        assert not name.startswith("on")
        if name == "href":
            assert urlsplit(value).scheme in {"http", "https", "mailto"}


@pytest.mark.parametrize("body", ["[_`]", " 1[6x3s4s_3\ns`]"])
def test_parser_panic_falls_back_to_plain_text(
    renderer: Renderer, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    # markdown-it-rs 0.6 panics on these (upstream issues #40 and #48).
    rendered = renderer.render(body)
    assert rendered.links == ()
    assert "<p>" in rendered.html and "`" in rendered.html
    assert renderer.extract_links(body) == []
    assert "panicked" in caplog.text
    assert renderer.render("**still works**").html.strip() == "<p><strong>still works</strong></p>"


# -- the plain-line fast path ------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80))
def test_plain_fast_path_agrees_with_the_parser(text: str) -> None:
    from squall.pipeline.richtext import _BIDI, _PLAIN_LINE

    body = _BIDI.sub("", text).strip()  # as render() drops them before either path
    if not body or not _PLAIN_LINE.fullmatch(body):
        return
    renderer = Renderer()
    tree = renderer._parse(body)
    if tree is None:
        return
    from squall.pipeline.richtext import _Writer

    writer = _Writer()
    writer.write(tree)
    slow = renderer._cleaner.clean("".join(writer.out))
    assert renderer.render(body).html == slow
