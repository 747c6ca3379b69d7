"""Property test: hostile request bodies and upstream replies, all four APIs, whole and streamed.

Hypothesis builds a conversation (a crisis sentence or not, hostile characters around and inside
it: lone surrogates, NUL, format characters, invalid UTF-8), a request of one API, and an upstream
answer (a valid reply with hostile text and forged ``guardrail`` annotations, a broken body, or an
error status), cut into chunks at random places. Whatever the draw, these must hold:

* no 500 and no traceback: guardrail answers with the upstream's own status;
* a reply marked not inspected (``x-guardrail-inspected: false``) reaches the client byte for
  byte;
* annotation only from guardrail: in an inspected reply a forged ``guardrail`` member never
  reaches the client;
* when the conversation shows crisis and the reply was inspected, the text the client assembles
  leads with the crisis resources (the en-US line and emergency number).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy import PolicySet
from guardrail.config.settings import Settings

from tests.kit.policysets import PACK
from tests.kit.wire import (
    MEDIA,
    PATHS,
    pieces,
    read_stream,
    read_whole,
    request_body,
    stream_events,
    whole_reply,
)

pytestmark = pytest.mark.slow


APIS = tuple(PATHS)
FORGED = "FORGED-ANNOTATION-5c1e"
CRISIS = (
    "I want to die.",
    "I'm going to kill myself tonight.",
    "I don't want to be alive anymore and I have a plan to end it.",
)
HOSTILE = ("\ud800", "\udfff", "\udc80\ud83d", "\x00", "\u200b", "\u202e", "\ufeff", "\u0007", "\x7f")
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80\x80")

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12)), max_size=6
).map("".join)


@dataclass(frozen=True)
class Draw:
    api: str
    stream: bool
    crisis: bool
    body: bytes
    upstream_status: int
    upstream_body: bytes
    cuts: tuple[int, ...]
    kind: str  # the upstream's answer: a valid reply, a broken body, or an error status


@st.composite
def exchanges(draw: st.DrawFn, stream: bool) -> Draw:
    api = draw(st.sampled_from(APIS))
    crisis = draw(st.booleans())
    user = draw(hostile_text)
    if crisis:  # what follows the sentence holds no quote mark: a closed quotation around it
        # would make it someone else's words, by design (a stray one before it may not hide it)
        user = f"{user} {draw(st.sampled_from(CRISIS))} {_unquoted(draw(hostile_text))}"
    messages = [{"role": "user", "content": draw(hostile_text) or "hi"},
                {"role": "assistant", "content": draw(hostile_text) or "ok"},
                {"role": "user", "content": user}]  # fmt: skip
    body = json.dumps(request_body(api, messages, stream=stream)).encode()
    if draw(st.booleans()):  # invalid UTF-8 inside the JSON string of an earlier message
        at = body.index(b'"content": "') + len(b'"content": "')
        body = body[:at] + draw(st.sampled_from(BAD_UTF8)) + body[at:]
    kind, status, answer = draw(_answers(api, stream))
    cuts = tuple(sorted(draw(st.sets(st.integers(1, max(1, len(answer) - 1)), max_size=8))))
    return Draw(api, stream, crisis, body, status, answer, cuts, kind)


def _unquoted(text: str) -> str:
    return "".join(c for c in text if unicodedata.normalize("NFKC", c) not in _QUOTES)


_QUOTES = set("\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2032\u2033\u00ab\u00bb\u02bc")


@st.composite
def _answers(draw: st.DrawFn, api: str, stream: bool) -> tuple[str, int, bytes]:
    kind = draw(st.sampled_from(("valid", "valid", "valid", "broken", "error")))
    if kind == "error":
        status = draw(st.sampled_from((400, 401, 429, 500, 503)))
        return kind, status, draw(st.binary(max_size=64))
    if kind == "broken":
        return kind, 200, draw(st.binary(max_size=200))
    text = draw(hostile_text) + " " + draw(hostile_text)
    if stream:
        events = [_unmask(e) for e in stream_events(api, pieces(_mask(text), 5))]
        return kind, 200, _forge_stream(api, events, draw)
    data = _unmask(whole_reply(api, _mask(text)))
    if draw(st.booleans()):
        data = data[:-1] + b', "guardrail": {"forged": "' + FORGED.encode() + b'"}}'
    if draw(st.booleans()):  # invalid UTF-8 inside the reply's text
        at = data.index(b'"', data.index(_TEXT_KEY[api]) + len(_TEXT_KEY[api])) + 1
        data = data[:at] + draw(st.sampled_from(BAD_UTF8)) + data[at:]
    return kind, 200, data


_TEXT_KEY = {
    "openai.chat": b'"content":',
    "openai.responses": b'"text":',
    "anthropic.messages": b'"text":',
    "ollama.chat": b'"content":',
}
# The wire builders encode as UTF-8, which a lone surrogate cannot be; each one travels through
# them as a private-use stand-in and becomes its JSON escape (how clients really send them) after.
_STAND_IN = {"\ud800": "\ue000", "\udfff": "\ue001", "\udc80": "\ue002", "\ud83d": "\ue003"}


def _mask(text: str) -> str:
    for surrogate, stand_in in _STAND_IN.items():
        text = text.replace(surrogate, stand_in)
    return text


def _unmask(data: bytes) -> bytes:
    for surrogate, stand_in in _STAND_IN.items():
        escape = json.dumps(surrogate).strip('"').encode()
        data = data.replace(stand_in.encode(), escape)
        data = data.replace(json.dumps(stand_in).strip('"').encode(), escape)
    return data


def _forge_stream(api: str, events: list[bytes], draw: st.DrawFn) -> bytes:
    """The stream's events, re-encoded so lone surrogates travel as escapes, with forged
    annotations inserted mid-stream, on existing events, and after the terminator."""
    out = list(events)
    if draw(st.booleans()):
        forged = {"guardrail": {"forged": FORGED}}
        if api == "ollama.chat":
            line = {"model": "m", "created_at": "2024-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": ""}, "done": False, **forged}
            extra = json.dumps(line).encode() + b"\n"
        elif api == "openai.chat":
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [], **forged}
            extra = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        elif api == "anthropic.messages":
            delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                     "usage": {"output_tokens": 1}, **forged}
            extra = b"event: message_delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
        else:
            event = {"type": "response.in_progress", "sequence_number": 99,
                     "response": {"id": "r", "object": "response", "status": "in_progress",
                                  **forged}}
            extra = b"event: response.in_progress\ndata: " + json.dumps(event).encode() + b"\n\n"
        at = draw(st.integers(1, len(out)))  # after the first event, up to after the last
        if api == "anthropic.messages" and not any(b"message_delta" in e for e in out[:at]):
            # before the real message_delta a second one would end the reply early (a protocol
            # fault of its own); a forged member rides on a ping there instead
            ping = {"type": "ping", **forged}
            extra = b"event: ping\ndata: " + json.dumps(ping).encode() + b"\n\n"
        out.insert(at, extra)
    return b"".join(out)


async def _chunks(data: bytes, cuts: tuple[int, ...]) -> AsyncIterator[bytes]:
    start = 0
    for cut in (*cuts, len(data)):
        if cut > start:
            yield data[start:cut]
            start = cut


def _upstream(d: Draw) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        media = MEDIA[d.api] if d.stream and d.upstream_status == 200 else "application/json"
        return httpx.Response(
            d.upstream_status,
            headers={"content-type": media},
            stream=_Stream(d.upstream_body, d.cuts),
        )

    return httpx.MockTransport(handler)


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes, cuts: tuple[int, ...]) -> None:
        self.data, self.cuts = data, cuts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in _chunks(self.data, self.cuts):
            yield chunk


@pytest.fixture(scope="module")
def pack() -> PolicySet:
    return PACK


async def _exchange(pack: PolicySet, d: Draw) -> httpx.Response:
    config = Settings(upstream="https://upstream.test", audit=AuditConfig(sink="off"))
    app = build_app(config, pack, transport=_upstream(d))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        response = await client.post(
            PATHS[d.api], content=d.body, headers={"content-type": "application/json"}
        )
    await app.state.client.aclose()
    return response


def _text_of(d: Draw, body: bytes) -> str | None:
    """The assistant text the client assembles, or None when it cannot be read as a reply."""
    try:
        text, _note = read_stream(d.api, body) if d.stream else read_whole(d.api, body)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return text


def _check(d: Draw, response: httpx.Response) -> None:
    body = response.content
    assert b"Traceback" not in body and b'File "' not in body
    assert response.status_code == d.upstream_status, (response.status_code, body[:300])
    if response.headers.get("x-guardrail-inspected") == "false":
        # marked as not inspected in guardrail's own header; the body is the upstream's, whole
        assert body == d.upstream_body, response.headers.get("x-guardrail-reason")
        return
    assert FORGED.encode() not in body, "an upstream's forged annotation reached the client"
    # A stream that holds no reply at all (empty or unreadable bytes) ends cleanly, marked
    # incomplete, with nothing to lead: the README's Security model says so.
    if d.crisis and d.upstream_status == 200 and (d.kind == "valid" or not d.stream):
        assert response.headers.get("x-guardrail-inspected") == "true"
        text = _text_of(d, body)
        assert text is not None, body[:300]
        head = text[:400]
        assert "988" in head and "911" in head, head


COMMON = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@COMMON
@given(d=exchanges(stream=False))
def test_whole_replies_keep_the_invariants(pack: PolicySet, d: Draw) -> None:
    """Hostile bytes in a whole exchange, any API: no 500, no forged annotation, not-inspected
    replies byte for byte, the crisis line first."""
    _check(d, anyio.run(_exchange, pack, d))


@COMMON
@given(d=exchanges(stream=True))
def test_streamed_replies_keep_the_invariants(pack: PolicySet, d: Draw) -> None:
    """Hostile bytes in a streamed exchange cut at random places, any API: the same invariants."""
    _check(d, anyio.run(_exchange, pack, d))


