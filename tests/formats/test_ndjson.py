from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats.ndjson import NDJSONDecoder, NDJSONLine, encode_line

from ._driver import cut


def decode(*chunks: bytes) -> list[NDJSONLine]:
    decoder = NDJSONDecoder()
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.flush()


SAMPLE = (
    '{"message":{"content":"Hé"},"done":false}\n'
    '{"message":{"content":"🙂"},"done":false}\r\n'
    "\n"
    "not json\n"
    "[1, 2]\n"
    '{"done":true}'
).encode() + b"\n\xff\n"


def test_lines_values_and_bytes() -> None:
    lines = decode(SAMPLE)
    assert [line.value for line in lines] == [
        {"message": {"content": "Hé"}, "done": False},
        {"message": {"content": "🙂"}, "done": False},
        None,
        None,
        [1, 2],
        {"done": True},
        None,
    ]
    assert b"".join(line.raw for line in lines) == SAMPLE


def test_last_line_without_newline_is_parsed_at_flush() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"done": true}') == []
    assert decoder.flush() == [NDJSONLine(b'{"done": true}', {"done": True})]
    assert decoder.flush() == []


def test_every_single_split_gives_the_same_lines() -> None:
    whole = decode(SAMPLE)
    for at in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:at], SAMPLE[at:]) == whole, at


def test_encode_line() -> None:
    assert encode_line({"a": "é"}) == '{"a":"é"}\n'.encode()
    assert encode_line({"a": "\ud83d"}) == b'{"a":"\\ud83d"}\n'  # a lone surrogate stays valid
    [line] = decode(encode_line({"x": [1, "two"]}))
    assert line.value == {"x": [1, "two"]}


FRAGMENTS = [b"{", b"}", b'"a"', b":", b"1", b",", b"\n", b"\r\n", b" ", "é".encode(),
             "🙂".encode(), b"\xff", b'{"done":true}', b"null"]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60), st.lists(st.integers(0, 300)))
def test_property_any_split(fragments: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(fragments)
    lines = decode(*cut(stream, cuts))
    assert lines == decode(stream)
    assert b"".join(line.raw for line in lines) == stream
    for line in lines:
        try:
            expected = json.loads(line.raw.decode("utf-8"))
        except ValueError:
            expected = None
        assert line.value == expected
