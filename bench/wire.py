"""Response bytes the mock upstream sends: OpenAI Chat Completions and Anthropic Messages.

Pure functions, no I/O. Everything the mock sends is built once at start-up from these, so the
mock's per-request work is a lookup and a socket write. HTTP framing is HTTP/1.1 keep-alive:
``Content-Length`` for whole bodies, ``Transfer-Encoding: chunked`` for streams (one HTTP chunk
per event, as real APIs do).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LAST_CHUNK",
    "Reply",
    "anthropic_events",
    "anthropic_message",
    "build_reply",
    "chat_chunks",
    "chat_completion",
    "chunk",
    "http_head",
    "http_response",
    "split_text",
]

LAST_CHUNK = b"0\r\n\r\n"
_CREATED = 1_700_000_000


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def split_text(text: str, pieces: int) -> list[str]:
    """``text`` cut into ``pieces`` parts of about equal length, cuts only before a space.

    The parts joined give back ``text``. Fewer parts come back when there are fewer words.
    """
    words = text.split(" ")
    pieces = max(1, min(pieces, len(words)))
    out: list[str] = []
    per = len(words) / pieces
    for i in range(pieces):
        part = " ".join(words[round(i * per) : round((i + 1) * per)])
        out.append(part if i == 0 else " " + part)
    return out


def http_response(status: str, content_type: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 response with ``Content-Length``."""
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def http_head(content_type: str) -> bytes:
    """The head of a chunked (streamed) HTTP/1.1 200 response."""
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n"
        "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    ).encode("ascii")


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying ``data``."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# --------------------------------------------------------------------------- OpenAI


def chat_completion(text: str, n: int) -> bytes:
    """A non-streamed ``chat.completion`` body whose one choice says ``text``."""
    words = len(text.split())
    return _json(
        {
            "id": f"chatcmpl-bench{n}",
            "object": "chat.completion",
            "created": _CREATED,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": words, "total_tokens": 40 + words},
        }
    )


def _chat_event(n: int, delta: Mapping[str, object], finish: str | None) -> bytes:
    body = {
        "id": f"chatcmpl-bench{n}",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + _json(body) + b"\n\n"


def chat_chunks(text: str, n: int, pieces: int) -> list[bytes]:
    """SSE events of a streamed completion: a role event, ``pieces`` text events, the finish
    event, then ``[DONE]``. Index 1 is the first event that carries text."""
    events = [_chat_event(n, {"role": "assistant", "content": ""}, None)]
    events += [_chat_event(n, {"content": part}, None) for part in split_text(text, pieces)]
    events.append(_chat_event(n, {}, "stop"))
    events.append(b"data: [DONE]\n\n")
    return events


# --------------------------------------------------------------------------- Anthropic


def anthropic_message(text: str, n: int) -> bytes:
    """A non-streamed Messages API body with one text block."""
    return _json(
        {
            "id": f"msg_bench{n}",
            "type": "message",
            "role": "assistant",
            "model": "bench-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 40, "output_tokens": len(text.split())},
        }
    )


def _sse(event: str, data: Mapping[str, object]) -> bytes:
    return b"event: " + event.encode("ascii") + b"\ndata: " + _json(data) + b"\n\n"


def anthropic_events(text: str, n: int, pieces: int) -> list[bytes]:
    """Messages API stream events; index 2 is the first event that carries text."""
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_bench{n}",
            "type": "message",
            "role": "assistant",
            "model": "bench-model",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 40, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    events = [_sse("message_start", start), _sse("content_block_start", block)]
    for part in split_text(text, pieces):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": part},
        }
        events.append(_sse("content_block_delta", delta))
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": len(text.split())},
    }
    events.append(_sse("message_delta", end))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


# --------------------------------------------------------------------------- prebuilt replies


@dataclass(frozen=True)
class Reply:
    """Everything the mock may send for one scripted reply, prebuilt.

    ``whole`` is a complete HTTP response; ``head`` + ``events`` (each already an HTTP chunk)
    + :data:`LAST_CHUNK` is a stream; ``first_text`` is the index of the first event with text.
    """

    whole: bytes
    head: bytes
    events: tuple[bytes, ...]
    first_text: int


def build_reply(api: str, text: str, n: int, pieces: int) -> Reply:
    """Prebuild the ``api`` (``openai`` or ``anthropic``) responses for ``text``."""
    if api == "openai":
        body, events, first = chat_completion(text, n), chat_chunks(text, n, pieces), 1
    else:
        body, events, first = anthropic_message(text, n), anthropic_events(text, n, pieces), 2
    return Reply(
        whole=http_response("200 OK", "application/json", body),
        head=http_head("text/event-stream; charset=utf-8"),
        events=tuple(chunk(e) for e in events),
        first_text=first,
    )
