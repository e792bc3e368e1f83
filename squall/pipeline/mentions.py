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
``<span>``; the HTML is copied tag by tag (see ``_TOKEN``), re-escaping every
text run, so marking cannot make trusted HTML unsafe.

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
from html import escape, unescape

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


# The html this module reads is trusted output of richtext.py and nh3: every
# "<" and ">" outside a tag is escaped, and attribute values escape them too,
# so a tag is exactly "<" up to the next ">". That makes a regex tokenizer
# exact here, and many times faster than html.parser on the processor's hot path.
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>|[^<]+")


def _walk(html: str, hook: Callable[[str], str]) -> str:
    """Copy trusted ``html``, passing each text run outside a/code/pre through ``hook``.

    ``hook`` gets the text unescaped and must return it escaped (with any markup
    it adds).
    """
    out: list[str] = []
    skip_depth = 0
    for token in _TOKEN.finditer(html):
        tag = token.group(2)
        if tag is not None:
            out.append(token.group())
            if tag.lower() in _SKIP_INSIDE:
                skip_depth += -1 if token.group(1) else 1
                skip_depth = max(skip_depth, 0)
        elif skip_depth:
            out.append(token.group())
        else:
            out.append(hook(unescape(token.group())))
    return "".join(out)


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
    if "@" in html:
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
