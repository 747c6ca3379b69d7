"""Wire bodies of each API for the embedding tests (requests, JSON replies, streams) and
readers of what a client gets back.

The shapes follow the public API references (Chat Completions, Responses, Anthropic Messages,
Ollama chat; JSON, SSE and NDJSON); the texts are our own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder
from guardrail.guard.inspection import FORMATS

PATHS = {
    "openai.chat": "/v1/chat/completions",
    "openai.responses": "/v1/responses",
    "anthropic.messages": "/v1/messages",
}
"""The APIs the middleware is asked to handle, at their usual paths."""
ALL_PATHS = {**PATHS, "ollama.chat": "/api/chat"}
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
MEDIA = {api: NDJSON if api == "ollama.chat" else SSE for api in ALL_PATHS}


def cut(text: str, size: int = 9) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(events: Iterable[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        head = "" if name is None else f"event: {name}\n"
        body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out.append(f"{head}data: {body}\n\n")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- requests


def request_body(api: str, messages: Sequence[dict[str, str]], *, stream: bool) -> dict[str, Any]:
    """A chat request of ``api`` carrying ``messages`` (system messages where the API wants)."""
    if api == "openai.responses":
        return {"model": "gpt-test", "input": list(messages), "stream": stream}
    if api == "anthropic.messages":
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        rest = [m for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": "claude-test", "max_tokens": 300, "messages": rest}
        if system:
            body["system"] = system
        return {**body, "stream": stream}
    return {"model": "gpt-test", "messages": list(messages), "stream": stream}


# --------------------------------------------------------------------------- whole replies


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def _response(status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_741_290_958,
        "status": status,
        "model": "gpt-test",
        "output": output,
        "usage": None,
    }


def _item(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [part]}  # fmt: skip


def message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": "claude-test",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }


def ollama_line(text: str, *, done: bool) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": "llama-test",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": done,
    }
    return {**line, "done_reason": "stop", "eval_count": 17} if done else line


def whole_reply(api: str, text: str) -> bytes:
    """The JSON reply body of ``api`` whose assistant text is ``text``."""
    if api == "ollama.chat":
        body = ollama_line(text, done=True)
    elif api == "openai.responses":
        body = _response("completed", [_item(text)])
    elif api == "anthropic.messages":
        body = message(text)
    else:
        body = completion(text)
    return json.dumps(body).encode("utf-8")


# --------------------------------------------------------------------------- streams


def chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_718_000_000,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def chat_stream_events(pieces: Sequence[str]) -> list[bytes]:
    """Chat Completions SSE events, one ``bytes`` per event, ``[DONE]`` last."""
    events: list[Any] = [chat_chunk({"role": "assistant", "content": ""})]
    events += [chat_chunk({"content": p}) for p in pieces]
    events.append(chat_chunk({}, "stop"))
    events.append("[DONE]")
    return [_sse([(None, e)]) for e in events]


def _anthropic_events(pieces: Sequence[str]) -> list[tuple[str | None, Any]]:
    start = {**message(""), "content": [], "stop_reason": None}
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in pieces
    ]
    end_delta = {"stop_reason": "end_turn", "stop_sequence": None}
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", block),
        *[("content_block_delta", d) for d in deltas],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta",
         {"type": "message_delta", "delta": end_delta, "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


def _responses_events(pieces: Sequence[str]) -> list[tuple[str | None, Any]]:
    text = "".join(pieces)
    seq = iter(range(10_000))

    def ev(kind: str, **fields: Any) -> tuple[str, Any]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    item = _item(text)
    part = item["content"][0]
    return [
        ev("response.created", response=_response("in_progress", [])),
        ev("response.output_item.added", output_index=0,
           item={**item, "status": "in_progress", "content": []}),
        ev("response.content_part.added", **where, part={**part, "text": ""}),
        *[ev("response.output_text.delta", **where, delta=p, logprobs=[]) for p in pieces],
        ev("response.output_text.done", **where, text=text, logprobs=[]),
        ev("response.content_part.done", **where, part=part),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.completed", response=_response("completed", [item])),
    ]  # fmt: skip


def stream_events(api: str, pieces: Sequence[str]) -> list[bytes]:
    """The SSE events of a streamed ``api`` reply made of ``pieces``, one ``bytes`` each."""
    if api == "openai.chat":
        return chat_stream_events(pieces)
    if api == "ollama.chat":
        lines = [ollama_line(p, done=False) for p in pieces] + [ollama_line("", done=True)]
        return [json.dumps(line).encode() + b"\n" for line in lines]
    events = _anthropic_events(pieces) if api == "anthropic.messages" else _responses_events(pieces)
    return [_sse([e]) for e in events]


# --------------------------------------------------------------------------- reading replies


def _find_note(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict):
        note = obj.get("guardrail")
        if isinstance(note, dict):
            return note
        for value in obj.values():
            found = _find_note(value)
            if found is not None:
                return found
    return None


def read_whole(api: str, body: bytes) -> tuple[str, dict[str, Any] | None]:
    """The assistant text of a JSON reply and its ``guardrail`` object."""
    obj = json.loads(body)
    texts = FORMATS[api].reply_texts(obj)
    return texts[0] or "", obj.get("guardrail")


def read_stream(api: str, data: bytes) -> tuple[str, dict[str, Any] | None]:
    """The assistant text a client assembles from a streamed reply, and the ``guardrail``
    object."""
    if api == "ollama.chat":
        lines = NDJSONDecoder()
        objs = [line.value for line in [*lines.feed(data), *lines.flush()]]
        text = "".join(o["message"]["content"] for o in objs if isinstance(o, dict))
        notes = [n for o in objs if (n := _find_note(o)) is not None]
        return text, notes[-1] if notes else None
    decoder = SSEDecoder()
    text, note = "", None
    for event in [*decoder.feed(data), *decoder.flush()]:
        if event.data is None or event.data == "[DONE]":
            continue
        obj = json.loads(event.data)
        if api == "openai.chat":
            text += "".join(c["delta"].get("content") or "" for c in obj.get("choices", []))
        elif api == "anthropic.messages":
            delta = obj.get("delta", {})
            if obj["type"] == "content_block_delta" and delta.get("type") == "text_delta":
                text += delta["text"]
        elif obj["type"] == "response.output_text.delta":
            text += obj["delta"]
        note = _find_note(obj) or note
    return text, note
