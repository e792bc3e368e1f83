"""Full-text search: the query, the cursor and the highlighted snippet (no I/O).

Theory of operation. A query is up to :data:`MAX_TERMS` terms, words split
on white space or ``"quoted phrases"``; a message matches when it contains
every term as a substring, case-insensitively. Substrings rather than words
because Chinese, Japanese and Thai put no spaces between words: ``数据库``
must find ``我们的数据库挂了``. Both stores index trigrams (SQLite's FTS5
``trigram`` tokenizer, PostgreSQL's ``pg_trgm``), which finds a substring of
three characters or more through the index; a term of one or two characters
cannot be looked up so, and is checked against the body of each candidate
instead. A query made only of such short terms scans the newest
:data:`SHORT_QUERY_WINDOW` messages and no further (newest first, unranked):
``你好`` finds recent greetings in a bounded time rather than reading a million
messages.

The cost of a query is bounded the same way: the store takes the newest
:data:`RANK_WINDOW` matches and ranks only those (bm25 on SQLite; on
PostgreSQL, occurrences per length), best first, newer first among equals.
A page is a slice of that ranked list; its cursor (:func:`encode_cursor`)
holds the offset of the next slice and a *pin*, the store's position when
the first page was read, so that messages stored meanwhile do not shift the
pages that follow.

Highlighting (:func:`highlight`) is done here, not by the store, and is the
only place a body becomes HTML: every piece of the body is escaped, and only
the ``<mark>`` tags around matches are ours.
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata

from .errors import BadRequest

__all__ = [
    "SearchQuery", "parse_query", "encode_cursor", "decode_cursor", "highlight",
    "MAX_QUERY_CHARS", "MAX_TERMS", "MIN_INDEXED_CHARS", "RANK_WINDOW", "SHORT_QUERY_WINDOW",
    "SEARCH_LIMIT_DEFAULT", "SEARCH_LIMIT_MAX", "SNIPPET_CHARS",
]

# Longest query, in characters: a search box, not a document.
MAX_QUERY_CHARS = 200
# Most terms in a query: each is one more index lookup (or body check).
MAX_TERMS = 8
# Shortest term the trigram indexes can look up.
MIN_INDEXED_CHARS = 3
# Newest matches ranked per query: bounds the cost of a term that is in half
# the messages (bm25 per match) to well under the 100 ms goal at a million
# messages (docs/performance.md). Also the deepest a cursor reaches.
RANK_WINDOW = 1000
# Newest messages a query of only one- and two-character terms looks through.
SHORT_QUERY_WINDOW = 20_000
# Results per page: default and most.
SEARCH_LIMIT_DEFAULT = 20
SEARCH_LIMIT_MAX = 50
# About how many characters of a long body a snippet shows.
SNIPPET_CHARS = 240

_TERM = re.compile(r'"([^"]*)"|(\S+)')
_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,4})")


@dataclasses.dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed query: its terms, each to be found as a substring (case-insensitive)."""

    terms: tuple[str, ...]

    @property
    def indexed_terms(self) -> tuple[str, ...]:
        """Terms the trigram index can look up (three characters or more)."""
        return tuple(t for t in self.terms if len(t) >= MIN_INDEXED_CHARS)

    @property
    def short_terms(self) -> tuple[str, ...]:
        """Terms checked against each candidate's body instead."""
        return tuple(t for t in self.terms if len(t) < MIN_INDEXED_CHARS)


def _bad(reason: str) -> BadRequest:
    return BadRequest(reason, code="bad_query")


def parse_query(raw: str | None) -> SearchQuery:
    """The ``q`` parameter as terms, or :class:`BadRequest` ``bad_query`` saying why."""
    if raw is None:
        raise _bad("give the words to search for as q=WORDS")
    text = unicodedata.normalize("NFC", raw).strip()
    if not text:
        raise _bad("q is empty: give the words to search for")
    if len(text) > MAX_QUERY_CHARS:
        raise _bad(f"q has {len(text)} characters, more than the limit of {MAX_QUERY_CHARS}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in text):
        raise _bad("q contains control or format characters")
    terms: list[str] = []
    seen: set[str] = set()
    for match in _TERM.finditer(text):
        term = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            terms.append(term)
    if not terms:
        raise _bad("q has no words to search for")
    if len(terms) > MAX_TERMS:
        raise _bad(f"q has {len(terms)} terms, more than the limit of {MAX_TERMS}")
    return SearchQuery(tuple(terms))


def encode_cursor(pin: int, offset: int) -> str:
    """The ``next`` of a page: continue at ``offset`` of the list pinned at ``pin``."""
    return f"{pin}.{offset}"


def decode_cursor(raw: str | None) -> tuple[int | None, int]:
    """``(pin, offset)`` from a cursor a page gave; ``(None, 0)`` for the first page."""
    if raw is None:
        return None, 0
    match = _CURSOR.fullmatch(raw)
    if match is None or int(match.group(2)) >= RANK_WINDOW:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise BadRequest(
            f"cursor {shown!r} is not one a search page gave: pass the 'next' of the page before",
            code="bad_cursor",
        )
    return int(match.group(1)), int(match.group(2))


def _matches(body: str, terms: tuple[str, ...]) -> list[tuple[int, int]]:
    """Merged ``(start, end)`` spans of every term in ``body``, in order."""
    spans: list[tuple[int, int]] = []
    for term in terms:
        pattern = re.compile(re.escape(term), re.IGNORECASE)
        spans.extend(m.span() for m in pattern.finditer(body) if m.end() > m.start())
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def highlight(body: str, terms: tuple[str, ...], *, width: int = SNIPPET_CHARS) -> str:
    """``body`` (or, when longer than ``width``, a window of it around the first
    match, with ``…`` where it was cut) as HTML: escaped, matches in ``<mark>``.

    Safe to insert as HTML whatever the body holds.
    """
    spans = _matches(body, terms)
    start, end = 0, len(body)
    if len(body) > width:
        first = spans[0][0] if spans else 0
        start = max(0, min(first - width // 4, len(body) - width))
        end = start + width
    out: list[str] = ["…"] if start > 0 else []
    position = start
    for span_start, span_end in spans:
        if span_end <= start:
            continue
        if span_start >= end:
            break
        span_start, span_end = max(span_start, start), min(span_end, end)
        out.append(html.escape(body[position:span_start], quote=False))
        out.append(f"<mark>{html.escape(body[span_start:span_end], quote=False)}</mark>")
        position = span_end
    out.append(html.escape(body[position:end], quote=False))
    if end < len(body):
        out.append("…")
    return "".join(out)
