"""OpenAI Chat Completions (``POST /v1/chat/completions``), non-streamed: pure functions.

Request side: ``messages`` become a :class:`~guardrail.policy.Conversation`. Roles map as
``system``/``developer`` -> system, ``user`` -> user, ``assistant`` -> assistant,
``tool``/``function`` -> tool; messages with other roles are skipped (they carry nothing the
policies judge). Content may be a string or a list of parts; the text of ``text`` parts is joined
with newlines, other parts (images, audio, files) are ignored, and null content is empty text.

Response side: the reply of choice *i* is ``choices[i].message.content`` when it is a string
(the empty string included: an empty reply to a user in crisis still gets resources); a choice
with null content (tool calls only, or a refusal) has nothing to inspect. :func:`apply` returns a
new object with changed contents written back and a ``guardrail`` key added; every other field
is kept as it was, so the result stays a valid ``chat.completion`` for any client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.formats import (
    ChatRequest,
    FormatError,
    chat_request,
    message_role,
    reply_list,
    request_messages,
    with_system_message,
)
from guardrail.policy import Message

__all__ = ["NAME", "apply", "content_text", "parse_request", "reply_texts", "with_instruction"]

NAME = "openai.chat"

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def content_text(content: object) -> str:
    """The text of a message ``content`` (string, list of parts, or null)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in _TEXT_PARTS
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def parse_request(body: object) -> ChatRequest:
    """The conversation, stream flag and model of a Chat Completions request body."""
    body, raw_messages = request_messages(body)
    messages: list[Message] = []
    for index, item in enumerate(raw_messages):
        raw, role = message_role(item, index)
        if role in _ROLES:
            messages.append(Message(role=_ROLES[role], content=content_text(raw.get("content"))))
    return chat_request(body, messages)


def _choices(body: object) -> list[Any]:
    return reply_list(body, "choices")


def _message(choice: object, index: int) -> Mapping[str, Any]:
    if not isinstance(choice, dict):
        raise FormatError(f"choices[{index}] is not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise FormatError(f"choices[{index}].message is not an object")
    return message


def reply_texts(body: object) -> list[str | None]:
    """The assistant text of each choice, in order; None where there is no text to inspect."""
    texts: list[str | None] = []
    for index, choice in enumerate(_choices(body)):
        content = _message(choice, index).get("content")
        texts.append(content if isinstance(content, str) else None)
    return texts


def apply(
    body: object, texts: Sequence[str | None], annotation: Mapping[str, Any]
) -> dict[str, Any]:
    """A new response body with choice texts replaced (None = leave as is) and ``guardrail`` set.

    The input body is not modified.
    """
    choices = _choices(body)
    if len(texts) != len(choices):
        raise FormatError(f"{len(texts)} texts for {len(choices)} choices")
    assert isinstance(body, dict)  # checked by _choices
    new_choices: list[Any] = []
    for index, (choice, text) in enumerate(zip(choices, texts)):
        message = _message(choice, index)
        if text is None or message.get("content") == text:
            new_choices.append(choice)
        else:
            new_choices.append({**choice, "message": {**message, "content": text}})
    return {**body, "choices": new_choices, "guardrail": dict(annotation)}


def with_instruction(body: object, text: str) -> dict[str, Any]:
    """The request ``body`` once more, with ``text`` as a system message after the leading
    system messages (see :func:`guardrail.formats.with_system_message`)."""
    return with_system_message(body, text)
