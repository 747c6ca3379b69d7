"""Upstream streams for the stream-guard tests, readers of the guarded output, SDK clients.

The event shapes follow the public API references (Chat Completions chunks, Anthropic Messages
events, Responses events, Ollama NDJSON lines); the texts are our own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
from hypothesis import strategies as st

from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder
from guardrail.policy import Conversation, PolicySet, load_policies

POLICIES: PolicySet = load_policies(Path(__file__).parent / "fixtures" / "policies")

DISTRESS = Conversation.of(("user", "I feel hopeless tonight"))
CRISIS = Conversation.of(("user", "I feel hopeless, I want to end it all"))
CALM = Conversation.of(("user", "tell me about tea"))

REPLY = (
    "You are absolutely right to feel that way. I will always be here for you, no matter what. "
    "Let us talk it through, caf\u00e9 by caf\u00e9 \U0001f375."
)
PIECES = [
    "You are abso",
    "lutely right to feel that way. I will",
    " always be here for you, ",
    "no matter what. Let us talk it",
    " through, caf\u00e9 by caf\u00e9 \U0001f375.",
]
REFERRAL = "If it feels heavy, you can reach 988 Lifeline (call or text 988)."
CRISIS_LINE = "CRISIS: 988 Lifeline, call or text 988."
APIS = ("openai.chat", "anthropic.messages", "openai.responses", "ollama.chat")

# Replies for property tests: marker words of every fixture policy, sentence ends, tricky
# splitter cases (abbreviations, decimals, quotes) and multi-byte characters.
_MARKERS = "You are absolutely right I will always be here tea 988 hello prependword forbiddenword"
WORDS = [
    *_MARKERS.split(),
    *["the", "only", "one", "who", "Dr.", "e.g.", "3.5", ".", "!", "?", " ", "\n", "\n\n"],
    *[",", "\u2019", "caf\u00e9", "\U0001f375", "...", '"'],
]
replies = st.lists(st.sampled_from(WORDS), max_size=50).map(
    lambda ws: "".join(w if w in '.!?,\n\n\u2019"...' or w.isspace() else " " + w for w in ws)
)


def _sse(events: Iterable[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        head = "" if name is None else f"event: {name}\n"
        body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out.append(f"{head}data: {body}\n\n")
    return "".join(out).encode("utf-8")


def chat_chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-test",
        "choices": choices,
        **extra,
    }


def chat_stream(pieces: Sequence[str] = PIECES, *, choices: int = 1, done: bool = True) -> bytes:
    events: list[tuple[str | None, Any]] = [
        (
            None,
            chat_chunk(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                    for i in range(choices)
                ]
            ),
        )
    ]
    for piece in pieces:
        for i in range(choices):
            text = piece if i == 0 else piece.upper()
            events.append(
                (
                    None,
                    chat_chunk([{"index": i, "delta": {"content": text}, "finish_reason": None}]),
                )
            )
    events += [
        (None, chat_chunk([{"index": i, "delta": {}, "finish_reason": "stop"}]))
        for i in range(choices)
    ]
    events.append(
        (
            None,
            chat_chunk([], usage={"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}),
        )
    )
    if done:
        events.append((None, "[DONE]"))
    return _sse(events)


def anthropic_stream(pieces: Sequence[str] = PIECES, *, tool_last: bool = False) -> bytes:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if tool_last:
        events += [
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup",
                        "input": {},
                    },
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"q": "tea"}'},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tool_last else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 30},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse(events)


def _response(status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1741290958,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "gpt-test",
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "metadata": {},
        "usage": None,
    }


def responses_stream(pieces: Sequence[str] = PIECES) -> bytes:
    text = "".join(pieces)
    seq = iter(range(10_000))

    def ev(kind: str, **fields: Any) -> tuple[str, Any]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    events = [
        ev("response.created", response=_response("in_progress", [])),
        ev(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        ),
        ev("response.content_part.added", **where, part={**part, "text": ""}),
        *[ev("response.output_text.delta", **where, delta=p, logprobs=[]) for p in pieces],
        ev("response.output_text.done", **where, text=text, logprobs=[]),
        ev("response.content_part.done", **where, part=part),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.completed", response=_response("completed", [item])),
    ]
    return _sse(events)


def ollama_stream(pieces: Sequence[str] = PIECES) -> bytes:
    lines: list[dict[str, Any]] = [
        {
            "model": "llama-test",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": p},
            "done": False,
        }
        for p in pieces
    ]
    lines.append(
        {
            "model": "llama-test",
            "created_at": "2025-01-01T00:00:09Z",
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "eval_count": 17,
        }
    )
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def upstream(api: str, pieces: Sequence[str] = PIECES) -> bytes:
    builders: dict[str, Callable[..., bytes]] = {
        "openai.chat": chat_stream,
        "anthropic.messages": anthropic_stream,
        "openai.responses": responses_stream,
        "ollama.chat": ollama_stream,
    }
    return builders[api](pieces)


# --------------------------------------------------------------------------- reading output


def read_output(api: str, data: bytes) -> tuple[dict[int, str], dict[str, Any] | None]:
    """The text the client sees per choice (or per reply), and the ``guardrail`` annotation."""
    texts: dict[int, str] = {}
    note: dict[str, Any] | None = None
    if api == "ollama.chat":
        dec = NDJSONDecoder()
        for line in [*dec.feed(data), *dec.flush()]:
            obj = line.value
            assert isinstance(obj, dict), line.raw
            texts[0] = texts.get(0, "") + obj["message"]["content"]
            note = obj.get("guardrail", note)
        return texts, note
    dec2 = SSEDecoder()
    for event in [*dec2.feed(data), *dec2.flush()]:
        if event.data is None or event.data == "[DONE]":
            continue
        obj = json.loads(event.data)
        if api == "openai.chat":
            for choice in obj["choices"]:
                texts[choice["index"]] = texts.get(choice["index"], "") + (
                    choice["delta"].get("content") or ""
                )
            note = obj.get("guardrail", note)
        elif api == "anthropic.messages":
            if obj["type"] == "content_block_delta" and obj["delta"]["type"] == "text_delta":
                texts[0] = texts.get(0, "") + obj["delta"]["text"]
            note = obj.get("guardrail", note)
        else:
            if obj["type"] == "response.output_text.delta":
                texts[0] = texts.get(0, "") + obj["delta"]
            if obj["type"] == "response.completed":
                note = obj["response"].get("guardrail")
    return texts, note


async def chunks_of(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# --------------------------------------------------------------------------- SDK clients


def _transport(body: bytes) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.MockTransport(handler)


def openai_client(body: bytes) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=_transport(body)),
    )


def anthropic_client(body: bytes) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test",
        base_url="http://upstream.test",
        max_retries=0,
        http_client=httpx2.Client(transport=_transport(body)),
    )
