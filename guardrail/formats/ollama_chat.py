"""Ollama chat (``POST /api/chat``), non-streamed and streamed (NDJSON): pure functions.

Request side: ``messages`` (``{"role", "content": str, "images"?, "tool_calls"?}``) become the
conversation; roles ``system``, ``user``, ``assistant`` and ``tool`` are kept, others skipped.
Ollama streams by default: ``stream`` is true unless the request says ``"stream": false``.

Response side: the reply is ``message.content`` (``thinking`` and ``tool_calls`` are never read
nor changed). :func:`apply` sets ``message.content`` and adds a ``guardrail`` key to the
response object.

Streaming: :class:`ChatStream`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.formats import (
    ChatRequest,
    FormatError,
    chat_request,
    message_role,
    request_messages,
    with_system_message,
)
from guardrail.formats.ndjson import NDJSONDecoder, NDJSONLine, encode_line
from guardrail.formats.streams import (
    DecodedStream,
    Forward,
    ReplyEnd,
    Slot,
    StreamItem,
    Terminator,
    TextDelta,
    TextEnd,
    scrub,
)
from guardrail.formats.wireformat import WireFormat
from guardrail.policy import Message

__all__ = [
    "FORMAT","NAME", "ChatStream", "apply", "parse_request", "reply_texts", "with_instruction"]

NAME = "ollama.chat"

_ROLES = frozenset({"system", "user", "assistant", "tool"})


def parse_request(body: object) -> ChatRequest:
    """The conversation, stream flag (default true) and model of an Ollama chat request."""
    body, raw_messages = request_messages(body)
    messages: list[Message] = []
    for index, item in enumerate(raw_messages):
        raw, role = message_role(item, index)
        content = raw.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise FormatError(f"messages[{index}].content is not a string")
        if role in _ROLES:
            messages.append(Message(role=role, content=content))
    return chat_request(body, messages, stream_default=True)


def _message(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FormatError("response body is not a JSON object")
    message = body.get("message")
    if not isinstance(message, dict):
        raise FormatError("response has no 'message' object")
    return message


def reply_texts(body: object) -> list[str | None]:
    """``[message.content]``, or ``[None]`` when it is not a string."""
    content = _message(body).get("content")
    return [content if isinstance(content, str) else None]


def apply(
    body: object, texts: Sequence[str | None], annotation: Mapping[str, Any]
) -> dict[str, Any]:
    """A new response with ``message.content`` replaced (None = leave as is) and ``guardrail``.

    The input body is not modified.
    """
    message = _message(body)
    if len(texts) != 1:
        raise FormatError(f"{len(texts)} texts for one message")
    assert isinstance(body, dict)  # checked by _message
    new_body = dict(body)
    if texts[0] is not None and texts[0] != message.get("content"):
        new_body["message"] = {**message, "content": texts[0]}
    new_body["guardrail"] = dict(annotation)
    return new_body


class ChatStream(DecodedStream[NDJSONLine]):
    """Ollama ``/api/chat`` NDJSON stream, as a stream codec (see ``streams``).

    One reply (``reply == 0``) in one slot (``0``).

    Split:
    * a line with ``done: false`` and non-empty ``message.content``: :class:`TextDelta`. The line
      is dropped unless its message carries more (``thinking``, ``tool_calls``, ``images``), in
      which case it is forwarded with ``content: ""``.
    * the ``done: true`` line: its content (if any) as a TextDelta, then :class:`TextEnd`,
      :class:`ReplyEnd`, and the line itself as the :class:`Terminator`.
    * anything else (``{"error": ...}`` lines, blank or malformed lines) is forwarded untouched.
    * a ``guardrail`` key an upstream put in a line (or its message) is removed
      (``streams.scrub``); nothing after the done line is forwarded.

    Build: released and appended text are lines ``{"model", "created_at", "message": {"role":
    "assistant", "content": text}, "done": false}`` copying ``model`` and ``created_at`` from the
    first line of the reply (never a later one: which lines had been read when a piece of text was
    released depends on how the bytes were cut, and the bytes sent must not), placed before the
    done line. The annotation is a ``guardrail`` field on the
    done line (whose ``message.content`` is emptied when its text went through the guard; its
    durations, counts and ``done_reason`` are kept). ``finish(None, ...)`` synthesises a done line
    when the upstream broke off.
    """

    name = NAME
    media_type = "application/x-ndjson"

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._decoder = NDJSONDecoder(max_event_bytes)
        self.progress = False
        self._model: object = ""
        self._created: object = ""
        self._template = False  # model and created_at taken from the reply's first line
        self._ended = False
        self._finished = False  # the done line came


    def feed(self, event: NDJSONLine) -> list[StreamItem[NDJSONLine]]:
        if self._finished:  # after the done line nothing is the reply's
            return []
        obj = event.value
        if isinstance(obj, dict) and (clean := scrub(obj)) is not None:
            obj, event = clean, NDJSONLine(encode_line(clean), clean)
        if not isinstance(obj, dict) or "error" in obj:
            return [Forward(event)]
        if not self._template:
            self._template = True
            self._model = obj.get("model", self._model)
            self._created = obj.get("created_at", self._created)
        message = obj.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        text = content if isinstance(content, str) else ""
        items: list[StreamItem[NDJSONLine]] = [TextDelta(0, 0, text)] if text else []
        if obj.get("done") is True:
            self._finished = True
            return [*items, *self._end_reply(), Terminator(event)]
        if not text:
            return [Forward(event)]
        assert isinstance(message, dict)
        rest = {k: v for k, v in message.items() if k not in ("role", "content") and v}
        if rest:
            cleared = {**obj, "message": {**message, "content": ""}}
            items.insert(0, Forward(NDJSONLine(encode_line(cleared), cleared)))
        return items

    def _end_reply(self) -> list[StreamItem[NDJSONLine]]:
        if self._ended:
            return []
        self._ended = True
        return [TextEnd(0, 0), ReplyEnd(0)]

    def close(self) -> list[StreamItem[NDJSONLine]]:
        items = [item for line in self._decoder.flush() for item in self.feed(line)]
        return [*items, *self._end_reply()]

    def text(self, slot: Slot, text: str) -> bytes:
        if not text:
            return b""
        return encode_line(
            {
                "model": self._model,
                "created_at": self._created,
                "message": {"role": "assistant", "content": text},
                "done": False,
            }
        )

    def append(self, reply: int, text: str) -> bytes:
        return self.text(0, text)

    def render(self, event: NDJSONLine) -> bytes:
        return event.raw

    def finish(self, event: NDJSONLine | None, annotation: Mapping[str, object] | None) -> bytes:
        obj = event.value if event is not None else None
        if event is not None and not isinstance(obj, dict):
            return event.raw
        if not isinstance(obj, dict):
            obj = {
                "model": self._model,
                "created_at": self._created,
                "message": {"role": "assistant", "content": ""},
                "done": True,
            }
        new = dict(obj)
        message = obj.get("message")
        if isinstance(message, dict) and message.get("content"):
            new["message"] = {**message, "content": ""}
        if annotation is not None:
            new["guardrail"] = dict(annotation)
        if event is not None and new == obj:
            return event.raw
        return encode_line(new)


def with_instruction(body: object, text: str) -> dict[str, Any]:
    """The request ``body`` once more, with ``text`` as a system message after the leading
    system messages (see :func:`guardrail.formats.with_system_message`)."""
    return with_system_message(body, text)


def error_body(status: int, kind: str, code: str, message: str) -> object:
    """Ollama's error body ``{"error": "..."}``."""
    return {"error": message}


FORMAT = WireFormat(
    name=NAME,
    endpoints=(("api", "chat"),),
    parse_request=parse_request,
    reply_texts=reply_texts,
    apply=apply,
    with_instruction=with_instruction,
    stream_codec=ChatStream,
    stream_media_type=ChatStream.media_type,
    error_body=error_body,
)
"""This API, for :mod:`guardrail.formats.registry`."""
