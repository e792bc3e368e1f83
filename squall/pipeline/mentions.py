"""Mentions: ``@nick`` and ``@room`` in a rendered message.

Theory of operation
-------------------

Mentions are found in, and marked on, the HTML that :mod:`squall.pipeline.richtext`
produced, never in the raw body. That HTML already tells code and links apart
from prose, so "not inside code spans, code blocks or links" is simply "only in
text nodes outside ``<a>``, ``<code>`` and ``<pre>``". The order in the processor
is therefore: filter the body, render it, :func:`find_mentions` on the HTML,
resolve the keys against the users of the room (I/O, not here), then
:func:`mark_mentions`. Marking happens after nh3 ran, so nothing strips the
``<span>``; the HTML is re-serialised by this module from the parser's events,
re-escaping every text node, so marking cannot make trusted HTML unsafe.

A candidate is ``@`` followed by 1–32 nick characters (Unicode letters and
digits, ``_``, ``-``, ``.``); a trailing ``.`` is taken as punctuation
(``thanks @bob.``). Longer runs are not mentions (they are not nicks). The ``@``
must not follow a letter, digit or one of ``_ . + - / @`` — this is what keeps
``bob@example.com`` from mentioning ``example.com``. Text that looks like a URL
(``scheme://…`` or ``www.…``) is skipped even when the renderer did not link it.
Keys are ``str.casefold()`` of the candidate, so ``@Bob`` and ``@BOB`` are one.

``@room`` (any case) addresses everyone in the room, unless ``allow_room=False``,
in which case it is an ordinary nick candidate like any other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from html import escape
from html.parser import HTMLParser

__all__ = ["Candidates", "Marked", "find_mentions", "mark_mentions", "ROOM_KEY", "MAX_NICK"]

ROOM_KEY = "room"
MAX_NICK = 32

# "@" not glued to a preceding word, address or path; then a run of nick chars.
_CANDIDATE = re.compile(r"(?<![\w.+\-/@])@([\w.\-]+)")
_URLISH = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.\-]*://|www\.)\S+")
_SKIP_INSIDE = frozenset({"a", "code", "pre"})


@dataclasses.dataclass(frozen=True, slots=True)
class Candidates:
    """What a message asks for: nick keys (casefolded, in order) and ``@room``."""

    keys: tuple[str, ...]
    room: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Marked:
    html: str
    mentions: tuple[str, ...]  # canonical nicks, in order of first mention
    room: bool


def _scan_text(text: str) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, key) of each candidate in a text node; end excludes dots."""
    urls = [m.span() for m in _URLISH.finditer(text)]
    for m in _CANDIDATE.finditer(text):
        if any(a <= m.start() < b for a, b in urls):
            continue
        name = m.group(1).rstrip(".")
        if not 1 <= len(name) <= MAX_NICK:
            continue
        if "_" not in name and not any(c.isalnum() for c in name):
            continue
        yield m.start(), m.start() + 1 + len(name), name.casefold()


class _Walker(HTMLParser):
    """Feeds trusted HTML back out, handing text outside a/code/pre to ``on_text``."""

    def __init__(self, on_text: Callable[[str], str]) -> None:
        super().__init__(convert_charrefs=True)
        self.on_text = on_text
        self.out: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.append(self.get_starttag_text() or "")
        if tag in _SKIP_INSIDE:
            self.skip_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        self.out.append(f"</{tag}>")
        if tag in _SKIP_INSIDE and self.skip_depth:
            self.skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            self.out.append(escape(data, quote=False))
        else:
            self.out.append(self.on_text(data))


def _walk(html: str, hook: Callable[[str], str]) -> str:
    walker = _Walker(hook)
    walker.feed(html)
    walker.close()
    return "".join(walker.out)


class _Collect:
    def __init__(self, allow_room: bool) -> None:
        self.allow_room = allow_room
        self.keys: dict[str, None] = {}
        self.room = False

    def __call__(self, text: str) -> str:
        for _, _, key in _scan_text(text):
            if self.allow_room and key == ROOM_KEY:
                self.room = True
            else:
                self.keys.setdefault(key)
        return escape(text, quote=False)


def find_mentions(html: str, *, allow_room: bool = True) -> Candidates:
    """Return the nick keys and ``@room`` flag found in rendered, sanitised HTML.

    Look the keys up among the room's users (casefolded nick → canonical nick),
    then call :func:`mark_mentions` with that mapping.
    """
    collect = _Collect(allow_room)
    _walk(html, collect)
    return Candidates(tuple(collect.keys), collect.room)


class _Mark:
    def __init__(self, resolved: Mapping[str, str], allow_room: bool) -> None:
        self.resolved = resolved
        self.allow_room = allow_room
        self.mentions: dict[str, None] = {}
        self.room = False

    def __call__(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        for start, end, key in _scan_text(text):
            if self.allow_room and key == ROOM_KEY:
                self.room = True
                span = '<span class="mention mention-room">'
            elif key in self.resolved:
                nick = self.resolved[key]
                self.mentions.setdefault(nick)
                span = f'<span class="mention" data-nick="{escape(nick)}">'
            else:
                continue
            out.append(escape(text[pos:start], quote=False))
            out.append(f"{span}{escape(text[start:end], quote=False)}</span>")
            pos = end
        out.append(escape(text[pos:], quote=False))
        return "".join(out)


def mark_mentions(
    html: str,
    resolved: Mapping[str, str],
    *,
    allow_room: bool = True,
    room_members: Iterable[str] | None = None,
) -> Marked:
    """Wrap each resolved mention in ``<span class="mention" data-nick=…>``.

    :param resolved: casefolded key → canonical nick, for real users only; keys
        not in it are left as plain text and not listed.
    :param room_members: canonical nicks to add to ``mentions`` when the message
        says ``@room``; with ``None`` the caller expands ``Marked.room`` itself.

    Put ``Marked.html`` and ``Marked.mentions`` on the draft.
    """
    mark = _Mark(resolved, allow_room)
    out = _walk(html, mark)
    mentions = dict(mark.mentions)
    if mark.room and room_members is not None:
        for nick in room_members:
            mentions.setdefault(nick)
    return Marked(out, tuple(mentions), mark.room)
