"""The registry of chat APIs: every name, endpoint, parser and stream codec comes from here.

Each API is one format module ending with a ``FORMAT = WireFormat(...)``; this module lists
them once, in :data:`FORMATS`. Everything else derives from it: API detection from a request
path (:func:`detect_api`), the ``api`` config values, the ``api`` metric label values, the
stream codec of a guarded stream, the error body of a refusal. Adding a fifth API is one new
module in ``guardrail/formats/`` and one line in :data:`_REGISTERED`.

Path -> API (``POST`` only; case, percent-encoding, empty segments, a trailing slash,
backslashes and ``;params`` do not matter, so no spelling dodges inspection; most specific
endpoint first, so ``api/chat`` wins over a shorter ending):

=========================  ======================  ==========================================
path ends with             API                     examples
=========================  ======================  ==========================================
``chat/completions``       ``openai.chat``         ``/v1/chat/completions``, Azure deployments
``responses``              ``openai.responses``    ``/v1/responses``
``messages``               ``anthropic.messages``  ``/v1/messages`` (not ``threads/*/messages``)
``api/chat``               ``ollama.chat``         ``/api/chat``
=========================  ======================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from guardrail.formats import anthropic_messages, ollama_chat, openai_chat, openai_responses
from guardrail.formats.streams import StreamCodec
from guardrail.formats.wireformat import WireFormat, openai_error

__all__ = [
    "API_NAMES",
    "ENDPOINTS",
    "FORMATS",
    "STREAM_TYPES",
    "detect_api",
    "error_body",
    "new_stream_codec",
]

_REGISTERED: tuple[WireFormat, ...] = (
    openai_chat.FORMAT,
    openai_responses.FORMAT,
    anthropic_messages.FORMAT,
    ollama_chat.FORMAT,
)

FORMATS: Mapping[str, WireFormat] = {fmt.name: fmt for fmt in _REGISTERED}
"""Every API by name."""
API_NAMES: tuple[str, ...] = tuple(FORMATS)
"""The API names, in registration order (config values, metric labels)."""
ENDPOINTS: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    sorted(
        ((tail, fmt.name) for fmt in _REGISTERED for tail in fmt.endpoints),
        key=lambda entry: -len(entry[0]),
    )
)
"""The last path segments of each API's chat endpoint, longest first."""
STREAM_TYPES: tuple[str, ...] = tuple(
    dict.fromkeys(
        ("text/event-stream", "application/x-ndjson", "application/ndjson")
        + tuple(fmt.stream_media_type for fmt in _REGISTERED)
    )
)
"""Content types of streamed replies (SSE; NDJSON, under both of its names)."""


def _segments(raw_path: bytes) -> list[str]:
    path = unquote(raw_path.split(b"?", 1)[0].decode("latin-1")).lower().replace("\\", "/")
    segments = (s.split(";", 1)[0] for s in path.split("/"))
    return [s for s in segments if s]


def detect_api(method: str, raw_path: bytes) -> str | None:
    """The API whose chat endpoint ``method raw_path`` is (see the module table), else None."""
    if method.upper() != "POST":
        return None
    segments = _segments(raw_path)
    for tail, api in ENDPOINTS:
        if tuple(segments[-len(tail) :]) == tail:
            return None if FORMATS[api].excludes(segments) else api
    return None


def new_stream_codec(api: str, max_event_bytes: int | None = None) -> StreamCodec[Any]:
    """A fresh stream codec of API ``api`` (KeyError if unknown); ``max_event_bytes`` caps one
    upstream event or line (None: no cap)."""
    return FORMATS[api].stream_codec(max_event_bytes)


def error_body(api: str | None, status: int, kind: str, code: str, message: str) -> object:
    """An error body in the format of the client's API (OpenAI's for anything else)."""
    fmt = FORMATS.get(api or "")
    return (fmt.error_body if fmt is not None else openai_error)(status, kind, code, message)
