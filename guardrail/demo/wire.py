"""Reply bodies of the demo upstream for the APIs other than Chat Completions (pure builders).

The shapes follow the public API references: OpenAI Responses (a ``response`` object; SSE events
from ``response.created`` to ``response.completed``), Anthropic Messages (a ``message``; SSE events
from ``message_start`` to ``message_stop``) and Ollama chat (one JSON object; NDJSON lines ending
with a ``done`` line). The demo cuts a reply into word pieces; these functions only build the
bytes around them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence

__all__ = [
    "anthropic_events",
    "anthropic_message",
    "ollama_lines",
    "ollama_reply",
    "response_object",
    "responses_events",
    "sse",
]


def sse(name: str, data: object) -> bytes:
    """One named SSE event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


# --------------------------------------------------------------------------- OpenAI Responses


def _output_item(item_id: str, text: str, status: str) -> dict[str, object]:
    part = {"type": "output_text", "text": text, "annotations": []}
    content = [part] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def response_object(
    rid: str, model: str, text: str, status: str = "completed", tokens: tuple[int, int] = (0, 0)
) -> dict[str, object]:
    """A Responses ``response`` object holding one assistant message with ``text``."""
    output = [_output_item(f"msg_{rid}", text, status)] if status == "completed" else []
    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1],
             "total_tokens": sum(tokens)} if status == "completed" else None  # fmt: skip
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": output, "usage": usage}  # fmt: skip


def responses_events(
    rid: str, model: str, pieces: Sequence[str], tokens: tuple[int, int]
) -> Iterator[bytes]:
    """The SSE events of a streamed Responses reply made of ``pieces``."""
    text, item_id, seq = "".join(pieces), f"msg_{rid}", iter(range(1_000_000))
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    yield sse("response.created", {"type": "response.created", "sequence_number": next(seq),
              "response": response_object(rid, model, "", "in_progress")})  # fmt: skip
    yield sse("response.output_item.added", {
        "type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
        "item": _output_item(item_id, "", "in_progress")})  # fmt: skip
    yield sse("response.content_part.added", {"type": "response.content_part.added",
              "sequence_number": next(seq), **where, "part": part})  # fmt: skip
    for piece in pieces:
        yield sse("response.output_text.delta", {"type": "response.output_text.delta",
                  "sequence_number": next(seq), **where, "delta": piece, "logprobs": []})  # fmt: skip
    yield sse("response.output_text.done", {"type": "response.output_text.done",
              "sequence_number": next(seq), **where, "text": text, "logprobs": []})  # fmt: skip
    yield sse("response.content_part.done", {"type": "response.content_part.done",
              "sequence_number": next(seq), **where, "part": {**part, "text": text}})  # fmt: skip
    yield sse("response.output_item.done", {
        "type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0,
        "item": _output_item(item_id, text, "completed")})  # fmt: skip
    yield sse("response.completed", {"type": "response.completed", "sequence_number": next(seq),
              "response": response_object(rid, model, text, "completed", tokens)})  # fmt: skip


# --------------------------------------------------------------------------- Anthropic Messages


def anthropic_message(
    mid: str, model: str, text: str, tokens: tuple[int, int], stop: str | None = "end_turn"
) -> dict[str, object]:
    """An Anthropic ``message`` with one text block (no block while it is being streamed)."""
    content = [{"type": "text", "text": text}] if stop is not None else []
    return {"id": mid, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}  # fmt: skip


def anthropic_events(
    mid: str, model: str, pieces: Sequence[str], tokens: tuple[int, int]
) -> Iterator[bytes]:
    """The SSE events of a streamed Anthropic reply made of ``pieces``."""
    start = anthropic_message(mid, model, "", (tokens[0], 1), stop=None)
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse("content_block_start", {"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}})  # fmt: skip
    yield sse("ping", {"type": "ping"})
    for piece in pieces:
        yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                  "delta": {"type": "text_delta", "text": piece}})  # fmt: skip
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse("message_delta", {"type": "message_delta",
              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": {"output_tokens": tokens[1]}})  # fmt: skip
    yield sse("message_stop", {"type": "message_stop"})


# --------------------------------------------------------------------------- Ollama


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def ollama_reply(model: str, text: str, tokens: tuple[int, int]) -> dict[str, object]:
    """The ``done`` object of an Ollama chat reply (the whole reply when not streamed)."""
    return {"model": model, "created_at": _stamp(),
            "message": {"role": "assistant", "content": text}, "done": True,
            "done_reason": "stop", "prompt_eval_count": tokens[0],
            "eval_count": tokens[1]}  # fmt: skip


def ollama_lines(model: str, pieces: Sequence[str], tokens: tuple[int, int]) -> Iterator[bytes]:
    """The NDJSON lines of a streamed Ollama chat reply made of ``pieces``."""
    for piece in pieces:
        line = {"model": model, "created_at": _stamp(),
                "message": {"role": "assistant", "content": piece}, "done": False}  # fmt: skip
        yield json.dumps(line).encode() + b"\n"
    yield json.dumps(ollama_reply(model, "", tokens)).encode() + b"\n"
