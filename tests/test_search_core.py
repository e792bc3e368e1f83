"""squall/search.py without I/O: the query, the ranking, the cursor, the highlight."""

from __future__ import annotations

import pytest

from squall.errors import BadRequest
from squall.search import (
    MAX_QUERY_CHARS, RANK_WINDOW, Candidate, decode_cursor, encode_cursor, highlight, parse_query, rank,
)


def test_terms_are_words_or_quoted_phrases_each_once() -> None:
    assert parse_query('  deploy "the release"  Deploy 数据库 ').terms == ("deploy", "the release", "数据库")
    query = parse_query("ok 你好 database")
    assert query.indexed_terms == ("database",) and query.short_terms == ("ok", "你好")
    # NFC: a decomposed é is the é people type.
    assert parse_query("re\u0301sume\u0301").terms == ("résumé",)


@pytest.mark.parametrize("raw", [None, "", "   ", '""', "x" * (MAX_QUERY_CHARS + 1), "a\u202eb", "a\x07"])
def test_queries_that_cannot_be_run_are_refused(raw: str | None) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_query(raw)
    assert refused.value.code == "bad_query"


def test_rank_prefers_frequent_terms_in_short_messages_then_newer() -> None:
    newest_first = [
        Candidate("r", 4, "deploy"),
        Candidate("r", 3, "a long message that mentions deploy once among many other words"),
        Candidate("r", 2, "deploy deploy deploy"),
        Candidate("r", 1, "deploy"),
    ]
    assert [c.seq for c in rank(newest_first, ["deploy"])] == [2, 4, 1, 3]


def test_rank_weighs_rare_terms_above_common_ones() -> None:
    candidates = [Candidate("r", 2, "the the the rollback"), Candidate("r", 1, "the rollback rollback")]
    common_the = rank(candidates, ["the", "rollback"], share={"the": 0.9, "rollback": 0.01})
    assert [c.seq for c in common_the] == [1, 2]
    rare_the = rank(candidates, ["the", "rollback"], share={"the": 0.01, "rollback": 0.9})
    assert [c.seq for c in rare_the] == [2, 1]


def test_cursors_round_trip_and_nothing_else_passes() -> None:
    assert decode_cursor(None) == (None, 0)
    assert decode_cursor(encode_cursor(123, 40)) == (123, 40)
    for bad in ["", "1", "a.b", "1.2.3", f"1.{RANK_WINDOW}", "-1.2", "1." + "9" * 5]:
        with pytest.raises(BadRequest) as refused:
            decode_cursor(bad)
        assert refused.value.code == "bad_cursor"


def test_highlight_escapes_everything_and_marks_every_match() -> None:
    assert highlight("<b>Deploy</b> & deploy", ("deploy",)) == (
        "&lt;b&gt;<mark>Deploy</mark>&lt;/b&gt; &amp; <mark>deploy</mark>"
    )
    # Overlapping terms make one mark.
    assert highlight("database", ("data", "tabase")) == "<mark>database</mark>"
    assert highlight("我们的数据库挂了", ("数据库",)) == "我们的<mark>数据库</mark>挂了"
    assert highlight("nothing here", ("zzz",)) == "nothing here"


def test_a_long_body_is_cut_around_its_first_match() -> None:
    body = "a" * 500 + " needle " + "b" * 500
    snippet = highlight(body, ("needle",), width=100)
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "<mark>needle</mark>" in snippet
    assert len(snippet.replace("<mark>", "").replace("</mark>", "")) == 102


def test_may_read_is_the_one_access_hook() -> None:
    """Until private rooms land there is no node.access: every room but the
    canary's is readable. Once a node has one, its verdict is search's."""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from squall.errors import Forbidden
    from squall.web.search import may_read

    class Members:  # stands in for the rooms feature's check, which does not exist yet
        async def may_read(self, room: str, key: str) -> None:
            if room == "private" and key != "owner":
                raise Forbidden("you are not a member of room 'private'", code="not_member")

    async def verdict(node: Any, room: str, key: str) -> str:
        try:
            await may_read(node, room, key)
        except Forbidden as refused:
            return refused.code
        return "ok"

    bare, guarded = SimpleNamespace(), SimpleNamespace(access=Members())
    assert asyncio.run(verdict(bare, "private", "anyone")) == "ok"
    assert asyncio.run(verdict(bare, "_canary", "anyone")) == "forbidden"
    assert asyncio.run(verdict(guarded, "private", "anyone")) == "not_member"
    assert asyncio.run(verdict(guarded, "private", "owner")) == "ok"
    assert asyncio.run(verdict(guarded, "lobby", "anyone")) == "ok"


def test_the_index_looks_up_a_bounded_part_of_the_query() -> None:
    """Long terms are looked up by their first 12 characters and checked whole;
    past 24 trigrams a term is only checked against the bodies."""
    query = parse_query('"the the the the the the" release ab 数据库')
    assert query.lookups == {"the the the the the the": "the the the ", "release": "release", "数据库": "数据库"}
    assert query.body_checks == ("the the the the the the", "ab")
    crowded = parse_query("abcdefghijkl bcdefghijklm cdefghijklmn defghijklmno")
    assert list(crowded.lookups) == ["abcdefghijkl", "bcdefghijklm"]  # 10 trigrams each, budget 24
    assert crowded.body_checks == ("cdefghijklmn", "defghijklmno")
