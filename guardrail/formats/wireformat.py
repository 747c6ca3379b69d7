"""``WireFormat``: what one chat API is on the wire, declared by its format module.

Each format module ends with one ``FORMAT = WireFormat(...)`` naming its API, its chat
endpoints, its request and reply parsers, its rewriter, its stream codec and its error body;
:mod:`guardrail.formats.registry` collects them. Nothing here knows any API by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.formats import ChatRequest
from guardrail.formats.streams import StreamCodec

__all__ = ["WireFormat", "openai_error"]


def openai_error(status: int, kind: str, code: str, message: str) -> object:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``: the default,
    also used for paths guardrail does not inspect."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _never(segments: Sequence[str]) -> bool:
    return False


def _no_user(body: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class WireFormat:
    """One chat API. ``endpoints``: the last path segments of its chat endpoint(s), compared
    lower-case after percent-decoding; ``excludes(segments)`` refuses a path that ends like one
    but is something else (OpenAI's ``threads/*/messages`` is not Anthropic's ``messages``)."""

    name: str
    endpoints: tuple[tuple[str, ...], ...]
    parse_request: Callable[[object], ChatRequest]
    reply_texts: Callable[[object], list[str | None]]
    apply: Callable[[object, list[str | None], Mapping[str, Any]], object]
    with_instruction: Callable[[object, str], dict[str, Any]]
    stream_codec: Callable[[int | None], StreamCodec[Any]]
    stream_media_type: str
    error_body: Callable[[int, str, str, str], object] = openai_error
    excludes: Callable[[Sequence[str]], bool] = field(default=_never)
    user_of: Callable[[Mapping[str, Any]], str | None] = field(default=_no_user)
    """The end user's id in the field the API defines for it (raw), or None."""
