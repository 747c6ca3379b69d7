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
    openai_user,
    message_role,
    reply_list,
    request_messages,
    with_system_message,
)
from guardrail.formats.sse import SSEDecoder, SSEEvent
from guardrail.formats.streams import (
    DecodedStream,
    Forward,
    ReplyEnd,
    Slot,
    StreamItem,
    Terminator,
    TextDelta,
    TextEnd,
    load_json_object,
    scrub_event,
    sse_event,
)
from guardrail.formats.wireformat import WireFormat
from guardrail.policy import Message

__all__ = [
    "FORMAT",
    "NAME",
    "ChatCompletionsStream", "apply", "content_text", "parse_request", "reply_texts", "with_instruction"]

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
    return chat_request(body, messages, user=openai_user(body))


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


# --------------------------------------------------------------------------- chat completions


class ChatCompletionsStream(DecodedStream[SSEEvent]):
    """OpenAI Chat Completions ``stream: true`` chunks (``data: {chat.completion.chunk}`` events).

    Split:
    * ``choices[i].delta.content`` (non-empty) is a :class:`TextDelta` for reply ``i``, slot ``i``.
      The chunk is dropped when nothing else is in it; otherwise the rest of it (role, tool calls,
      refusal, logprobs, finish_reason, usage, other choices) is forwarded as a residual chunk
      without the content. Residual logprobs describe the upstream tokens, not released text.
    * a choice with ``finish_reason`` gives ``TextEnd(i)`` and ``ReplyEnd(i)`` *before* its chunk
      is forwarded, so released and appended text precede the finish chunk.
    * ``data: [DONE]`` ends any choice still open, then is the :class:`Terminator`.
    * anything else (usage-only chunks, error objects, comments, malformed data) is forwarded.
    * a ``guardrail`` key an upstream put in a chunk is removed (:func:`scrub`), so it is never
      forwarded nor copied into built chunks; nothing after ``[DONE]`` is forwarded.

    Build: text chunks copy every top-level field of the first chunk seen (id, object, created,
    model, system_fingerprint, service_tier, ...) except ``choices`` (and ``usage`` set to null
    when present), with ``choices: [{"index": i, "delta": {"content": text}, "finish_reason":
    null}]``. Appended text is such a chunk for the reply's choice. The annotation rides on a
    chunk of the same template with ``choices: []`` and an extra ``guardrail`` key, just before
    ``data: [DONE]`` (the SDKs accept extra keys; ``choices: []`` is what usage chunks look like).
    A missing ``[DONE]`` is synthesised by ``finish(None, ...)``.
    """

    name = "openai.chat"
    media_type = "text/event-stream"

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._decoder = SSEDecoder(max_event_bytes)
        self.progress = False
        self._template: dict[str, object] | None = None
        self._open: dict[int, None] = {}  # choices seen and not yet finished, in order
        self._ended: set[int] = set()
        self._done = False  # [DONE] came: the stream is over


    def feed(self, event: SSEEvent) -> list[StreamItem[SSEEvent]]:
        if self._done:
            return []
        if event.data is not None and event.data.strip() == "[DONE]":
            self._done = True
            return [*self._end_open(), Terminator(event)]
        chunk = load_json_object(event.data)
        if chunk is not None:
            event, chunk = scrub_event(event, chunk)
        choices = chunk.get("choices") if chunk is not None else None
        if chunk is None or not isinstance(choices, list):
            return [Forward(event)]
        if self._template is None:
            self._template = {**chunk, "choices": []}  # key order kept for built chunks
            if "usage" in self._template:
                self._template["usage"] = None
        texts: list[StreamItem[SSEEvent]] = []
        ends: list[StreamItem[SSEEvent]] = []
        residual: list[object] = []
        for choice in choices:
            index = choice.get("index") if isinstance(choice, dict) else None
            if not isinstance(choice, dict) or not isinstance(index, int) or index in self._ended:
                residual.append(choice)  # not a choice, or one that already finished: as is
                continue
            self._open.setdefault(index)
            rest = self._split_choice(choice, index, texts)
            if choice.get("finish_reason") is not None and index in self._open:
                del self._open[index]
                self._ended.add(index)
                ends += [TextEnd(index, index), ReplyEnd(index)]
            if rest is not None:
                residual.append(rest)
        if not texts:
            return [*ends, Forward(event)]
        keep = bool(residual) or chunk.get("usage") is not None
        forward: list[StreamItem[SSEEvent]] = (
            [Forward(sse_event({**chunk, "choices": residual}, event.event))] if keep else []
        )
        return [*texts, *ends, *forward] if ends else [*forward, *texts]

    @staticmethod
    def _split_choice(
        choice: dict[str, object], index: int, texts: list[StreamItem[SSEEvent]]
    ) -> dict[str, object] | None:
        """Take the content out of ``choice`` into ``texts``; return what is left (None: nothing)."""
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(content, str) or not content:
            return choice
        texts.append(TextDelta(index, index, content))
        rest_delta = {k: v for k, v in delta.items() if k != "content"}
        rest = {**choice, "delta": rest_delta}
        extra = {k: v for k, v in rest.items() if k not in ("index", "delta") and v is not None}
        return rest if rest_delta or extra else None

    def _end_open(self) -> list[StreamItem[SSEEvent]]:
        items: list[StreamItem[SSEEvent]] = []
        for index in self._open:
            items += [TextEnd(index, index), ReplyEnd(index)]
            self._ended.add(index)
        self._open.clear()
        return items

    def close(self) -> list[StreamItem[SSEEvent]]:
        items = [item for event in self._decoder.flush() for item in self.feed(event)]
        return [*items, *self._end_open()]

    def text(self, slot: Slot, text: str) -> bytes:
        if not text:
            return b""
        choice = {"index": slot, "delta": {"content": text}, "finish_reason": None}
        return sse_event({**self._base(), "choices": [choice]}).raw

    def append(self, reply: int, text: str) -> bytes:
        return self.text(reply, text)

    def render(self, event: SSEEvent) -> bytes:
        return event.encode()

    def finish(self, event: SSEEvent | None, annotation: Mapping[str, object] | None) -> bytes:
        note = b""
        if annotation is not None:
            note = sse_event({**self._base(), "choices": [], "guardrail": dict(annotation)}).raw
        return note + (event.encode() if event is not None else b"data: [DONE]\n\n")

    def _base(self) -> dict[str, object]:
        if self._template is not None:
            return dict(self._template)
        return {
            "id": "chatcmpl-guardrail",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "",
            "choices": [],
        }


FORMAT = WireFormat(
    name=NAME,
    endpoints=(("chat", "completions"),),
    parse_request=parse_request,
    reply_texts=reply_texts,
    apply=apply,
    with_instruction=with_instruction,
    stream_codec=ChatCompletionsStream,
    stream_media_type=ChatCompletionsStream.media_type,
    user_of=openai_user,
)
"""This API, for :mod:`guardrail.formats.registry`."""
