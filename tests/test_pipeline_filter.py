"""Keyword filter: matching rules, masking, rejecting, file format and reloads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.errors import FilterFileError, Rejected
from squall.pipeline.filter import Action, FilterFile, KeywordFilter, parse_terms

WORDS: list[str | tuple[str, Action]] = [
    "ass",
    "heck",
    ("frack", Action.REJECT),
    "傻瓜",
    ("バカ", Action.REJECT),
    "café",
    "strasse",
]


@pytest.fixture(scope="module")
def kf() -> KeywordFilter:
    return KeywordFilter.from_words(WORDS)


MASK_CASES = [
    # (text, masked)
    ("what the heck", "what the ****"),
    ("HECK! Heck, hEcK.", "****! ****, ****."),
    ("ass", "***"),
    ("you ass.", "you ***."),
    ("first-class class", "first-class class"),  # Scunthorpe
    ("assassin", "assassin"),
    ("asses", "asses"),  # whole words only: plural is a different word
    ("_ass", "_ass"),  # underscore joins words
    ("smart-ass", "smart-***"),
    ("ＨＥＣＫ", "****"),  # full-width letters keep their original length
    ("he\u200bck", "*****"),  # zero-width space inside: masked along with the word
    ("h\u00adeck", "*****"),  # soft hyphen
    ("\ufeffheck", "\ufeff****"),  # invisible prefix stays
    ("heck\u2060", "****\u2060"),
    ("他是傻瓜吗", "他是**吗"),  # CJK matches inside a run of text
    ("傻瓜heck", "******"),  # Latin glued to CJK is still a word of its own
    ("cafe\u0301 CAFÉ café", "***** **** ****"),  # decomposed é composes under NFKC
    ("STRASSE Straße", "******* ******"),  # case folding ß → ss
    ("", ""),
    ("nothing to see", "nothing to see"),
]


@pytest.mark.parametrize(("text", "masked"), MASK_CASES)
def test_mask(kf: KeywordFilter, text: str, masked: str) -> None:
    assert kf.mask(text) == masked
    assert len(kf.mask(text)) == len(text)
    assert kf.apply(text) == masked


@pytest.mark.parametrize(
    "text", ["oh frack", "FRACK", "ｆｒａｃｋ", "fr\u200back off", "このバカ", "バカ"]
)
def test_reject(kf: KeywordFilter, text: str) -> None:
    with pytest.raises(Rejected) as info:
        kf.apply(text)
    assert info.value.code == "filtered"
    assert "frack" not in info.value.reason.lower()  # the reason does not echo the term


@pytest.mark.parametrize("text", ["fracking", "refrack", "frack_it"])
def test_reject_is_whole_word_too(kf: KeywordFilter, text: str) -> None:
    assert kf.apply(text) == text


def test_scan_positions_are_original(kf: KeywordFilter) -> None:
    text = "ｈｅｌｌｏ ＨＥＣＫ heck"
    matches = kf.scan(text)
    assert [(text[m.start : m.end], m.action) for m in matches] == [
        ("ＨＥＣＫ", Action.MASK),
        ("heck", Action.MASK),
    ]


def test_ligature_maps_back_to_the_whole_character() -> None:
    f = KeywordFilter.from_words(["fish"])
    assert f.mask("ﬁsh") == "***"  # U+FB01 is two normalised letters, one original


def test_empty_filter() -> None:
    f = KeywordFilter([])
    assert len(f) == 0
    assert f.scan("anything") == []
    assert f.apply("anything") == "anything"


def test_many_terms() -> None:
    f = KeywordFilter.from_words(f"word{i}" for i in range(10_000))
    assert len(f) == 10_000
    assert f.mask("a word9999 b word10000") == "a ******** b word10000"


@given(st.text())
def test_never_raises_and_keeps_length(text: str) -> None:
    f = KeywordFilter.from_words(["ass", "heck", "傻瓜", "ﬁsh", "é"])
    masked = f.mask(text)
    assert len(masked) == len(text)
    assert all(a == b or b == "*" for a, b in zip(text, masked))


@given(st.text(alphabet=st.sampled_from("aAsSＡｓ\u200b\u00ad\u0301 .é傻瓜lc")))
def test_property_on_tricky_alphabet(text: str) -> None:
    f = KeywordFilter.from_words(["ass", "傻瓜", "é"])
    assert len(f.mask(text)) == len(text)


# -- file format -----------------------------------------------------------------


def test_parse_terms() -> None:
    data = (
        "\ufeff# a comment\n"
        "\n"
        "heck\n"
        "frack reject   # trailing comment\n"
        "darn\tmask\n"
        "  ＢＬＡＳＴ  REJECT  \n"
    ).encode()
    terms = parse_terms(data, path="f.txt", default_action=Action.REJECT)
    assert [(t.text, t.action, t.lineno) for t in terms] == [
        ("heck", Action.REJECT, 3),
        ("frack", Action.REJECT, 4),
        ("darn", Action.MASK, 5),
        ("blast", Action.REJECT, 6),
    ]


@pytest.mark.parametrize(
    ("data", "lineno", "words"),
    [
        (b"ok\nheck explode\n", 2, "unknown action"),
        (b"ok\n\n\nbad phrase reject\n", 4, "fields"),
        (b"heck\nHECK mask\n", 2, "already listed on line 1"),
        (b"ok\n\xff\xfe\n", 2, "UTF-8"),
        (b"\xe2\x80\x8b\n", 1, "empty"),
    ],
)
def test_parse_errors_name_the_line(data: bytes, lineno: int, words: str) -> None:
    with pytest.raises(FilterFileError) as info:
        parse_terms(data, path="list.txt", default_action=Action.MASK)
    assert info.value.lineno == lineno
    assert info.value.path == "list.txt"
    assert words in info.value.reason
    assert str(info.value).startswith(f"list.txt:{lineno}: ")


# -- reloading -------------------------------------------------------------------


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    # Explicit mtimes: two writes within one filesystem tick must still differ.
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "filter.txt"
    _write(path, "heck\n", 1_000_000_000)
    ff = FilterFile(path, default_action=Action.MASK, check_interval=10.0)
    assert ff.filter.apply("heck") == "****"

    # Unchanged file: nothing happens.
    assert ff.refresh() is None

    # A good new file replaces the list.
    _write(path, "darn\nfrack reject\n", 2_000_000_000)
    assert ff.refresh() is None
    assert ff.filter.apply("heck darn") == "heck ****"
    with pytest.raises(Rejected):
        ff.filter.apply("frack")

    # A bad new file keeps the old list and reports the line.
    _write(path, "darn\nblast\nheck reject please\n", 3_000_000_000)
    with caplog.at_level(logging.ERROR, logger="squall.pipeline.filter"):
        error = ff.refresh()
    assert error is not None and error.lineno == 3
    assert ff.last_error is error
    assert ff.filter.apply("darn blast") == "**** blast"
    assert any("filter.txt:3" in r.getMessage() for r in caplog.records)
    # Asking again about the same bad file neither re-parses nor logs again.
    caplog.clear()
    assert ff.refresh() is error
    assert not caplog.records

    # The next good file clears the error.
    _write(path, "blast\n", 4_000_000_000)
    assert ff.refresh() is None
    assert ff.last_error is None
    assert ff.filter.apply("darn blast") == "darn *****"


def test_refresh_throttles_by_now_and_force_overrides(tmp_path: Path) -> None:
    path = tmp_path / "filter.txt"
    _write(path, "heck\n", 1_000_000_000)
    ff = FilterFile(path, check_interval=10.0)
    assert ff.refresh(now=100.0) is None
    _write(path, "darn\n", 2_000_000_000)
    assert ff.refresh(now=105.0) is None
    assert ff.filter.apply("darn") == "darn"  # not looked at yet
    assert ff.refresh(now=111.0) is None
    assert ff.filter.apply("darn") == "****"
    # SIGHUP: force re-reads even when the stat looks the same.
    path.write_text("blast\n", encoding="utf-8")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert ff.refresh(now=112.0, force=True) is None
    assert ff.filter.apply("blast") == "*****"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FilterFileError) as info:
        FilterFile(tmp_path / "nope.txt")
    assert info.value.lineno is None
    path = tmp_path / "filter.txt"
    _write(path, "heck\n", 1_000_000_000)
    ff = FilterFile(path)
    path.unlink()
    error = ff.refresh()
    assert error is not None and error.lineno is None
    assert ff.filter.apply("heck") == "****"
