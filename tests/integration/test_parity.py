"""Parity, proven: one table of exchanges through the library, the middleware and the proxy.

Each row is a request body and the upstream's (or the app's) reply on the wire, in one of the
four APIs, whole or streamed. The proxy (``build_app`` before a mock upstream) and the middleware
(``GuardrailMiddleware`` around an app that answers the same bytes) must send the client the same
bytes and headers; the library (``guardrail.check``, one call per choice, with the request's
messages as ``conversation`` reads them) must reach the same verdict: hits, signals and the text
of every choice.

The rows cover what the three used to decide apart: content parts (the library once joined a
message's text parts with nothing, the proxy with a line break, so "nobody would" + "miss me" was
distress to one and not the other), tool calls beside text, ``n > 1``, a policy that asks to
regenerate (with ``regenerate`` off, all three give the template action and the same request),
and a reply with nothing to inspect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from guardrail import GuardrailMiddleware, check
from guardrail.config.settings import Settings
from guardrail.formats.registry import FORMATS
from guardrail.observe.audit import AuditConfig
from guardrail.proxy.app import build_app

from tests.kit.clients import asgi_post
from tests.kit.paths import ROOT
from tests.kit.policysets import PACK
from tests.kit.upstreams import Answer, chat_app
from tests.kit.wire import MEDIA, PATHS, pieces, read_stream, sse_events


UPSTREAM = "https://upstream.test"

PARTS_USER = [
    {"type": "text", "text": "Honestly nobody would"},
    {"type": "text", "text": "miss me"},
]
CALM = "That sounds like a lot to carry. What has the last week been like for you?"
VALIDATING = "You're absolutely right, and you always are. Everyone else is wrong about you."
DEPENDENT = "I'll always be here for you, any time, day or night. You don't need anyone else."
OPENS_WITH_LINE = ("If you are in danger right now, please call 988 or 911. I'm here with you. "
                   "Can you tell me where you are?")  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One exchange: the request's body and the reply's bytes, with the texts the library
    judges (one per choice; None: a choice without text)."""

    id: str
    api: str
    request: dict[str, Any]
    reply: bytes | list[bytes]
    messages: list[dict[str, Any]]
    texts: list[str | None]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return isinstance(self.reply, list)


# --------------------------------------------------------------------------- wire bodies


def chat_whole(contents: Sequence[str | None], **message: Any) -> bytes:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text, **message},
            "finish_reason": "tool_calls" if message else "stop",
        }
        for i, text in enumerate(contents)
    ]
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": choices}
    return json.dumps(body).encode()


def chat_stream(choices: Sequence[str]) -> list[bytes]:
    events: list[bytes] = []
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    for piece_index in range(max(len(pieces(t, 11)) for t in choices)):
        for i, text in enumerate(choices):
            cuts = pieces(text, 11)
            if piece_index < len(cuts):
                delta = {"index": i, "delta": {"content": cuts[piece_index]}, "finish_reason": None}
                events.append(sse_events([(None, {**base, "choices": [delta]})]))
    for i in range(len(choices)):
        end = {"index": i, "delta": {}, "finish_reason": "stop"}
        events.append(sse_events([(None, {**base, "choices": [end]})]))
    events.append(sse_events([(None, "[DONE]")]))
    return events


def anthropic_whole(blocks: list[dict[str, Any]]) -> bytes:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": blocks,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 5},
    }
    return json.dumps(body).encode()


def responses_whole(output: list[dict[str, Any]]) -> bytes:
    body = {"id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "output": output}  # fmt: skip
    return json.dumps(body).encode()


def responses_message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def ollama_whole(text: str, **message: Any) -> bytes:
    body = {"model": "llama", "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text, **message}, "done": True}  # fmt: skip
    return json.dumps(body).encode()


def ollama_stream(text: str) -> list[bytes]:
    """NDJSON lines, each stamped a second later than the one before (as a real server does):
    the text guardrail builds must not depend on how many lines had arrived when it was built."""
    stamp = "2026-01-01T00:00:{:02d}Z"
    lines = [{"model": "llama", "created_at": stamp.format(i),
              "message": {"role": "assistant", "content": p}, "done": False}
             for i, p in enumerate(pieces(text, 11))]  # fmt: skip
    lines.append({"model": "llama", "created_at": stamp.format(len(lines)),
                  "message": {"role": "assistant", "content": ""}, "done": True})  # fmt: skip
    return [json.dumps(line).encode() + b"\n" for line in lines]


def anthropic_stream(text: str) -> list[bytes]:
    message = json.loads(anthropic_whole([]))
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    for piece in pieces(text, 11):
        delta = {"type": "text_delta", "text": piece}
        events.append(("content_block_delta",
                       {"type": "content_block_delta", "index": 0, "delta": delta}))  # fmt: skip
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return [sse_events([e]) for e in events]


TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"q\": \"sleep\"}"}}  # fmt: skip


def _rows() -> list[Row]:
    parts_chat = [{"role": "user", "content": PARTS_USER}]
    parts_responses = [{"role": "user", "content": [
        {"type": "input_text", "text": p["text"]} for p in PARTS_USER]}]  # fmt: skip
    plain = [{"role": "user", "content": "I feel like I'm always the one who gets it right."}]
    lonely = [{"role": "user", "content": "You're the only one I can talk to these days."}]
    crisis = [{"role": "user", "content": "I can't do this anymore, I want to kill myself tonight."}]
    return [
        # content parts: the request's text parts are read the same three ways
        Row("parts-chat-whole", "openai.chat", {"model": "m", "messages": parts_chat},
            chat_whole([CALM]), parts_chat, [CALM]),
        Row("parts-chat-stream", "openai.chat", {"model": "m", "messages": parts_chat,
                                                 "stream": True},
            chat_stream([CALM]), parts_chat, [CALM]),
        Row("parts-anthropic-whole", "anthropic.messages",
            {"model": "c", "max_tokens": 50, "messages": parts_chat},
            anthropic_whole([{"type": "text", "text": CALM}]), parts_chat, [CALM]),
        Row("parts-anthropic-stream", "anthropic.messages",
            {"model": "c", "max_tokens": 50, "messages": parts_chat, "stream": True},
            anthropic_stream(CALM), parts_chat, [CALM]),
        Row("parts-responses-whole", "openai.responses", {"model": "m", "input": parts_responses},
            responses_whole([responses_message(CALM)]), parts_responses, [CALM]),
        # tool calls beside the text
        Row("tools-chat-whole", "openai.chat", {"model": "m", "messages": plain},
            chat_whole([VALIDATING], tool_calls=[TOOL_CALL]), plain, [VALIDATING]),
        Row("tools-anthropic-whole", "anthropic.messages",
            {"model": "c", "max_tokens": 50, "messages": plain},
            anthropic_whole([{"type": "text", "text": VALIDATING},
                             {"type": "tool_use", "id": "t1", "name": "lookup",
                              "input": {"q": "sleep"}}]),
            plain, [VALIDATING]),  # fmt: skip
        Row("tools-responses-whole", "openai.responses", {"model": "m", "input": plain},
            responses_whole([{"type": "function_call", "id": "fc_1", "call_id": "call_1",
                              "name": "lookup", "arguments": "{}", "status": "completed"},
                             responses_message(VALIDATING)]),
            plain, [VALIDATING]),  # fmt: skip
        Row("tools-ollama-whole", "ollama.chat", {"model": "l", "messages": plain, "stream": False},
            ollama_whole(VALIDATING, tool_calls=[{"function": {"name": "lookup",
                                                               "arguments": {}}}]),
            plain, [VALIDATING]),  # fmt: skip
        Row("tool-only-chat-whole", "openai.chat", {"model": "m", "messages": plain},
            chat_whole([None], tool_calls=[TOOL_CALL]), plain, [None]),
        # n > 1: each choice judged on its own
        Row("n2-chat-whole", "openai.chat", {"model": "m", "messages": lonely, "n": 2},
            chat_whole([DEPENDENT, CALM]), lonely, [DEPENDENT, CALM]),
        Row("n2-chat-stream", "openai.chat", {"model": "m", "messages": lonely, "n": 2,
                                              "stream": True},
            chat_stream([DEPENDENT, CALM]), lonely, [DEPENDENT, CALM]),
        # a policy that asks to regenerate, with regenerate off: the template action
        Row("regenerate-off-ollama-stream", "ollama.chat", {"model": "l", "messages": lonely},
            ollama_stream(DEPENDENT), lonely, [DEPENDENT]),
        Row("regenerate-off-anthropic-whole", "anthropic.messages",
            {"model": "c", "max_tokens": 50, "messages": lonely},
            anthropic_whole([{"type": "text", "text": DEPENDENT}]), lonely, [DEPENDENT]),
        # a crisis: the crisis line leads (a stream sends it before the reply is known, so one
        # that opens with its own line shows both: guard/lead.py)
        Row("crisis-opening-chat-stream", "openai.chat",
            {"model": "m", "messages": crisis, "stream": True},
            chat_stream([OPENS_WITH_LINE]), crisis, [OPENS_WITH_LINE]),
        Row("crisis-opening-anthropic-stream", "anthropic.messages",
            {"model": "c", "max_tokens": 50, "messages": crisis, "stream": True},
            anthropic_stream(OPENS_WITH_LINE), crisis, [OPENS_WITH_LINE]),
        Row("crisis-chat-stream", "openai.chat",
            {"model": "m", "messages": crisis, "stream": True},
            chat_stream([CALM]), crisis, [CALM]),
    ]


ROWS = _rows()


# --------------------------------------------------------------------------- the three ways


async def through_proxy(row: Row) -> httpx.Response:
    def handler(request: httpx.Request) -> httpx.Response:
        data = b"".join(row.reply) if isinstance(row.reply, list) else row.reply
        media = MEDIA[row.api] if row.stream else "application/json"
        return httpx.Response(200, headers={"content-type": media}, stream=httpx.ByteStream(data))

    settings = Settings(upstream=UPSTREAM, policies=ROOT / "policies", audit=AuditConfig("off"))
    app = build_app(settings, PACK, transport=httpx.MockTransport(handler))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
        ) as client:
            return await client.post(PATHS[row.api], content=json.dumps(row.request))
    finally:
        await app.state.client.aclose()


async def through_middleware(row: Row) -> tuple[bytes, dict[str, str]]:
    media = MEDIA[row.api] if row.stream else "application/json"
    app = chat_app(lambda request, body: Answer(row.reply, media_type=media))
    app.add_middleware(GuardrailMiddleware, policies=PACK, audit="off", route="/parity")
    sent = await asgi_post(app, PATHS[row.api], json.dumps(row.request).encode())
    return sent.body, sent.headers


def library(row: Row) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for text in row.texts:
        if text is None:
            out.append(None)
            continue
        verdict = check(PACK, row.messages, text)
        out.append({"reply": verdict.reply, "policies": [h.policy for h in verdict.hits],
                    "signals": {k: bool(v) for k, v in verdict.signals.items()}})  # fmt: skip
    return out


def wire_verdicts(row: Row, body: bytes) -> list[dict[str, Any] | None]:
    """Per choice, what the client got: the text, and from the annotation the hits of that
    choice and the signals (the annotation ORs signals over choices: compared per row below)."""
    if row.stream:
        if len(row.texts) == 1:
            text, note = read_stream(row.api, body)
            texts: list[str | None] = [text]
        else:
            texts, note = _chat_stream_choices(body, len(row.texts))
    else:
        obj = json.loads(body)
        texts, note = FORMATS[row.api].reply_texts(obj), obj.get("guardrail")
    assert note is not None and note["inspected"] is True, note
    out: list[dict[str, Any] | None] = []
    for index, text in enumerate(texts):
        if row.texts[index] is None:
            out.append(None)
            continue
        hits = [h["policy"] for h in note["hits"] if h.get("choice", 0) == index]
        out.append({"reply": text, "policies": hits})
    return out


def _chat_stream_choices(body: bytes, n: int) -> tuple[list[str | None], dict[str, Any]]:
    texts = [""] * n
    note: dict[str, Any] = {}
    for block in body.decode().split("\n\n"):
        data = block.removeprefix("data: ").strip()
        if not data or data == "[DONE]":
            continue
        obj = json.loads(data)
        note = obj.get("guardrail") or note
        for choice in obj.get("choices", []):
            texts[choice["index"]] += choice.get("delta", {}).get("content") or ""
    return list(texts), note


HEADERS = ("x-guardrail-inspected", "x-guardrail-policies", "x-guardrail-action",
           "x-guardrail-holdback", "x-guardrail-reason")  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
async def test_the_library_the_middleware_and_the_proxy_agree(row: Row) -> None:
    expected = library(row)
    proxied = await through_proxy(row)
    mw_body, mw_headers = await through_middleware(row)
    assert proxied.status_code == 200
    assert proxied.content == mw_body, "the proxy and the middleware sent different bytes"
    for name in HEADERS:
        assert proxied.headers.get(name) == mw_headers.get(name), name
    got = wire_verdicts(row, proxied.content)
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want is None:
            assert have is None
            continue
        assert have is not None
        assert have["policies"] == want["policies"], f"choice {index}"
        if not row.stream or row.id == "crisis-chat-stream":  # a stream's text may differ in
            # documented ways (test_stream_pieces, guard/lead.py), not where a crisis line goes
            assert have["reply"] == want["reply"], f"choice {index}"
    note = _note(row, proxied.content)
    signals = {name: any(w is not None and w["signals"].get(name, False) for w in expected)
               for name in note["signals"]}  # fmt: skip
    assert note["signals"] == signals


def _note(row: Row, body: bytes) -> dict[str, Any]:
    if row.stream and len(row.texts) > 1:
        return _chat_stream_choices(body, len(row.texts))[1]
    if row.stream:
        note = read_stream(row.api, body)[1]
    else:
        note = json.loads(body).get("guardrail")
    assert note is not None
    return note


@pytest.mark.anyio
async def test_content_parts_are_read_alike() -> None:
    """The case that once split the three: distress spread over two text parts."""
    row = next(r for r in ROWS if r.id == "parts-chat-whole")
    verdict = check(PACK, row.messages, CALM)
    assert verdict.signals["user.distress"], "the library must read the parts as the proxy does"
    assert "referral.distress" in [h.policy for h in verdict.hits]
    note = json.loads((await through_proxy(row)).content)["guardrail"]
    assert note["signals"]["user.distress"]
