"""The processor link's framing without I/O: bytes in, lines out."""

from __future__ import annotations

import pytest

from squall.errors import LineTooLong
from squall.lines import Line, LineReader, encode_line


def values(lines: list[Line]) -> list[object]:
    return [line.value for line in lines]


def test_one_line() -> None:
    reader = LineReader()
    assert reader.receive_data(b'{"op":"ping"}\n') == [Line({"op": "ping"})]
    assert reader.buffered == 0


def test_line_split_across_chunks() -> None:
    reader = LineReader()
    assert reader.receive_data(b'{"op":') == []
    assert reader.buffered == 6
    assert reader.receive_data(b'"pi') == []
    assert values(reader.receive_data(b'ng"}\n')) == [{"op": "ping"}]
    assert reader.buffered == 0


def test_every_split_point_gives_the_same_lines() -> None:
    data = b'{"a":1}\n{"b":"\xc3\xa9"}\n\n{"c":[1,2]}\n'
    for cut in range(len(data) + 1):
        reader = LineReader()
        lines = reader.receive_data(data[:cut]) + reader.receive_data(data[cut:])
        assert values(lines) == [{"a": 1}, {"b": "é"}, {"c": [1, 2]}], cut


def test_many_lines_in_one_chunk_keep_their_order() -> None:
    reader = LineReader()
    chunk = b"".join(encode_line({"ref": i}) for i in range(100))
    assert values(reader.receive_data(chunk)) == [{"ref": i} for i in range(100)]


def test_a_partial_line_waits_for_the_rest() -> None:
    reader = LineReader()
    assert values(reader.receive_data(b'{"a":1}\n{"b":')) == [{"a": 1}]
    assert reader.buffered == len(b'{"b":')
    assert values(reader.receive_data(b"2}\n")) == [{"b": 2}]


@pytest.mark.parametrize("blank", [b"\n", b"\n\n\n", b"   \n", b"\r\n", b" \t \n"])
def test_blank_lines_are_skipped(blank: bytes) -> None:
    reader = LineReader()
    assert reader.receive_data(blank + b'{"a":1}\n' + blank) == [Line({"a": 1})]


def test_crlf_line_endings_are_accepted() -> None:
    assert values(LineReader().receive_data(b'{"a":1}\r\n{"b":2}\r\n')) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("raw", [b"not json", b"{", b'{"a":}', b"\xff\xfe", b"{'a': 1}"])
def test_bad_json_is_a_line_with_an_error(raw: bytes) -> None:
    reader = LineReader()
    [line] = reader.receive_data(raw + b"\n")
    assert line.value is None
    assert line.error is not None and "not valid JSON" in line.error


@pytest.mark.parametrize("raw", [b"[1,2]", b"42", b'"op"', b"null", b"true"])
def test_json_that_is_not_an_object_is_a_line_with_an_error(raw: bytes) -> None:
    [line] = LineReader().receive_data(raw + b"\n")
    assert line == Line(None, "line must be a JSON object")


def test_a_bad_line_does_not_spoil_its_neighbours() -> None:
    lines = LineReader().receive_data(b'{"a":1}\nnope\n{"b":2}\n')
    assert [line.value for line in lines] == [{"a": 1}, None, {"b": 2}]
    assert lines[1].error is not None


def test_a_line_of_exactly_max_line_bytes_is_accepted() -> None:
    reader = LineReader(max_line=20)
    line = b'{"p":"' + b"x" * 12 + b'"}'
    assert len(line) == 20
    assert values(reader.receive_data(line + b"\n")) == [{"p": "x" * 12}]


def test_overlong_complete_line_sets_overflow() -> None:
    reader = LineReader(max_line=20)
    assert reader.receive_data(b'{"p":"' + b"x" * 13 + b'"}\n') == []
    assert reader.overflow is not None
    assert reader.overflow.limit == 20
    assert reader.overflow.size == 21
    assert "21 bytes exceeds limit of 20 bytes" in str(reader.overflow)
    with pytest.raises(LineTooLong):
        reader.receive_data(b"{}\n")  # the stream is over


def test_overlong_partial_line_overflows_before_its_newline_arrives() -> None:
    # Without this, a peer that never sends a newline would grow the buffer forever.
    reader = LineReader(max_line=20)
    reader.receive_data(b"x" * 20)
    assert reader.overflow is None
    assert reader.receive_data(b"x") == []
    assert reader.overflow is not None
    assert reader.buffered == 0


def test_lines_before_an_overlong_one_in_the_same_chunk_are_returned() -> None:
    reader = LineReader(max_line=20)
    assert values(reader.receive_data(b'{"a":1}\n' + b"y" * 30 + b"\n{}\n")) == [{"a": 1}]
    assert reader.overflow is not None


def test_default_limit_is_64_kib() -> None:
    assert LineReader().max_line == 64 * 1024


def test_encode_line_round_trips() -> None:
    value = {"op": "process", "body": "line one\nline two", "n": 3}
    data = encode_line(value)
    assert data.endswith(b"\n") and data.count(b"\n") == 1  # the body's newline is escaped
    assert LineReader().receive_data(data) == [Line(value)]
