"""Keyword filter: mask or refuse messages that contain listed terms.

Theory of operation
-------------------

The list lives in a UTF-8 text file, one term per line::

    # comments start with "#" at the start of a line or after whitespace
    darn                 # no action: the caller's default applies
    heck      mask       # replace the word with "*" characters
    frack     reject     # refuse the whole message
    傻瓜      reject

A line holds one or two whitespace-separated fields (spaces or tabs): the term,
then optionally ``mask`` or ``reject``. A term is a single word; phrases are not
supported (a third field is an error, so a typo in an action cannot silently turn
into a term). Terms are normalised like the text (below); a term listed twice, an
unknown action, a term that normalises to nothing or bytes that are not UTF-8 are
errors, reported as :class:`~squall.errors.FilterFileError` with the line number.

Matching runs on a *normalised copy* of the text: each base character together
with its combining marks is put through NFKC, case-folded and NFKC'd again (so
full-width ``ＡＢＣ`` matches ``abc`` and ``Straße`` matches ``strasse``), and the
invisible characters U+200B–U+200D, U+2060, U+FEFF and U+00AD are dropped. Every
normalised character remembers the span of original characters it came from, so
masking can star out *the original characters*, and the masked string always has
exactly the length of the original.

Terms written in scripts that do not separate words by spaces (Han, kana, Hangul,
Thai, Lao, Khmer, Myanmar) match anywhere. All other terms match whole words only:
the neighbouring characters must not be letters, digits or ``_`` — so ``ass`` does
not hit ``class`` or ``assassin`` (the Scunthorpe problem). Evasions such as
``a.s.s`` or look-alike letters from other scripts are not caught; that is a
moderator's job, not a regex's.

All terms go into one Aho–Corasick automaton (``pyahocorasick``), so a scan costs
about the same for ten thousand terms as for ten.

A rejected message raises :class:`~squall.errors.Rejected` with code ``filtered``
and a reason that does *not* echo the term: the sender knows what they wrote, and
the reason may be shown or logged where the word should not be repeated.

Masking and HTML: the processor must run the filter on the body *before* rendering
rich text, so the HTML is rendered from the masked body and never contains a
filtered term.

Reloading: :class:`FilterFile` holds the compiled filter for a path. Call
:meth:`FilterFile.refresh` on every message (it stats the file at most once per
``check_interval`` seconds of the ``now`` you pass) and ``refresh(force=True)``
on SIGHUP. A file that fails to parse leaves the previous list in force; the error
is logged and returned.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import unicodedata
from collections.abc import Iterable, Sequence

import ahocorasick  # type: ignore[import-not-found]  # ships no stubs

from squall.errors import FilterFileError, Rejected

__all__ = [
    "Action",
    "Term",
    "Match",
    "KeywordFilter",
    "FilterFile",
    "parse_terms",
    "normalise",
    "REJECT_REASON",
]

log = logging.getLogger(__name__)

# Zero-width space/non-joiner/joiner, word joiner, BOM, soft hyphen: invisible in
# rendering, so they are the cheapest way to slip a word past a naive filter.
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")

# Unicode name prefixes of scripts written without spaces between words; a term
# containing any of these characters matches anywhere, not only as a whole word.
_UNSPACED_SCRIPTS = (
    "CJK ",
    "HIRAGANA",
    "KATAKANA",
    "HANGUL",
    "THAI",
    "LAO",
    "KHMER",
    "MYANMAR",
    "IDEOGRAPHIC",
)

REJECT_REASON = "your message contains a word that is not allowed here"


class Action(enum.Enum):
    MASK = "mask"
    REJECT = "reject"


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """One listed term, already normalised, with its action and source line."""

    text: str
    action: Action
    lineno: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """A hit, as ``text[start:end]`` of the *original* text."""

    term: str
    action: Action
    start: int
    end: int


def _unspaced(ch: str) -> bool:
    if ch.isascii():
        return False
    return unicodedata.name(ch, "").startswith(_UNSPACED_SCRIPTS)


def _wordish(ch: str) -> bool:
    # A neighbour that makes a match "inside a word". Characters of unspaced
    # scripts don't count: "你好ass" has "ass" as a word of its own.
    return (ch.isalnum() or ch == "_") and not _unspaced(ch)


def _fold(chunk: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", chunk).casefold())


def normalise(text: str) -> tuple[str, Sequence[int]]:
    """Return the normalised text and, per normalised character, its original index.

    The map has one extra final entry, ``len(text)``, so that the end of a match
    at normalised position ``e`` maps to an original end boundary. A normalised
    character that came from a group (a base character and its combining marks,
    or a ligature) maps to the group's first index; see :func:`_original_end`.
    """
    if text.isascii():
        # Fast path for most chat lines: ASCII lower-casing keeps every index,
        # so the map is the identity (a range: no list to build).
        return text.lower(), range(len(text) + 1)
    out: list[str] = []
    starts: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _INVISIBLE:
            i += 1
            continue
        j = i + 1
        # Keep combining marks with their base so NFKC can compose "e\u0301" to "é".
        while j < n and (unicodedata.combining(text[j]) or text[j] in _INVISIBLE):
            j += 1
        group = "".join(c for c in text[i:j] if c not in _INVISIBLE)
        for folded in _fold(group):
            out.append(folded)
            starts.append(i)
        i = j
    starts.append(n)
    return "".join(out), starts


def _original_end(starts: Sequence[int], text: str, norm_end: int) -> int:
    # The original end of normalised character norm_end-1 is the start of the
    # next *different* group; invisible characters after it stay unmasked.
    first = starts[norm_end - 1]
    for k in range(norm_end, len(starts)):
        if starts[k] != first:
            end = starts[k]
            while end > first + 1 and text[end - 1] in _INVISIBLE:
                end -= 1
            return end
    return len(text)


def _parse_action(word: str, path: str, lineno: int) -> Action:
    try:
        return Action(word.lower())
    except ValueError:
        raise FilterFileError(
            path, lineno, f"unknown action {word!r}; expected 'mask' or 'reject'"
        ) from None


def parse_terms(data: bytes, *, path: str, default_action: Action) -> list[Term]:
    """Parse the contents of a filter file; raise FilterFileError naming the line.

    ``path`` is only used in error messages. See the module docstring for the format.
    """
    terms: list[Term] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FilterFileError(path, lineno, f"not valid UTF-8 ({exc.reason})") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        fields: list[str] = []
        for field in line.split():
            if field.startswith("#"):
                break
            fields.append(field)
        if not fields:
            continue
        if len(fields) > 2:
            raise FilterFileError(
                path, lineno, f"expected 'term [mask|reject]', got {len(fields)} fields"
            )
        action = _parse_action(fields[1], path, lineno) if len(fields) == 2 else default_action
        norm, _ = normalise(fields[0])
        if not norm:
            raise FilterFileError(path, lineno, "term is empty once invisible characters go")
        if norm in seen:
            raise FilterFileError(
                path, lineno, f"term {fields[0]!r} is already listed on line {seen[norm]}"
            )
        seen[norm] = lineno
        terms.append(Term(norm, action, lineno))
    return terms


class KeywordFilter:
    """An immutable compiled term list.

    Build it once per list (``KeywordFilter(terms)``), then call :meth:`apply` on
    each message body, or :meth:`scan` / :meth:`mask` separately. Safe to share.
    """

    __slots__ = ("_automaton", "_size")

    def __init__(self, terms: Iterable[Term]) -> None:
        automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        size = 0
        for term in terms:
            whole_word = not any(_unspaced(c) for c in term.text)
            automaton.add_word(term.text, (term.text, term.action, whole_word))
            size += 1
        if size:
            automaton.make_automaton()
        self._automaton = automaton
        self._size = size

    @classmethod
    def from_words(
        cls, words: Iterable[str | tuple[str, Action]], *, default_action: Action = Action.MASK
    ) -> KeywordFilter:
        """Build from plain words or ``(word, action)`` pairs; handy for tests and config."""
        terms = []
        for item in words:
            word, action = (item, default_action) if isinstance(item, str) else item
            terms.append(Term(normalise(word)[0], action))
        return cls(t for t in terms if t.text)

    def __len__(self) -> int:
        return self._size

    def scan(self, text: str) -> list[Match]:
        """Return every hit in ``text``, ordered by start, with original positions."""
        if not self._size or not text:
            return []
        norm, starts = normalise(text)
        matches: list[Match] = []
        for end_index, (term, action, whole_word) in self._automaton.iter(norm):
            end = end_index + 1
            begin = end - len(term)
            if whole_word and (
                (begin > 0 and _wordish(term[0]) and _wordish(norm[begin - 1]))
                or (end < len(norm) and _wordish(term[-1]) and _wordish(norm[end]))
            ):
                continue
            matches.append(Match(term, action, starts[begin], _original_end(starts, text, end)))
        matches.sort(key=lambda m: (m.start, m.end))
        return matches

    def mask(self, text: str, matches: Sequence[Match] | None = None) -> str:
        """Replace every hit's original characters with ``*``; the length is kept."""
        if matches is None:
            matches = self.scan(text)
        if not matches:
            return text
        chars = list(text)
        for m in matches:
            chars[m.start : m.end] = "*" * (m.end - m.start)
        return "".join(chars)

    def apply(self, text: str) -> str:
        """Return ``text`` with mask-terms starred; raise Rejected on a reject-term.

        Call this on the message body before rendering it.
        """
        matches = self.scan(text)
        if any(m.action is Action.REJECT for m in matches):
            raise Rejected(REJECT_REASON, code="filtered")
        return self.mask(text, matches)


@dataclasses.dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class FilterFile:
    """A :class:`KeywordFilter` loaded from a file, reloaded when the file changes.

    The first load happens in the constructor and raises FilterFileError: a bad
    list at start-up should stop the server (the caller turns it into ConfigError).
    Later loads never raise; see :meth:`refresh`.

    :param path: the filter file.
    :param default_action: action for terms without one.
    :param check_interval: seconds between two stats of the file when ``refresh``
        is given a ``now``; default 2.0.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        default_action: Action = Action.MASK,
        check_interval: float = 2.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.default_action = default_action
        self.check_interval = check_interval
        self.logger = logger or log
        self.last_error: FilterFileError | None = None
        self._checked_at: float | None = None
        self._bad_stamp: _Stamp | None = None
        self._stamp, self._filter = self._load()

    @property
    def filter(self) -> KeywordFilter:
        """The list in force."""
        return self._filter

    def _stat(self) -> _Stamp:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise FilterFileError(self.path, None, f"cannot stat: {exc.strerror}") from None
        return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, stamp: _Stamp | None = None) -> tuple[_Stamp, KeywordFilter]:
        stamp = stamp or self._stat()
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise FilterFileError(self.path, None, f"cannot read: {exc.strerror}") from None
        terms = parse_terms(data, path=self.path, default_action=self.default_action)
        return stamp, KeywordFilter(terms)

    def refresh(self, *, now: float | None = None, force: bool = False) -> FilterFileError | None:
        """Reload the file if it changed; return the error if the new file is bad.

        With ``now`` (any monotonic seconds), the file is stat'ed at most once per
        ``check_interval``; without it, every call stats. ``force=True`` (SIGHUP)
        re-reads even if the file looks unchanged. On error the old list stays in
        force, the error is logged once per version of the file and kept in
        :attr:`last_error`, and the same bad version is not parsed again; the
        next good file clears it.
        """
        if not force and now is not None and self._checked_at is not None:
            if now - self._checked_at < self.check_interval:
                return self.last_error
        self._checked_at = now
        try:
            stamp = self._stat()
            if not force and stamp in (self._stamp, self._bad_stamp):
                return self.last_error
            self._bad_stamp = stamp
            stamp, new = self._load(stamp)
        except FilterFileError as exc:
            self.logger.error("keeping previous filter list: %s", exc)
            self.last_error = exc
            return exc
        self._stamp, self._filter, self._bad_stamp = stamp, new, None
        self.last_error = None
        self.logger.info("filter list loaded: %d terms from %s", len(new), self.path)
        return None
