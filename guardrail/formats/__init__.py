"""Wire formats: one pure module per API format, plus what they share.

Every format module (``openai_chat``, ``openai_responses``, ``anthropic_messages``, ``ollama_chat``)
has the same shape and imports no I/O, logging or metrics:

    NAME = "openai.chat"
    parse_request(body: object) -> ChatRequest
    reply_texts(body: object) -> list[str | None]     # one entry per choice; None = nothing to inspect
    apply(body: object, texts: list[str | None], annotation: dict) -> dict
    with_instruction(body: object, text: str) -> dict   # the request once more, told ``text``

Anything a format module cannot make sense of raises :class:`FormatError`; the pipeline turns that
into a pass-through annotated as not inspected, never into a failed request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guardrail.errors import FormatError  # re-exported: its old home
from guardrail.policy import Conversation, Message

__all__ = [
    "ChatRequest",
    "FormatError",
    "chat_request",
    "anthropic_user",
    "openai_user",
    "message_role",
    "reply_list",
    "request_messages",
    "with_system_message",
]




@dataclass(frozen=True)
class ChatRequest:
    """What the pipeline needs to know about a chat request, independent of its wire format.

    ``conversation`` is the context the reply answers (system messages included, in order);
    ``stream`` says whether the client asked for a streamed reply; ``model`` is the requested model
    name when the request names one; ``user`` is the end user's id in the field the API defines
    for it (raw: the state layer hashes it before anything keeps it), when there is one.
    """

    conversation: Conversation
    stream: bool
    model: str | None
    user: str | None = None


def request_messages(body: object) -> tuple[dict[str, Any], list[Any]]:
    """A request body and its ``messages`` list, or FormatError naming what is missing."""
    if not isinstance(body, dict):
        raise FormatError("request body is not a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise FormatError("request has no 'messages' list")
    return body, messages


def message_role(raw: object, index: int) -> tuple[dict[str, Any], str]:
    """``messages[index]`` and its role, or FormatError when it is not an object with a string
    role."""
    if not isinstance(raw, dict):
        raise FormatError(f"messages[{index}] is not an object")
    role = raw.get("role")
    if not isinstance(role, str):
        raise FormatError(f"messages[{index}].role is not a string")
    return raw, role


def _user_text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:512] or None


def openai_user(body: Mapping[str, Any]) -> str | None:
    """OpenAI's end-user id: ``safety_identifier``, else the older ``user``."""
    return _user_text(body.get("safety_identifier")) or _user_text(body.get("user"))


def anthropic_user(body: Mapping[str, Any]) -> str | None:
    """Anthropic's end-user id: ``metadata.user_id``."""
    metadata = body.get("metadata")
    return _user_text(metadata.get("user_id")) if isinstance(metadata, Mapping) else None


def chat_request(
    body: Mapping[str, Any],
    messages: list[Message],
    *,
    stream_default: bool = False,
    user: str | None = None,
) -> ChatRequest:
    """The :class:`ChatRequest` of a request ``body`` whose conversation is ``messages``.

    ``stream`` is the body's ``"stream"`` flag when it is a boolean, else ``stream_default``
    (Ollama streams unless told not to); ``model`` is kept only when it is a string.
    """
    flag = body.get("stream")
    model = body.get("model")
    return ChatRequest(
        conversation=Conversation(messages=tuple(messages)),
        stream=flag if isinstance(flag, bool) else stream_default,
        model=model if isinstance(model, str) else None,
        user=user,
    )


def reply_list(body: object, key: str) -> list[Any]:
    """The list under ``key`` of a reply body (``choices``, ``content``, ``output``), or
    FormatError naming what is missing."""
    if not isinstance(body, dict):
        raise FormatError("response body is not a JSON object")
    value = body.get(key)
    if not isinstance(value, list):
        raise FormatError(f"response has no {key!r} list")
    return value


_SYSTEM_ROLES = frozenset({"system", "developer"})


def with_system_message(body: object, text: str) -> dict[str, Any]:
    """A copy of a ``messages`` request body with a system message ``text`` inserted after the
    leading system (or developer) messages, so it reads as the operator's last word before the
    conversation. The input is not modified; raises FormatError without a ``messages`` list."""
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        raise FormatError("request has no 'messages' list")
    messages: list[Any] = list(body["messages"])
    at = 0
    while at < len(messages) and isinstance(messages[at], Mapping):
        if messages[at].get("role") not in _SYSTEM_ROLES:
            break
        at += 1
    messages.insert(at, {"role": "system", "content": text})
    return {**body, "messages": messages}
