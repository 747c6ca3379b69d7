"""Wire bodies of the four chat APIs, for every test folder: requests, whole replies and streams
(one builder per API, whole and streamed), SSE and NDJSON framing, and readers of what a client
gets back.

The shapes follow the public API references (Chat Completions and its chunk objects, Responses
and its streaming events, Anthropic Messages and its streaming events, Ollama /api/chat JSON and
NDJSON); the texts come from the tests. A stream builder takes the reply text (cut every
``size`` characters, mid-word as a tokenizer would) or the pieces themselves, and yields one
``bytes`` per event (per line for NDJSON). ``tests/formats/_fixtures.py`` keeps the richer
streams the codec tests need (thinking blocks, reasoning items, CRLF framing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder
from guardrail.guard.inspection import FORMATS

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
"""Each API at its usual path."""
SSE_PATHS = {api: path for api, path in PATHS.items() if api != OLLAMA}
"""The APIs that stream server-sent events, at their usual paths."""
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
MEDIA = {api: NDJSON if api == OLLAMA else SSE for api in APIS}
"""The media type of each API's stream."""
USAGE = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
"""The usage object of a Chat Completions reply (whole, and the usage chunk of a stream)."""

Event = tuple[str | None, Any]
"""An SSE event: its name (``None``: no ``event:`` line) and its data (JSON value or raw str)."""
Text = str | Sequence[str]
"""A reply text, or the pieces it streams in."""


def api_of(path: str) -> str | None:
    """The API whose usual path ``path`` ends with."""
    return next((api for api, p in PATHS.items() if path.endswith(p)), None)


def pieces(text: str, size: int = 7) -> list[str]:
    """``text`` cut every ``size`` characters (mid-word, like a tokenizer would)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _pieces(text: Text, size: int) -> list[str]:
    return pieces(text, size) if isinstance(text, str) else list(text)


# --------------------------------------------------------------------------- framing


def sse(name: str | None, data: Any, newline: str = "\n") -> bytes:
    """One SSE event (an ``event:`` line when ``name``); data as JSON unless it is a str."""
    lines = [] if name is None else [f"event: {name}"]
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    lines.append(f"data: {text}")
    return (newline.join(lines) + newline * 2).encode("utf-8")


def sse_events(events: Iterable[Event], newline: str = "\n") -> bytes:
    """Several SSE events, framed one after the other."""
    return b"".join(sse(name, data, newline) for name, data in events)


def ndjson(obj: Any) -> bytes:
    """One NDJSON line."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------- requests


def request_body(api: str, messages: Sequence[dict[str, str]], *, stream: bool) -> dict[str, Any]:
    """A chat request of ``api`` carrying ``messages`` (system messages where the API wants)."""
    if api == RESPONSES:
        return {"model": "gpt-test", "input": list(messages), "stream": stream}
    if api == MESSAGES:
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        rest = [m for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": "claude-test", "max_tokens": 300, "messages": rest}
        if system:
            body["system"] = system
        return {**body, "stream": stream}
    return {"model": "gpt-test", "messages": list(messages), "stream": stream}


def chat_request(*user: str, **extra: Any) -> dict[str, Any]:
    """A Chat Completions request of user turns."""
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": u} for u in user],
        **extra,
    }


# --------------------------------------------------------------------------- chat completions


def completion(*contents: str | None, model: str = "gpt-it") -> dict[str, Any]:
    """A Chat Completions reply with one choice per content."""
    return {
        "id": "chatcmpl-it",
        "object": "chat.completion",
        "created": 1718000000,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i, c in enumerate(contents)
        ],
        "usage": USAGE,
    }


def chat_body(text: str, n: int = 1) -> dict[str, Any]:
    """A Chat Completions reply of ``n`` choices, all ``text``."""
    return completion(*[text] * n)


def chat_chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object."""
    base = {"id": "chatcmpl-it", "object": "chat.completion.chunk", "created": 1718000000,
            "model": "gpt-it", "system_fingerprint": "fp_it"}
    return {**base, "choices": choices, **extra}


def chat_stream(
    text: Text, *, n: int = 1, logprobs: bool = False, tools: bool = False, usage: bool = False,
    done: bool = True, size: int = 7,
) -> Iterator[bytes]:
    """Chat chunks: role, content pieces for each choice (choice i > 0 upper-cased), optional
    logprobs on each piece, a tool call on choice 0, finish chunks, a usage chunk, [DONE]."""

    def chunk(choices: list[Any], **extra: Any) -> bytes:
        return sse(None, chat_chunk(choices, **extra))

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None} for i in range(n)])
    for piece in _pieces(text, size):
        for i in range(n):
            choice: dict[str, Any] = {"index": i, "delta": {"content": piece if i == 0 else
                                                            piece.upper()}, "finish_reason": None}
            if logprobs:
                token = {"token": piece, "logprob": -0.25, "bytes": list(piece.encode()),
                         "top_logprobs": []}
                choice["logprobs"] = {"content": [token], "refusal": None}
            yield chunk([choice])
    if tools:
        call = {"index": 0, "id": "call_it", "type": "function",
                "function": {"name": "lookup", "arguments": ""}}
        yield chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])
        for part in ('{"q": ', '"tea"}'):
            args = {"index": 0, "function": {"arguments": part}}
            yield chunk([{"index": 0, "delta": {"tool_calls": [args]}, "finish_reason": None}])
    for i in range(n):
        reason = "tool_calls" if tools and i == 0 else "stop"
        yield chunk([{"index": i, "delta": {}, "finish_reason": reason}])
    if usage:
        yield chunk([], usage=USAGE)
    if done:
        yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- responses


def response_object(status: str, output: list[Any]) -> dict[str, Any]:
    """A Responses ``response`` object."""
    return {"id": "resp_it", "object": "response", "created_at": 1741290958, "status": status,
            "error": None, "incomplete_details": None, "instructions": None, "model": "gpt-it",
            "output": output, "parallel_tool_calls": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "metadata": {}, "usage": None}


def message_item(text: str) -> dict[str, Any]:
    """A completed Responses output message holding ``text``."""
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"id": "msg_it", "type": "message", "status": "completed", "role": "assistant",
            "content": [part]}


def responses_stream(text: Text, *, done: bool = True, size: int = 7) -> Iterator[bytes]:
    """Responses events: created, the message item and its part, text deltas, the done events,
    completed."""
    cut = _pieces(text, size)
    whole = "".join(cut)
    seq = iter(range(1_000_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    where = {"item_id": "msg_it", "output_index": 0, "content_index": 0}
    item = message_item(whole)
    part = item["content"][0]
    yield ev("response.created", response=response_object("in_progress", []))
    yield ev("response.output_item.added", output_index=0,
             item={**item, "status": "in_progress", "content": []})
    yield ev("response.content_part.added", **where, part={**part, "text": ""})
    for piece in cut:
        yield ev("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield ev("response.output_text.done", **where, text=whole, logprobs=[])
    yield ev("response.content_part.done", **where, part=part)
    yield ev("response.output_item.done", output_index=0, item=item)
    if done:
        yield ev("response.completed", response=response_object("completed", [item]))


def responses_body(text: str) -> dict[str, Any]:
    return response_object("completed", [message_item(text)])


# --------------------------------------------------------------------------- anthropic


def message_object(content: list[Any], stop: str | None) -> dict[str, Any]:
    """An Anthropic ``message`` object."""
    return {"id": "msg_it", "type": "message", "role": "assistant", "content": content,
            "model": "claude-it", "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 9}}


def messages_stream(
    text: Text, *, blocks: int = 1, tool_last: bool = False, done: bool = True, size: int = 7
) -> Iterator[bytes]:
    """Message events; the text cut into ``blocks`` text blocks (as around citations), a ping in
    each, and a ``tool_use`` block last when ``tool_last``."""
    yield sse("message_start", {"type": "message_start", "message": message_object([], None)})
    if isinstance(text, str):
        block = -(-len(text) // blocks) if text else 1
        per_block = [pieces(text[i * block : (i + 1) * block], size) for i in range(blocks)]
    else:
        per_block = [list(text)]
    for index, cut in enumerate(per_block):
        start = {"type": "content_block_start", "index": index,
                 "content_block": {"type": "text", "text": ""}}
        yield sse("content_block_start", start)
        yield sse("ping", {"type": "ping"})
        for piece in cut:
            delta = {"type": "content_block_delta", "index": index,
                     "delta": {"type": "text_delta", "text": piece}}
            yield sse("content_block_delta", delta)
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    if tool_last:
        index = len(per_block)
        tool = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
        yield sse("content_block_start",
                  {"type": "content_block_start", "index": index, "content_block": tool})
        partial = {"type": "input_json_delta", "partial_json": '{"q": "tea"}'}
        yield sse("content_block_delta",
                  {"type": "content_block_delta", "index": index, "delta": partial})
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    if done:
        stop = "tool_use" if tool_last else "end_turn"
        yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop,
                                    "stop_sequence": None}, "usage": {"output_tokens": 9}})
        yield sse("message_stop", {"type": "message_stop"})


def messages_body(text: str) -> dict[str, Any]:
    return message_object([{"type": "text", "text": text}], "end_turn")


# --------------------------------------------------------------------------- ollama

def ollama_stream(text: Text, *, done: bool = True, size: int = 7) -> Iterator[bytes]:
    """NDJSON lines, one per piece, then the ``done`` line, all stamped with the same time.

    (One time for every line: with a later time on the ``done`` line, the proxy and the
    middleware rewrite the first line with different ``created_at`` values; see the report of
    issue 12, item 6.)"""
    for piece in _pieces(text, size):
        yield ndjson({"model": "llama-it", "created_at": "2025-01-01T00:00:00Z",
                      "message": {"role": "assistant", "content": piece}, "done": False})
    if done:
        yield ndjson({"model": "llama-it", "created_at": "2025-01-01T00:00:00Z",
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


def stream_events(api: str, text: Text) -> list[bytes]:
    """The events of a streamed ``api`` reply, one ``bytes`` each."""
    return list(STREAMS[api](text))


def stream_bytes(api: str, text: Text, **options: Any) -> bytes:
    """A streamed ``api`` reply, all its events in one ``bytes``."""
    return b"".join(STREAMS[api](text, **options))


def whole_reply(api: str, text: str) -> bytes:
    """The JSON reply body of ``api`` whose assistant text is ``text``."""
    return json.dumps(BODIES[api](text)).encode("utf-8")


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


def _objects(api: str, data: bytes) -> list[Any]:
    if api == OLLAMA:
        lines = NDJSONDecoder()
        return [line.value for line in [*lines.feed(data), *lines.flush()]]
    decoder = SSEDecoder()
    events = [*decoder.feed(data), *decoder.flush()]
    return [json.loads(e.data) for e in events if e.data is not None and e.data != "[DONE]"]


def read_stream(api: str, data: bytes) -> tuple[str, dict[str, Any] | None]:
    """The assistant text a client assembles from a streamed reply (every choice's deltas in
    the order they came), and the last ``guardrail`` object found anywhere in an event."""
    text, note = "", None
    for obj in _objects(api, data):
        if not isinstance(obj, dict):
            continue
        if api == OLLAMA:
            text += obj["message"]["content"]
        elif api == CHAT:
            text += "".join(c["delta"].get("content") or "" for c in obj.get("choices", []))
        elif api == MESSAGES:
            delta = obj.get("delta", {})
            if obj["type"] == "content_block_delta" and delta.get("type") == "text_delta":
                text += delta["text"]
        elif obj["type"] == "response.output_text.delta":
            text += obj["delta"]
        note = _find_note(obj) or note
    return text, note


def read_choices(api: str, data: bytes) -> tuple[dict[int, str], dict[str, Any] | None]:
    """The text a client sees per choice (one reply but for Chat Completions' ``n``), and the
    ``guardrail`` annotation where each API carries it (the event itself; Responses: the
    completed response)."""
    texts: dict[int, str] = {}
    note: dict[str, Any] | None = None
    for obj in _objects(api, data):
        assert isinstance(obj, dict), obj
        if api == OLLAMA:
            texts[0] = texts.get(0, "") + obj["message"]["content"]
            note = obj.get("guardrail", note)
        elif api == CHAT:
            for choice in obj["choices"]:
                texts[choice["index"]] = texts.get(choice["index"], "") + (
                    choice["delta"].get("content") or ""
                )
            note = obj.get("guardrail", note)
        elif api == MESSAGES:
            delta = obj.get("delta", {})
            if obj["type"] == "content_block_delta" and delta.get("type") == "text_delta":
                texts[0] = texts.get(0, "") + delta["text"]
            note = obj.get("guardrail", note)
        else:
            if obj["type"] == "response.output_text.delta":
                texts[0] = texts.get(0, "") + obj["delta"]
            if obj["type"] == "response.completed":
                note = obj["response"].get("guardrail")
    return texts, note
