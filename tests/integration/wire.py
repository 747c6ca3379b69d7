"""Upstream reply bodies of the four APIs, whole and streamed, built from a reply text.

The event shapes follow the public API references (Chat Completions chunks, Responses events,
Anthropic Messages events, Ollama NDJSON lines); the texts come from the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

CHAT, RESPONSES, MESSAGES, OLLAMA = (
    "openai.chat",
    "openai.responses",
    "anthropic.messages",
    "ollama.chat",
)
APIS = (CHAT, RESPONSES, MESSAGES, OLLAMA)
PATHS = {
    CHAT: "/v1/chat/completions",
    RESPONSES: "/v1/responses",
    MESSAGES: "/v1/messages",
    OLLAMA: "/api/chat",
}
USAGE = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}


def api_of(path: str) -> str | None:
    return next((api for api, p in PATHS.items() if path.endswith(p)), None)


def pieces(text: str, size: int = 7) -> list[str]:
    """``text`` cut every ``size`` characters (mid-word, like a tokenizer would)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(name: str | None, data: Any) -> bytes:
    head = "" if name is None else f"event: {name}\n"
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"{head}data: {body}\n\n".encode()


# --------------------------------------------------------------------------- chat completions


def _chunk(choices: list[Any], **extra: Any) -> bytes:
    base = {"id": "chatcmpl-it", "object": "chat.completion.chunk", "created": 1718000000,
            "model": "gpt-it", "system_fingerprint": "fp_it"}
    return sse(None, {**base, "choices": choices, **extra})


def chat_stream(
    text: str, *, n: int = 1, logprobs: bool = False, tools: bool = False, usage: bool = False,
    done: bool = True, size: int = 7,
) -> Iterator[bytes]:
    """Chat chunks: role, content pieces for each choice (choice i > 0 upper-cased), optional
    logprobs on each piece, a tool call on choice 0, finish chunks, a usage chunk, [DONE]."""
    yield _chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                   "finish_reason": None} for i in range(n)])
    for piece in pieces(text, size):
        for i in range(n):
            choice: dict[str, Any] = {"index": i, "delta": {"content": piece if i == 0 else
                                                            piece.upper()}, "finish_reason": None}
            if logprobs:
                token = {"token": piece, "logprob": -0.25, "bytes": list(piece.encode()),
                         "top_logprobs": []}
                choice["logprobs"] = {"content": [token], "refusal": None}
            yield _chunk([choice])
    if tools:
        call = {"index": 0, "id": "call_it", "type": "function",
                "function": {"name": "lookup", "arguments": ""}}
        yield _chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])
        for part in ('{"q": ', '"tea"}'):
            args = {"index": 0, "function": {"arguments": part}}
            yield _chunk([{"index": 0, "delta": {"tool_calls": [args]}, "finish_reason": None}])
    for i in range(n):
        reason = "tool_calls" if tools and i == 0 else "stop"
        yield _chunk([{"index": i, "delta": {}, "finish_reason": reason}])
    if usage:
        yield _chunk([], usage=USAGE)
    if done:
        yield b"data: [DONE]\n\n"


def chat_body(text: str, n: int = 1) -> dict[str, Any]:
    return {
        "id": "chatcmpl-it", "object": "chat.completion", "created": 1718000000, "model": "gpt-it",
        "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"} for i in range(n)],
        "usage": USAGE,
    }


# --------------------------------------------------------------------------- responses


def _response(status: str, output: list[Any]) -> dict[str, Any]:
    return {"id": "resp_it", "object": "response", "created_at": 1741290958, "status": status,
            "error": None, "incomplete_details": None, "instructions": None, "model": "gpt-it",
            "output": output, "parallel_tool_calls": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "metadata": {}, "usage": None}


def _message_item(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"id": "msg_it", "type": "message", "status": "completed", "role": "assistant",
            "content": [part]}


def responses_stream(text: str, *, done: bool = True, size: int = 7) -> Iterator[bytes]:
    seq = iter(range(1_000_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    where = {"item_id": "msg_it", "output_index": 0, "content_index": 0}
    item = _message_item(text)
    part = item["content"][0]
    yield ev("response.created", response=_response("in_progress", []))
    yield ev("response.output_item.added", output_index=0,
             item={**item, "status": "in_progress", "content": []})
    yield ev("response.content_part.added", **where, part={**part, "text": ""})
    for piece in pieces(text, size):
        yield ev("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield ev("response.output_text.done", **where, text=text, logprobs=[])
    yield ev("response.content_part.done", **where, part=part)
    yield ev("response.output_item.done", output_index=0, item=item)
    if done:
        yield ev("response.completed", response=_response("completed", [item]))


def responses_body(text: str) -> dict[str, Any]:
    return _response("completed", [_message_item(text)])


# --------------------------------------------------------------------------- anthropic


def _message(content: list[Any], stop: str | None) -> dict[str, Any]:
    return {"id": "msg_it", "type": "message", "role": "assistant", "content": content,
            "model": "claude-it", "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 9}}


def messages_stream(
    text: str, *, blocks: int = 1, done: bool = True, size: int = 7
) -> Iterator[bytes]:
    """Message events; the text cut into ``blocks`` text blocks (as around citations)."""
    yield sse("message_start", {"type": "message_start", "message": _message([], None)})
    block = -(-len(text) // blocks) if text else 1
    for index in range(blocks):
        start = {"type": "content_block_start", "index": index,
                 "content_block": {"type": "text", "text": ""}}
        yield sse("content_block_start", start)
        yield sse("ping", {"type": "ping"})
        for piece in pieces(text[index * block : (index + 1) * block], size):
            delta = {"type": "content_block_delta", "index": index,
                     "delta": {"type": "text_delta", "text": piece}}
            yield sse("content_block_delta", delta)
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    if done:
        yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                    "stop_sequence": None}, "usage": {"output_tokens": 9}})
        yield sse("message_stop", {"type": "message_stop"})


def messages_body(text: str) -> dict[str, Any]:
    return _message([{"type": "text", "text": text}], "end_turn")


# --------------------------------------------------------------------------- ollama


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def ollama_stream(text: str, *, done: bool = True, size: int = 7) -> Iterator[bytes]:
    for piece in pieces(text, size):
        yield _line({"model": "llama-it", "created_at": "2025-01-01T00:00:00Z",
                     "message": {"role": "assistant", "content": piece}, "done": False})
    if done:
        yield _line({"model": "llama-it", "created_at": "2025-01-01T00:00:01Z",
                     "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                     "done": True, "eval_count": 9})


def ollama_body(text: str) -> dict[str, Any]:
    return {"model": "llama-it", "created_at": "2025-01-01T00:00:01Z",
            "message": {"role": "assistant", "content": text}, "done_reason": "stop",
            "done": True}


# --------------------------------------------------------------------------- by API

STREAMS = {CHAT: chat_stream, RESPONSES: responses_stream, MESSAGES: messages_stream,
           OLLAMA: ollama_stream}
BODIES = {CHAT: chat_body, RESPONSES: responses_body, MESSAGES: messages_body,
          OLLAMA: ollama_body}
MEDIA = {CHAT: "text/event-stream", RESPONSES: "text/event-stream",
         MESSAGES: "text/event-stream", OLLAMA: "application/x-ndjson"}
