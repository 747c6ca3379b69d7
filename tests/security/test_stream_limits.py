"""An upstream stream built to exhaust memory or hold a stream forever (issue 11, defects 7, 9).

Defect 7: an SSE event that never ends (``data:`` lines and no blank line; 200 MB of them raised
the proxy's memory by 560 MiB) or an NDJSON line that never ends was buffered whole, against the
README's promise that memory per stream is bounded. Every decoder now has a cap
(``max_event_bytes``, a constructor argument of the pure decoders, ``max_event_bytes`` in the
settings): past it the stream ends cleanly, the client gets what was released plus a proper end
marked ``"incomplete": "upstream-event-too-large"``, the fault is counted
(``guardrail_upstream_errors_total{reason="oversized"}``, the log line's ``stream_fault``), and
the proxy stops reading the upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog

from guardrail.errors import ConfigError
from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder
from guardrail.config.loading import load_settings

from tests.kit.wire import APIS, CHAT, MESSAGES, OLLAMA, RESPONSES, STREAMS

from ._streamkit import Proxy, counted, eventually, post, running

KIB, MIB = 1 << 10, 1 << 20
LINE = b"data: " + b"x" * 1018 + b"\n"  # 1 KiB: a line of an event that never ends


# --------------------------------------------------------------------------- the pure decoders


def test_sse_decoder_caps_an_event_that_never_ends() -> None:
    """64 MiB of ``data:`` lines without a blank line: the decoder never holds more than the
    cap plus one read, then drops it all and ignores the rest of the input."""
    cap = 256 * KIB
    decoder = SSEDecoder(max_event_bytes=cap)
    first = decoder.feed(b'data: {"ok": 1}\n\n' + LINE * 10)
    assert [e.data for e in first] == ['{"ok": 1}']  # what came before is kept
    largest = 0
    for _ in range(1024):  # 64 KiB reads
        assert decoder.feed(LINE * 64) == []
        largest = max(largest, len(decoder._buf) + len(decoder._block) + len(decoder._data or []))
    assert decoder.overflow
    assert largest <= cap + 64 * KIB
    assert len(decoder._buf) + len(decoder._block) == 0  # dropped, not kept
    assert decoder.feed(b"\n\ndata: later\n\n") == [] and decoder.flush() == []


@pytest.mark.parametrize("cut", [1, 7, 4096, 10**9])
def test_sse_decoder_cap_does_not_depend_on_how_the_input_is_cut(cut: int) -> None:
    """One line with no line break, a comment-only block, or a whole event over the cap in one
    read: each stops the decoder at the same place, however the bytes arrive."""
    small = b"data: a\n\n"
    for big in (b"data: " + b"y" * 5000, b": ping\n" * 800, b"data: " + b"z" * 5000 + b"\n\n"):
        data = small + big + small
        decoder = SSEDecoder(max_event_bytes=4 * KIB)
        events = [e for at in range(0, len(data), cut) for e in decoder.feed(data[at : at + cut])]
        events += decoder.flush()
        assert [e.data for e in events] == ["a"] and decoder.overflow


def test_ndjson_decoder_caps_a_line_that_never_ends() -> None:
    cap = 64 * KIB
    decoder = NDJSONDecoder(max_line_bytes=cap)
    assert [line.value for line in decoder.feed(b'{"ok": 1}\n{"message": "')] == [{"ok": 1}]
    for _ in range(256):
        assert decoder.feed(b"x" * 8 * KIB) == []
        assert len(decoder._buf) <= cap + 8 * KIB
    assert decoder.overflow and decoder.flush() == [] and len(decoder._buf) == 0
    whole = NDJSONDecoder(max_line_bytes=cap)  # a complete line over the cap, in one read
    assert whole.feed(b"1\n" + b" " * (cap + 1) + b"2\n3\n") == [(b"1\n", 1)] and whole.overflow


def test_decoders_without_a_cap_are_unchanged() -> None:
    data = b"data: " + b"y" * 100_000 + b"\n\n"
    assert SSEDecoder().feed(data)[0].raw == data
    assert NDJSONDecoder().feed(b"[" + b"1," * 50_000 + b"1]\n")[0].value is not None


# --------------------------------------------------------------------------- through the proxy


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    with running(max_event_bytes=MIB) as proxy:
        yield proxy


class Endless:
    """An upstream body: the head of a real stream, then one event (line) that never ends,
    up to ``limit`` bytes; counts what the proxy pulled."""

    def __init__(self, api: str, limit: int = 64 * MIB) -> None:
        events = list(STREAMS[api]("Tea helps. Rest well. " * 10, size=20))
        self.head = events[: len(events) // 2]
        self.api, self.limit, self.sent = api, limit, 0

    async def __call__(self) -> AsyncIterator[bytes]:
        for event in self.head:
            yield event
        yield b'{"model": "m", "message": {"content": "' if self.api == OLLAMA else b""
        while self.sent < self.limit:
            self.sent += 64 * KIB
            yield (b"x" * 64 * KIB) if self.api == OLLAMA else LINE * 64
            await asyncio.sleep(0.001)  # let a disconnect be seen


def annotation(api: str, data: bytes) -> tuple[str, dict[str, Any] | None, bool]:
    """The text a client reads, the annotation, and whether the stream ended properly."""
    text, note, objects = "", None, []
    if api == OLLAMA:
        objects = [json.loads(line) for line in data.splitlines() if line.strip()]
    else:
        for block in data.split(b"\n\n"):
            payload = b"".join(
                line[len(b"data: "):] for line in block.split(b"\n") if line.startswith(b"data: ")
            )
            if payload:
                objects.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        if api == CHAT:
            text += "".join(c["delta"].get("content") or "" for c in obj["choices"])
        elif api == MESSAGES and obj["type"] == "content_block_delta":
            text += obj["delta"]["text"]
        elif api == RESPONSES and obj["type"] == "response.output_text.delta":
            text += obj["delta"]
        elif api == OLLAMA:
            text += obj["message"]["content"]
        response = obj.get("response")
        inner = response.get("guardrail") if isinstance(response, dict) else None
        note = obj.get("guardrail", inner or note)
    last = objects[-1] if objects else None
    ended = {
        CHAT: last == "[DONE]",
        MESSAGES: isinstance(last, dict) and last.get("type") == "message_stop",
        OLLAMA: isinstance(last, dict) and last.get("done") is True,
        RESPONSES: True,  # no terminal event can be made up: the stream simply ends
    }[api]
    return text, note, ended


@pytest.mark.parametrize("api", APIS)
def test_an_event_that_never_ends_ends_the_stream_cleanly(proxy: Proxy, api: str) -> None:
    """Up to 64 MiB of one unfinished event (line) after half a normal stream, cap 1 MiB: the
    client gets the released text and a proper end marked incomplete; the fault is counted and
    logged; the proxy read the upstream no further than a few reads past the cap."""
    body = Endless(api)
    proxy.send(api, body)
    before = counted("guardrail_upstream_errors_total", api=api, reason="oversized")
    with structlog.testing.capture_logs() as logs:
        response = post(proxy, api)
        eventually(
            lambda: counted("guardrail_upstream_errors_total", api=api, reason="oversized")
            > before
        )
    assert response.status_code == 200 and response.headers["x-guardrail-inspected"] == "true"
    text, note, ended = annotation(api, response.content)
    assert ended and text.startswith("Tea helps.")
    if api != RESPONSES:  # Responses: no terminal event, so no annotation (as for any fault)
        assert note is not None and note["incomplete"] == "upstream-event-too-large"
    assert len(response.content) < 64 * KIB  # the oversized event never reaches the client
    assert body.sent < 8 * MIB  # the proxy stopped reading (memory never grew with it)
    [line] = [e for e in logs if e.get("event") == "request"]
    assert line["stream_fault"] == "upstream-event-too-large"


@pytest.mark.slow
def test_a_long_normal_stream_is_not_cut(proxy: Proxy) -> None:
    """Many events, each small, adding up to far more than the cap: nothing is cut."""
    reply = "Tea is warm. " * 200_000  # 2.6 MB of text in 50-character events
    proxy.send(CHAT, list(STREAMS[CHAT](reply, size=50)))
    text, note, ended = annotation(CHAT, post(proxy, CHAT, timeout=120).content)
    assert ended and text.startswith(reply.rstrip()) and note is not None
    assert "incomplete" not in note


# --------------------------------------------------------------------------- the setting


def test_max_event_bytes_setting() -> None:
    upstream = {"upstream": "https://api.openai.com"}
    assert load_settings(cli=upstream, env={}).max_event_bytes == 4 * MIB  # the default
    s = load_settings(cli=upstream, env={"GUARDRAIL_MAX_EVENT_BYTES": "512KiB"})
    assert s.max_event_bytes == 512 * KIB
    for bad, message in (("lots", "must be a positive size"), ("100", "at least 1KiB")):
        with pytest.raises(ConfigError) as error:
            load_settings(cli=upstream, env={"GUARDRAIL_MAX_EVENT_BYTES": bad})
        assert f"environment GUARDRAIL_MAX_EVENT_BYTES: max_event_bytes: {message}" in str(
            error.value
        ) or message in str(error.value)


# --------------------------------------------------------------------------- stall timeout


KEEPALIVE = {CHAT: b": ping\n\n", RESPONSES: b": keep-alive\n\n", OLLAMA: b"\n",
             MESSAGES: b'event: ping\ndata: {"type": "ping"}\n\n'}


class KeepAlivesOnly:
    """Half a real stream, then only keep-alives every 50 ms for ``seconds``, then the end
    (no terminator); or, with ``content``, a text event every 200 ms instead."""

    def __init__(self, api: str, seconds: float = 6.0, content: bool = False) -> None:
        events = list(STREAMS[api]("Tea helps. Rest well. " * 10, size=20))
        self.head, self.tail = events[: len(events) // 2], events[len(events) // 2 :]
        self.api, self.seconds, self.content = api, seconds, content

    async def __call__(self) -> AsyncIterator[bytes]:
        for event in self.head:
            yield event
        if self.content:  # slow but steady: each event is progress
            for event in self.tail:
                await asyncio.sleep(0.2)
                yield event
            return
        for _ in range(int(self.seconds / 0.05)):
            await asyncio.sleep(0.05)
            yield KEEPALIVE[self.api]


@pytest.fixture(scope="module")
def stalling() -> Iterator[Proxy]:
    with running(stall_timeout=0.5) as proxy:
        yield proxy


@pytest.mark.parametrize("api", APIS)
def test_keep_alives_alone_do_not_hold_a_stream(stalling: Proxy, api: str) -> None:
    """An upstream that, after a few events, sends only keep-alives (SSE comments, Anthropic
    pings, blank NDJSON lines) used to hold the stream as long as it liked: each keep-alive
    reset the stall timeout (and the read timeout). Now only events reset it: the client's
    stream ends cleanly, marked stalled, within about the stall timeout, and it is counted."""
    stalling.send(api, KeepAlivesOnly(api))
    before = counted("guardrail_upstream_errors_total", api=api, reason="stalled")
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        response = post(stalling, api)
        took = time.monotonic() - started
        eventually(
            lambda: counted("guardrail_upstream_errors_total", api=api, reason="stalled") > before
        )
    text, note, ended = annotation(api, response.content)
    assert ended and text.startswith("Tea helps.")
    if api != RESPONSES:
        assert note is not None and note["incomplete"] == "upstream-stalled"
    assert took < 4  # the upstream would have gone on for 6 s
    [line] = [e for e in logs if e.get("event") == "request"]
    assert line["stream_fault"] == "upstream-stalled"


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
def test_a_slow_stream_that_makes_progress_is_not_cut(stalling: Proxy, api: str) -> None:
    """Events 200 ms apart for longer than the 0.5 s stall timeout: each resets it."""
    stalling.send(api, KeepAlivesOnly(api, content=True))
    text, note, ended = annotation(api, post(stalling, api).content)
    assert ended and text.startswith("Tea helps. Rest well. " * 9)
    assert note is not None and "incomplete" not in note


def test_stall_timeout_setting() -> None:
    """On by default (300 s), ``none`` turns it off, a bad value names the key."""
    upstream = {"upstream": "https://api.openai.com"}
    assert load_settings(cli=upstream, env={}).stall_timeout == 300.0
    assert load_settings(cli=upstream, env={"GUARDRAIL_STALL_TIMEOUT": "none"}).stall_timeout is None
    with pytest.raises(ConfigError, match="stall_timeout: must be a number of seconds > 0"):
        load_settings(cli=upstream, env={"GUARDRAIL_STALL_TIMEOUT": "-5"})
