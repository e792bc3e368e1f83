"""Rich text: a small, safe subset of Markdown rendered to HTML.

Theory of operation
-------------------

The body is parsed by ``markdown-it-pyrs`` (markdown-it.rs, in Rust) started from
its ``zero`` preset with only the rules of the subset switched on: paragraphs,
line breaks, emphasis, strikethrough, inline code, indented and fenced code
blocks, block quotes, bullet and numbered lists (``- item``, ``1. item``), links,
``<autolinks>`` and bare ``http(s)://`` URLs (linkify). Everything else is never
*parsed*, so it comes out as the text that was typed: ``# heading``, tables, ``---``, raw HTML
(``<b>`` arrives as ``&lt;b&gt;``) and reference definitions. An image
``![alt](url)`` is not parsed as an image; it shows as ``!`` followed by an
ordinary link to the URL.

This module walks the syntax tree and writes the HTML itself, which lets it

* turn single newlines into ``<br>`` (chat users expect a line break to stay),
* admit a link only if its URL is absolute with scheme http, https or mailto
  (decided on the parser's decoded URL, so entities, mixed case, tabs and
  control characters in ``java&#x09;script:`` cannot sneak through); any other
  link is rendered as its text,
* add ``rel="nofollow noopener noreferrer"`` and ``target="_blank"`` to links,
* drop bidirectional control characters (:data:`~squall.protocol.BIDI_CONTROLS`):
  an unterminated override reorders everything after it on the page, the
  message's author, the next message, code that reads differently from what it
  is ("Trojan Source", CVE-2021-42574). The HTML carries the text without them;
  the stored ``body`` is left as it was typed.

The result then goes through ``nh3`` (ammonia) with an allow-list of exactly the
tags and attributes written above: a second wall, so a bug in the walk cannot
become an XSS. Filtering (``filter.py``) must happen on the body *before*
rendering; mentions are marked on the HTML *after* it (``mentions.py``).

:func:`Renderer.extract_links` lists the http(s) URLs of links, autolinks and
bare URLs in the same tree, in order and without duplicates; URLs inside code
spans and blocks are not links and are not listed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import nh3
from markdown_it_pyrs import MarkdownIt, Node

from ..protocol import BIDI_CONTROLS

if TYPE_CHECKING:
    from markdown_it_pyrs.markdown_it_pyrs import _PLUGIN_NAME

__all__ = ["Rendered", "Renderer", "LINK_SCHEMES", "LINK_REL"]

# Rules of markdown-it-pyrs that make up the subset; see the module docstring.
_RULES: list[_PLUGIN_NAME] = [
    "paragraph",
    "newline",
    "escape",
    "entity",
    "emphasis",
    "strikethrough",
    "backticks",
    "code",
    "fence",
    "blockquote",
    "list",
    "link",
    "autolink",
    "linkify",
]

log = logging.getLogger(__name__)

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# A trimmed single line with no character that any rule of the subset (or the
# HTML escaper, or nh3's serialiser) reacts to, and that does not start a list item.
_PLAIN_LINE = re.compile(r"(?![-+](?:\s|$)|\d{1,9}[.)](?:\s|$))[^\s\x00-\x1f\x7f-\x9f\\&*_~`\[\]<>:\xa0]([^\x00-\x1f\x7f-\x9f\\&*_~`\[\]<>:\xa0]*[^\s\x00-\x1f\x7f-\x9f\\&*_~`\[\]<>:\xa0])?")

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener noreferrer"
_PREVIEW_SCHEMES = frozenset({"http", "https"})
_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")

# A fence's info string names a language; keep it as a class only if it is tame.
_LANG = re.compile(r"[A-Za-z0-9_+\-.#]{1,32}")
# Anything below U+0021 or DEL in a URL: browsers strip or ignore them, which is
# exactly how "java\tscript:" used to become "javascript:".
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]")


def safe_url(url: str, schemes: frozenset[str] = LINK_SCHEMES) -> str | None:
    """Return ``url`` if it is absolute with an allowed scheme, else None."""
    if not url or _URL_JUNK.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in schemes or not url[: len(parts.scheme)].isascii():
        return None
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        return None
    return url


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    html: str
    links: tuple[str, ...]


_WRAP = {"paragraph": ("<p>", "</p>\n"), "em": ("<em>", "</em>"),
         "strong": ("<strong>", "</strong>"), "strikethrough": ("<del>", "</del>"),
         "code_inline": ("<code>", "</code>"),
         "blockquote": ("<blockquote>\n", "</blockquote>\n"),
         "bullet_list": ("<ul>\n", "</ul>\n"), "list_item": ("<li>", "</li>\n")}


class _Writer:
    """Writes HTML for a syntax tree. Iterative, with an explicit stack: a body of
    a few thousand ``>`` nests that deep, and must not hit Python's recursion limit."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.links: list[str] = []

    def link_target(self, node: Node) -> str | None:
        url = node.meta.get("url")
        href = safe_url(url) if isinstance(url, str) else None
        if href is not None and href not in self.links and safe_url(href, _PREVIEW_SCHEMES):
            self.links.append(href)
        return href

    def write(self, root: Node) -> None:
        stack: list[Node | str] = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                self.out.append(item)
                continue
            close = self.open(item)
            if close is None:
                continue
            stack.append(close)
            stack.extend(reversed(item.children))

    def open(self, node: Node) -> str | None:
        """Write the start of ``node``; return its closing text, or None if it has
        been written whole (its children must then be skipped)."""
        name = node.name
        if name in ("text", "text_special"):
            self.out.append(escape(str(node.meta.get("content", "")), quote=False))
            return None
        if name in ("softbreak", "hardbreak"):
            self.out.append("<br>\n")
            return None
        if name in ("bullet_list", "ordered_list") and not any(item.children for item in node.children):
            # Markers alone ("1.", "-"): an answer, not an empty list.
            self.out.append("<p>" + "<br>\n".join(_markers(node)) + "</p>\n")
            return None
        if name in _WRAP:
            start, close = _WRAP[name]
            self.out.append(start)
            return close
        if name == "ordered_list":
            start = node.meta.get("start", 1)
            first = f' start="{start}"' if isinstance(start, int) and start != 1 else ""
            self.out.append(f"<ol{first}>\n")
            return "</ol>\n"
        if name in ("code_block", "fence"):
            info = str(node.meta.get("info", "")).split(maxsplit=1)
            lang = info[0] if info and _LANG.fullmatch(info[0]) else None
            attr = f' class="language-{escape(lang)}"' if lang else ""
            content = escape(str(node.meta.get("content", "")), quote=False)
            self.out.append(f"<pre><code{attr}>{content}</code></pre>\n")
            return None
        if name in ("link", "autolink", "linkify"):
            href = self.link_target(node)
            if href is None:
                return ""  # not a link we allow: keep the text only
            self.out.append(f'<a href="{escape(href)}" rel="{LINK_REL}" target="_blank">')
            return "</a>"
        # root, or a node type a newer parser might add: keep its text, no markup.
        return ""


def _markers(node: Node) -> list[str]:
    marker = escape(str(node.meta.get("marker", "-")), quote=False)
    if node.name == "bullet_list":
        return [marker] * len(node.children)
    start = node.meta.get("start", 1)
    first = start if isinstance(start, int) else 1
    return [f"{first + n}{marker}" for n in range(len(node.children))]


def _plain(body: str) -> str:
    paragraphs = [p.strip("\n") for p in _BLANK_LINE.split(body) if p.strip()]
    return "".join(
        "<p>" + "<br>\n".join(escape(line, quote=False) for line in p.split("\n")) + "</p>\n"
        for p in paragraphs
    )


class Renderer:
    """Renders chat bodies. Build one per process and share it; it holds no state
    between calls.

    Call :meth:`render` on the (already filtered) body; put ``html`` and ``links``
    on the draft, then mark mentions on ``html``.
    """

    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log
        self._md = MarkdownIt("zero").enable_many(_RULES)
        self._cleaner = nh3.Cleaner(
            tags={"p", "br", "em", "strong", "del", "code", "pre", "blockquote", "a", "ul", "ol", "li"},
            attributes={"a": {"href", "target"}, "code": {"class"}, "ol": {"start"}},
            attribute_filter=_attribute_filter,
            url_schemes=set(LINK_SCHEMES),
            url_relative="deny",
            link_rel=LINK_REL,
            strip_comments=True,
        )

    def _parse(self, body: str) -> Node | None:
        try:
            return self._md.tree(body)
        except BaseException as exc:
            # markdown-it-rs 0.6 panics on some inputs, e.g. "[_`]" (upstream
            # markdown-it-rust/markdown-it#40, #48); pyo3 turns the panic into
            # PanicException, which derives from BaseException, not Exception.
            if type(exc).__name__ != "PanicException":
                raise
            self.logger.warning("markdown parser panicked; body shown as plain text")
            return None

    def render(self, body: str) -> Rendered:
        """Return the sanitised HTML of ``body`` and the http(s) URLs it links.

        Never raises for any input: if the parser fails, the body is rendered as
        escaped plain text with no links. Bidirectional controls are dropped.
        """
        if _BIDI.search(body):
            body = _BIDI.sub("", body)
        if _PLAIN_LINE.fullmatch(body):
            # Most chat lines are one line of plain words: nothing in them can
            # start Markdown, a link or an entity, and the parse would give
            # exactly this (tests/test_pipeline_richtext.py checks the two agree).
            return Rendered(f"<p>{body}</p>\n", ())
        tree = self._parse(body)
        if tree is None:
            return Rendered(self._cleaner.clean(_plain(body)), ())
        writer = _Writer()
        writer.write(tree)
        return Rendered(self._cleaner.clean("".join(writer.out)), tuple(writer.links))

    def to_html(self, body: str) -> str:
        return self.render(body).html

    def extract_links(self, body: str) -> list[str]:
        """Every http(s) URL linked from ``body``, in order, de-duplicated."""
        tree = self._parse(body)
        if tree is None:
            return []
        writer = _Writer()
        writer.write(tree)
        return writer.links


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "a" and attr == "href":
        return value if safe_url(value) else None
    if tag == "a" and attr == "target":
        return "_blank"
    if tag == "ol" and attr == "start":
        return value if value.isascii() and value.isdigit() and len(value) <= 9 else None
    if tag == "code" and attr == "class":
        lang = value.removeprefix("language-")
        return value if value.startswith("language-") and _LANG.fullmatch(lang) else None
    return value
