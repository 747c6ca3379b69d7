from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.formats.sse import SSEDecoder, SSEEvent, encode_event

from ._driver import cut


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


def dispatched(events: list[SSEEvent]) -> list[tuple[str, str, str | None, int | None]]:
    return [(e.type, e.data, e.id, e.retry) for e in events if e.data is not None]


def reference(stream: bytes) -> list[tuple[str, str, str | None, int | None]]:
    """A deliberately naive, whole-input reading of the WHATWG algorithm, as an oracle."""
    text = stream.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    lines.pop()  # the text after the last line end is not a line
    out = []
    event, data, id_, retry = None, None, None, None
    for line in lines:
        if line == "":
            if data is not None:
                out.append((event or "message", "\n".join(data), id_, retry))
            event, data, id_, retry = None, None, None, None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data = (data or []) + [value]
        elif name == "id" and "\0" not in value:
            id_ = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return out


SAMPLE = (
    "\ufeff: keep-alive\r\n\r\n"
    "event: greeting\r\ndata: héllo\r\ndata:  wörld 🙂\r\nid: 7\r\nretry: 1500\r\n\r\n"
    "data\rdata:\r\r"
    'foo: bar\nnonsense line\ndata: {"a": 1}\n\n'
    "event: only-a-type\n\n"
    "id: a\0b\nretry: 12x\ndata: x\n\n"
    "data: no end"
).encode("utf-8")


def test_fields_and_line_ends() -> None:
    events = decode(SAMPLE)
    assert dispatched(events) == [
        ("greeting", "héllo\n wörld 🙂", "7", 1500),
        ("message", "\n", None, None),
        ("message", '{"a": 1}', None, None),
        ("message", "x", None, None),
    ]
    assert dispatched(events) == reference(SAMPLE)


def test_undispatched_blocks_and_rest_keep_their_bytes() -> None:
    events = decode(SAMPLE)
    assert b"".join(e.raw for e in events) == SAMPLE
    assert events[0].data is None and events[0].raw.startswith(b"\xef\xbb\xbf: keep-alive")
    assert [e.raw for e in events if e.event == "only-a-type"] == [b"event: only-a-type\n\n"]
    assert events[-1] == SSEEvent(raw=b"data: no end")  # unfinished: not dispatched


def test_last_event_id_persists() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert decoder.last_event_id == "1"


def test_every_single_split_gives_the_same_events() -> None:
    whole = decode(SAMPLE)
    for at in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:at], SAMPLE[at:]) == whole, at


def test_byte_by_byte() -> None:
    assert decode(*[SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == decode(SAMPLE)


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n\r") == []  # the final CR may be half of a CRLF
    [event] = decoder.feed(b"\ndata: b\n")
    assert event.raw == b"data: a\r\n\r\n" and event.data == "a"
    assert decoder.flush() == [SSEEvent(raw=b"data: b\n")]


def test_lone_cr_line_end_is_decided_by_the_next_byte_or_flush() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == []
    [event] = decoder.feed(b"d")
    assert event.data == "a" and event.raw == b"data: a\r\r"
    decoder = SSEDecoder()
    decoder.feed(b"data: a\r\r")
    assert [e.data for e in decoder.flush()] == ["a"]


def test_invalid_utf8_is_replaced_but_kept_in_raw() -> None:
    [event] = decode(b"data: \xff\xfe ok\n\n")
    assert event.data == "\ufffd\ufffd ok" and event.raw == b"data: \xff\xfe ok\n\n"


def test_encode_round_trip() -> None:
    event = SSEEvent(event="delta", data='{"x": "a\\nb"}\nsecond', id="9", retry=10)
    [back] = decode(encode_event(event))
    assert (back.event, back.data, back.id, back.retry) == (event.event, event.data, "9", 10)
    assert encode_event(SSEEvent(data="")) == b"data: \n\n"
    assert encode_event(SSEEvent()) == b":\n\n"
    assert encode_event(SSEEvent(data="a\r\nb\rc")) == b"data: a\ndata: b\ndata: c\n\n"
    assert SSEEvent(data="x", raw=b"data:x\n\n").encode() == b"data:x\n\n"


@pytest.mark.parametrize("bad", [SSEEvent(event="a\nb"), SSEEvent(id="a\rb"), SSEEvent(id="\0")])
def test_encode_rejects_what_cannot_be_framed(bad: SSEEvent) -> None:
    with pytest.raises(ValueError):
        encode_event(bad)


FRAGMENTS = [
    b"data: ",
    b"data:",
    b"event: ",
    b"id: ",
    b"retry: ",
    b":",
    b" ",
    b"x",
    b"42",
    b"{}",
    b"\r\n",
    b"\r",
    b"\n",
    b"\n\n",
    b"\r\n\r\n",
    "é".encode(),
    "🙂".encode(),
    b"\xff",
    b"\0",
    b"\xef\xbb\xbf",
    b"data: [DONE]\n\n",
    # whole one-line data blocks, the decoder's fast path (SSEDecoder._data_blocks)
    b'data: {"delta": "h\xc3\xa9"}\n\n',
    b"data:x\n\n",
    b"data:  two spaces\n\n",
    b"data: \n\n",
]


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    stream = b"".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=60)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    return stream, cuts


@pytest.mark.slow
@settings(max_examples=400)
@given(stream_and_cuts())
def test_property_any_split_same_events_and_bytes(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    events = decode(*cut(stream, cuts))
    assert events == decode(stream)
    assert b"".join(e.raw for e in events) == stream
    assert dispatched(events) == reference(stream)


@pytest.mark.slow
@settings(max_examples=200)
@given(st.text(), st.text(), st.lists(st.integers(0, 400), max_size=8))
def test_property_encoded_events_decode_back(data: str, name: str, cuts: list[int]) -> None:
    clean_name = re.sub(r"[\r\n]", "", name) or None
    encoded = encode_event(SSEEvent(event=clean_name, data=data))
    [event] = decode(*cut(encoded, cuts))
    assert event.data == re.sub(r"\r\n|\r", "\n", data)
    assert event.event == clean_name
