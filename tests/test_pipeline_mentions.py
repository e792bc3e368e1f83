"""Mentions: found in prose only, case-insensitive, marked safely in the HTML."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.pipeline.mentions import Candidates, find_mentions, mark_mentions
from squall.pipeline.richtext import Renderer


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


USERS = {"bob": "Bob", "张三": "张三", "alice.w": "Alice.W", "o-ren": "O-Ren", "x_y": "x_y"}


@pytest.mark.parametrize(
    ("body", "keys", "room"),
    [
        ("hi @bob", ("bob",), False),
        ("hi @Bob and @BOB and @bob", ("bob",), False),
        ("@张三 你好", ("张三",), False),
        ("@Ünïcödé!", ("ünïcödé",), False),
        ("thanks @bob.", ("bob",), False),
        ("ping @alice.w, @o-ren; @x_y?", ("alice.w", "o-ren", "x_y"), False),
        ("mail bob@example.com", (), False),
        ("see https://example.com/@bob", (), False),
        ("see www.example.com/@bob", (), False),
        ("see ftp://example.com/@bob", (), False),
        ("`@bob`", (), False),
        ("```\n@bob\n```", (), False),
        ("    @bob in indented code", (), False),
        ("[@bob](https://example.com)", (), False),
        ("@room look", (), True),
        ("@ROOM look", (), True),
        ("@@bob", (), False),
        ("a/@bob", (), False),
        ("@" + "a" * 32, ("a" * 32,), False),
        ("@" + "a" * 33, (), False),
        ("@ alone", (), False),
        ("**@bob**", ("bob",), False),
        ("> @bob", ("bob",), False),
        ("(@bob)", ("bob",), False),
    ],
)
def test_find(renderer: Renderer, body: str, keys: tuple[str, ...], room: bool) -> None:
    assert find_mentions(renderer.to_html(body)) == Candidates(keys, room)


def test_room_can_be_disabled(renderer: Renderer) -> None:
    html = renderer.to_html("@room hi")
    assert find_mentions(html, allow_room=False) == Candidates(("room",), False)
    marked = mark_mentions(html, {}, allow_room=False)
    assert marked.html == html and not marked.room


def test_mark(renderer: Renderer) -> None:
    html = renderer.to_html("@bob, @BOB, @nobody, @张三 and `@bob` <https://x.example/@bob>")
    marked = mark_mentions(html, USERS)
    assert marked.mentions == ("Bob", "张三")
    assert marked.html == (
        '<p><span class="mention" data-nick="Bob">@bob</span>, '
        '<span class="mention" data-nick="Bob">@BOB</span>, @nobody, '
        '<span class="mention" data-nick="张三">@张三</span> and <code>@bob</code> '
        '<a href="https://x.example/@bob" target="_blank" rel="nofollow noopener noreferrer">'
        "https://x.example/@bob</a></p>\n"
    )


def test_unknown_users_are_not_listed(renderer: Renderer) -> None:
    marked = mark_mentions(renderer.to_html("@ghost @bob"), USERS)
    assert marked.mentions == ("Bob",)
    assert marked.html.startswith('<p>@ghost <span class="mention" data-nick="Bob">')


def test_room(renderer: Renderer) -> None:
    html = renderer.to_html("@room and @bob")
    marked = mark_mentions(html, USERS, room_members=["Carol", "Bob"])
    assert marked.room
    assert marked.mentions == ("Bob", "Carol")
    assert '<span class="mention mention-room">@room</span>' in marked.html
    assert mark_mentions(html, USERS).mentions == ("Bob",)


def test_marking_keeps_text_escaped(renderer: Renderer) -> None:
    html = renderer.to_html("<b>@bob</b> & \"@bob\"")
    marked = mark_mentions(html, {"bob": 'B"<o>'})
    assert "<b>" not in marked.html
    assert 'data-nick="B&quot;&lt;o&gt;"' in marked.html
    assert "&lt;b&gt;" in marked.html and "&amp;" in marked.html


@given(st.text(alphabet=st.sampled_from("@abBé张_-.`*[]()/:\n <>&\"'wm")))
def test_never_raises(body: str) -> None:
    html = Renderer().to_html(body)
    found = find_mentions(html)
    marked = mark_mentions(html, {k: k.upper() for k in found.keys})
    assert set(marked.mentions) == {k.upper() for k in found.keys}
