"""squall/http1.py: the long-poll fast path's request heads and responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.http1 import RequestHead, head_end, parse_simple_get, query_params, response


def test_a_plain_get_is_parsed() -> None:
    head = parse_simple_get(
        b"GET /api/rooms/r/messages?since=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
        b"Cookie: a=1\r\ncookie: b=2\r\nAccept:  */* \r\n\r\n"
    )
    assert head is not None
    assert head.target == "/api/rooms/r/messages?since=3"
    assert head.headers == {"host": "x", "authorization": "Bearer t", "cookie": "a=1; b=2", "accept": "*/*"}
    assert head.keep_alive


@pytest.mark.parametrize("raw, keep_alive", [
    (b"GET / HTTP/1.1\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
])
def test_keep_alive_follows_the_version_and_connection_header(raw: bytes, keep_alive: bool) -> None:
    head = parse_simple_get(raw)
    assert head is not None and head.keep_alive is keep_alive


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\n\r\n",
    b"get / HTTP/1.1\r\n\r\n",
    b"GET http://host/ HTTP/1.1\r\n\r\n",  # absolute form: Tornado's to judge
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET /a b HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",  # obsolete line folding
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",  # a bare line feed
    b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",  # a body: Tornado reads it
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\n\r\n",
])
def test_anything_but_a_plain_get_is_left_to_tornado(raw: bytes) -> None:
    assert parse_simple_get(raw) is None


def test_a_get_without_a_body_is_served_whatever_it_expects() -> None:
    head = parse_simple_get(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert head is not None and not head.has_body and head.refusal is None


def test_a_body_is_noted_for_whoever_reads_it() -> None:
    head = RequestHead.from_fields("/", 1, [("Content-Length", "5"), ("Expect", "100-continue")])
    assert head is not None and head.has_body and head.refusal is None
    chunked = RequestHead.from_fields("/", 1, [("Transfer-Encoding", "chunked")])
    assert chunked is not None and chunked.has_body


def test_identical_repeated_credentials_are_one() -> None:
    head = parse_simple_get(
        b"GET / HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 0\r\n"
        b"authorization: Bearer t\r\nContent-Length: 0\r\n\r\n"
    )
    assert head is not None and head.refusal is None
    assert head.headers == {"authorization": "Bearer t", "content-length": "0"}


@pytest.mark.parametrize("raw, refusal", [
    (b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
     "the request has Authorization headers with different values"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "the request has more than one Host header"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "the request has more than one Host header"),
])
def test_conflicting_single_headers_are_refused(raw: bytes, refusal: str) -> None:
    head = parse_simple_get(raw)
    assert head is not None and head.refusal == refusal


def test_head_end_finds_the_blank_line() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == -1
    assert head_end(bytearray(b"GET / HTTP/1.1\r\n\r\nGET")) == 18


def test_query_params_decode_and_keep_the_last_value() -> None:
    assert query_params("") == {}
    assert query_params("since=3&wait=&since=4&q=a+b%21&=x&flag") == {
        "since": "4", "wait": "", "q": "a b!", "flag": "",
    }


def test_response_has_its_length_and_close_when_asked() -> None:
    kept = response(200, b'{"a":1}', keep_alive=True)
    assert kept.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 7\r\n" in kept and b"Connection" not in kept
    assert kept.endswith(b'\r\n\r\n{"a":1}')
    closed = response(401, b"{}", keep_alive=False)
    assert closed.startswith(b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n")


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@given(st.dictionaries(_token.filter(lambda n: n not in ("content-length", "transfer-encoding", "expect")),
                       _value, max_size=8),
       st.text(alphabet="abc=&%+0123456789", max_size=30))
def test_well_formed_gets_round_trip(headers: dict[str, str], query: str) -> None:
    raw = f"GET /p?{query} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers.items()) + "\r\n"
    head = parse_simple_get(raw.encode())
    assert head is not None
    assert head.target == f"/p?{query}"
    assert head.headers == headers
    assert head_end(raw.encode() + b"next") == len(raw)
