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
:data:`SHORT_QUERY_WINDOW` messages and no further:
``你好`` finds recent greetings in a bounded time rather than reading a million
messages.

The cost of a query is bounded the same way: the store hands over the newest
:data:`RANK_WINDOW` matches, newest first, and :func:`rank` orders only those
by Okapi bm25, best first, newer first among equals. Squall computes bm25
itself rather than asking SQLite's ``bm25()``: that function learns each
term's inverse document frequency by counting *every* message holding it —
50,000 of a million for a common word, most of a search's time — where Squall
estimates it from how far back the term's newest :data:`SHARE_SAMPLE`
occurrences reach (the store numbers messages in order). PostgreSQL gives no
estimate; its terms weigh the same. A page is a slice of the ranked list; its
cursor (:func:`encode_cursor`) holds the offset of the next slice and a *pin*,
the store's position when the first page was read, so that messages stored
meanwhile do not shift the pages that follow.

Highlighting (:func:`highlight`) is done here, not by the store, and is the
only place a body becomes HTML: every piece of the body is escaped, and only
the ``<mark>`` tags around matches are ours.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence

from .errors import BadRequest

__all__ = [
    "SearchQuery", "Candidate", "parse_query", "rank", "encode_cursor", "decode_cursor", "highlight",
    "MAX_QUERY_CHARS", "MAX_TERMS", "MIN_INDEXED_CHARS", "MAX_INDEXED_TERM_CHARS", "MAX_INDEXED_TRIGRAMS",
    "contains", "RANK_WINDOW", "SHORT_QUERY_WINDOW", "SHARE_SAMPLE",
    "SEARCH_LIMIT_DEFAULT", "SEARCH_LIMIT_MAX", "SNIPPET_CHARS",
]

# Longest query, in characters: a search box, not a document.
MAX_QUERY_CHARS = 200
# Most terms in a query: each is one more index lookup (or body check).
MAX_TERMS = 8
# Shortest term the trigram indexes can look up.
MIN_INDEXED_CHARS = 3
# The index looks up at most this many characters of a term (its first ones),
# and at most MAX_INDEXED_TRIGRAMS trigrams for a whole query; the rest is
# checked against the bodies of what it found. A phrase costs the index about
# (messages holding all its trigrams) x (its length): a 200-character phrase
# of the commonest trigrams ("the the the …") took 1.6 s of CPU at a million
# messages; cut to 12 characters, milliseconds.
MAX_INDEXED_TERM_CHARS = 12
MAX_INDEXED_TRIGRAMS = 24
# Newest matches ranked per query: bounds the cost of a term that is in half
# the messages (bm25 per match) to well under the 100 ms goal at a million
# messages (docs/performance.md). Also the deepest a cursor reaches.
RANK_WINDOW = 500
# Newest messages a query of only one- and two-character terms looks through:
# each costs a look-up of its body (about 30 ms for 10,000 on the bench machine).
SHORT_QUERY_WINDOW = 10_000
# Newest occurrences of a term that estimate how common it is (its IDF).
SHARE_SAMPLE = 200
# bm25's constants, as SQLite's FTS5 and Lucene have them.
BM25_K1 = 1.2
BM25_B = 0.75
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
        """Terms too short for the index."""
        return tuple(t for t in self.terms if len(t) < MIN_INDEXED_CHARS)

    @property
    def lookups(self) -> dict[str, str]:
        """What the index looks up, by term: each indexed term's first
        :data:`MAX_INDEXED_TERM_CHARS` characters, within the query's budget of
        :data:`MAX_INDEXED_TRIGRAMS` (longest terms first: they narrow most)."""
        chosen: dict[str, str] = {}
        budget = MAX_INDEXED_TRIGRAMS
        for term in sorted(self.indexed_terms, key=len, reverse=True):
            piece = term[:MAX_INDEXED_TERM_CHARS]
            if len(piece) - 2 <= budget:
                chosen[term] = piece
                budget -= len(piece) - 2
        return chosen

    @property
    def body_checks(self) -> tuple[str, ...]:
        """Terms the index does not settle, to check against each candidate's body."""
        lookups = self.lookups
        return tuple(t for t in self.terms if lookups.get(t) != t)


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """A message that matched, with what ranking needs: its place and its body."""

    room: str
    seq: int
    body: str


def contains(body: str, term: str) -> bool:
    """Whether ``body`` holds ``term``, ignoring case (Unicode case folding)."""
    return term.casefold() in body.casefold()


def rank(
    candidates: Sequence[Candidate], terms: Sequence[str], *, share: Mapping[str, float] | None = None
) -> list[Candidate]:
    """``candidates`` (newest first) best first by Okapi bm25, newer first among equals.

    A term's frequency in a message is how often it occurs in it (ignoring
    case), the message's length is counted in characters, the average length
    is the candidates'. ``share`` is the store's estimate of the fraction of
    all messages holding each term, for its inverse document frequency
    (``ln(1 / share)``); without it every term weighs the same.
    """
    if not candidates:
        return []
    patterns = [re.compile(re.escape(term), re.IGNORECASE) for term in terms]
    weights = [_idf((share or {}).get(term)) for term in terms]
    average = sum(len(c.body) for c in candidates) / len(candidates) or 1.0
    scores = []
    for candidate in candidates:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(candidate.body) / average)
        score = 0.0
        for pattern, weight in zip(patterns, weights, strict=True):
            tf = sum(1 for _ in pattern.finditer(candidate.body))
            score += weight * tf * (BM25_K1 + 1) / (tf + norm)
        scores.append(score)
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])  # stable: newest first among equals
    return [candidates[i] for i in order]


def _idf(share: float | None) -> float:
    if share is None:
        return 1.0
    # bm25's ln((N - n + 0.5) / (n + 0.5) + 1) for large N; a term in every
    # message still counts a little, so that its frequency still ranks.
    return max(0.01, -math.log(min(1.0, max(share, 1e-9))))


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
