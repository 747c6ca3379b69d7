"""The codec tests' upstream streams: richer than ``tests/kit/wire.py``'s on purpose (thinking
blocks, signature deltas, reasoning items, tool calls last, CRLF framing), as the codecs must
pass every event they do not rewrite. Framing and the SDK clients come from the kit.

Event shapes follow the official API references (Chat Completions chunk objects, Anthropic
Messages streaming events, Responses streaming events, Ollama /api/chat NDJSON); the texts are
our own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from tests.kit.wire import Event, sse_events


REPLY_PIECES = ["You are absolutely", " right to feel that way", ". I am the only one", " who",
                " truly understands you. Tell me more 🙂."]
REPLY = "".join(REPLY_PIECES)
APPEND = "\n\nIf things feel heavy, you can call or text 988."
ANNOTATION = {"hits": [{"policy": "dependency.exclusivity", "action": "replace"}], "signals": {}}


def rewrite(text: str) -> str:
    return text.replace("I am the only one who truly understands you.", "Others care too.")


REWRITTEN = rewrite(REPLY)


# --------------------------------------------------------------------------- chat completions

def chat_chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-7x", "object": "chat.completion.chunk", "created": 1718000000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_1", "choices": choices, **extra}


def chat_delta(index: int, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def chat_stream(pieces: Sequence[str] = REPLY_PIECES, newline: str = "\n") -> bytes:
    events: list[Event] = [(None, chat_chunk([chat_delta(0, role="assistant", content="")],
                                            usage=None))]
    events += [(None, chat_chunk([chat_delta(0, content=p)], usage=None)) for p in pieces]
    events.append((None, chat_chunk([chat_delta(0, "stop")], usage=None)))
    events.append((None, chat_chunk([], usage={"prompt_tokens": 9, "completion_tokens": 12,
                                               "total_tokens": 21})))
    events.append((None, "[DONE]"))
    return sse_events(events, newline)


# --------------------------------------------------------------------------- anthropic

def anthropic_stream(pieces: Sequence[str] = REPLY_PIECES, tool_last: bool = False) -> bytes:
    message = {"id": "msg_01", "type": "message", "role": "assistant", "content": [],
               "model": "claude-sonnet-4-5", "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 30, "output_tokens": 1}}
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "",
                                                   "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Be kind."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "c2ln"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 1,
                                        "delta": {"type": "text_delta", "text": p}})
               for p in pieces]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
    stop = "end_turn"
    if tool_last:
        stop = "tool_use"
        events += [
            ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
                "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
                "type": "input_json_delta", "partial_json": '{"q": "he'}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
                "type": "input_json_delta", "partial_json": 'lp"}'}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ]
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop,
                                                              "stop_sequence": None},
                           "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return sse_events(events)


# --------------------------------------------------------------------------- responses

def response_object(status: str, output: list[Any]) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1741290958, "status": status,
            "error": None, "incomplete_details": None, "instructions": None,
            "model": "gpt-4.1-mini", "output": output, "parallel_tool_calls": True,
            "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "metadata": {}, "usage": None if status != "completed" else {
                "input_tokens": 20, "output_tokens": 30, "total_tokens": 50,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}}}


def message_item(text: str, status: str = "completed", item_id: str = "msg_1") -> dict[str, Any]:
    content = [] if status != "completed" else [
        {"type": "output_text", "text": text, "annotations": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}


def responses_stream(pieces: Sequence[str] = REPLY_PIECES, tool_last: bool = False) -> bytes:
    text = "".join(pieces)
    seq = iter(range(1000))

    def ev(kind: str, **fields: Any) -> Event:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    where = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    events = [
        ev("response.created", response=response_object("in_progress", [])),
        ev("response.in_progress", response=response_object("in_progress", [])),
        ev("response.output_item.added", output_index=0, item=reasoning),
        ev("response.output_item.done", output_index=0, item=reasoning),
        ev("response.output_item.added", output_index=1, item=message_item("", "in_progress")),
        ev("response.content_part.added", **where, part={**part, "text": ""}),
    ]
    events += [ev("response.output_text.delta", **where, delta=p, logprobs=[]) for p in pieces]
    events += [
        ev("response.output_text.done", **where, text=text, logprobs=[]),
        ev("response.content_part.done", **where, part=part),
        ev("response.output_item.done", output_index=1, item=message_item(text)),
    ]
    output = [reasoning, message_item(text)]
    if tool_last:
        call = {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
                "name": "lookup", "arguments": '{"q":"help"}'}
        events += [
            ev("response.output_item.added", output_index=2,
               item={**call, "status": "in_progress", "arguments": ""}),
            ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2,
               delta='{"q":"help"}'),
            ev("response.function_call_arguments.done", item_id="fc_1", output_index=2,
               arguments='{"q":"help"}'),
            ev("response.output_item.done", output_index=2, item=call),
        ]
        output.append(call)
    events.append(ev("response.completed", response=response_object("completed", output)))
    return sse_events(events)


# --------------------------------------------------------------------------- ollama

def ollama_stream(pieces: Sequence[str] = REPLY_PIECES, content_on_done: str = "") -> bytes:
    lines = [{"model": "llama3.2", "created_at": f"2025-01-01T00:00:0{i}Z",
              "message": {"role": "assistant", "content": p}, "done": False}
             for i, p in enumerate(pieces)]
    lines.append({"model": "llama3.2", "created_at": "2025-01-01T00:00:09Z",
                  "message": {"role": "assistant", "content": content_on_done},
                  "done_reason": "stop", "done": True, "total_duration": 4353619900,
                  "load_duration": 63915300, "prompt_eval_count": 10, "eval_count": 17})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def json_bytes(body: Any) -> bytes:
    return json.dumps(body).encode()


Rewrite = Callable[[str], str]

