"""Anthropic Messages (``POST /v1/messages``), non-streamed and streamed: pure functions.

Request side: ``system`` (a string, or a list of ``text`` blocks joined with newlines) becomes a
leading system message. Each message's ``content`` is a string or a list of blocks: its ``text``
blocks (joined with newlines) make one message with the message's role; every ``tool_result``
block makes a ``tool`` message (its content: a string or ``text`` blocks), placed before the text
of the same message. Images, documents, ``tool_use``, ``thinking`` and other blocks carry nothing
the policies judge and are skipped; a message with neither text nor tool results is kept as an
empty message so turn counting stays right.

Response side: the reply is **one** text per message: all ``text`` blocks of ``content``
concatenated without separator (Anthropic cuts prose into several text blocks, e.g. around
citations, so the pieces are parts of one text). ``thinking``, ``redacted_thinking``,
``tool_use``, server-tool and other blocks are never read nor changed. :func:`apply` writes the
rewritten text back with :func:`~guardrail.formats.streams.spread_text`: unchanged text stays in
its block, a rewritten sentence goes into the block it came from, appended text goes at the end
of the last text block, prepended text at the start of the first; a text block left empty is
dropped (the API refuses empty text blocks when a client sends the message back); a reply
without text blocks that gets text gains a new text block at the end of ``content``. Block
metadata such as ``citations`` is left as it was. A ``guardrail`` key is added to the message.

Streaming: :class:`MessagesStream`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.formats import (
    ChatRequest,
    FormatError,
    anthropic_user,
    chat_request,
    reply_list,
    request_messages,
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
    spread_text,
    sse_event,
)
from guardrail.formats.wireformat import WireFormat
from guardrail.policy import Message

__all__ = [
    "FORMAT","NAME", "MessagesStream", "apply", "parse_request", "reply_texts", "with_instruction"]

NAME = "anthropic.messages"


def _blocks_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
    return ""


def _message(raw: object, index: int) -> list[Message]:
    if not isinstance(raw, dict):
        raise FormatError(f"messages[{index}] is not an object")
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise FormatError(f"messages[{index}].role is not 'user' or 'assistant'")
    content = raw.get("content")
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    if not isinstance(content, list):
        raise FormatError(f"messages[{index}].content is neither a string nor a list")
    out = [
        Message(role="tool", content=_blocks_text(block.get("content")))
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    has_text = any(isinstance(b, dict) and b.get("type") == "text" for b in content)
    if has_text or not out:
        out.append(Message(role=role, content=_blocks_text(content)))
    return out


def parse_request(body: object) -> ChatRequest:
    """The conversation (system prompt first), stream flag and model of a Messages request."""
    body, raw_messages = request_messages(body)
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        if not isinstance(system, (str, list)):
            raise FormatError("'system' is neither a string nor a list of blocks")
        messages.append(Message(role="system", content=_blocks_text(system)))
    for index, raw in enumerate(raw_messages):
        messages.extend(_message(raw, index))
    return chat_request(body, messages, user=anthropic_user(body))


def _content(body: object) -> list[Any]:
    return reply_list(body, "content")


def _text_positions(content: list[Any]) -> list[int]:
    return [
        i
        for i, block in enumerate(content)
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]


def reply_texts(body: object) -> list[str | None]:
    """``[text of all text blocks]``, or ``[None]`` when the reply has no text block."""
    content = _content(body)
    positions = _text_positions(content)
    if not positions:
        return [None]
    return ["".join(content[i]["text"] for i in positions)]


def apply(
    body: object, texts: Sequence[str | None], annotation: Mapping[str, Any]
) -> dict[str, Any]:
    """A new message with its text replaced (None = leave as is) and ``guardrail`` set.

    The input body is not modified.
    """
    content = _content(body)
    if len(texts) != 1:
        raise FormatError(f"{len(texts)} texts for one message")
    assert isinstance(body, dict)  # checked by _content
    text = texts[0]
    new_content: list[Any] = list(content)
    positions = _text_positions(content)
    if text is not None and positions:
        pieces = spread_text([content[i]["text"] for i in positions], text)
        for i, piece in zip(positions, pieces):
            if piece != content[i]["text"]:
                new_content[i] = {**content[i], "text": piece} if piece else None
        new_content = [block for block in new_content if block is not None]
    elif text:
        new_content.append({"type": "text", "text": text})
    return {**body, "content": new_content, "guardrail": dict(annotation)}


class MessagesStream(DecodedStream[SSEEvent]):
    """Anthropic Messages ``stream: true`` events, as a stream codec (see ``streams``).

    The whole message is one reply (``reply == 0``); a slot is a content block index.

    Split:
    * ``content_block_delta`` with a ``text_delta`` in a text block: :class:`TextDelta`, not
      forwarded. Every other delta (``thinking_delta``, ``signature_delta``,
      ``input_json_delta``, ``citations_delta``) is forwarded untouched.
    * ``content_block_start`` of a text block with non-empty initial text: the start is forwarded
      with ``text: ""`` and the text becomes a TextDelta (so the block ends up holding exactly the
      released text). Other starts are forwarded untouched.
    * ``content_block_stop`` of a text block: the stop event is **held** until the next event
      shows what follows, and then comes its :class:`TextEnd`. If the next event is
      ``message_delta`` or ``message_stop``, a :class:`ReplyEnd` follows the TextEnd, so
      appended text goes into that last text block, before its stop. If it is the start of
      another text block, the TextEnd names it (``into``): the text goes on there, and a
      sentence cut across the two blocks is judged whole (its held start is released into the
      next block). ``ping`` events and comments do not end the hold (they are forwarded
      straight away).
    * ``message_delta`` (or ``message_stop`` if the delta never came) ends the reply and is the
      :class:`Terminator`: it carries the annotation. ``message_start``, ``ping``, ``error``,
      the ``message_stop`` after a ``message_delta``, unknown event types and malformed events
      are forwarded untouched.
    * a ``guardrail`` key an upstream put in any event (or in ``message_start``'s message) is
      removed (``streams.scrub``): a second ``message_delta`` goes out without it; nothing after
      ``message_stop`` is forwarded.

    Build: released text is a ``content_block_delta`` / ``text_delta`` for the slot's index.
    Appended text goes into the last text block when it is the last block of the message and
    has not stopped; otherwise (the message ends with a ``tool_use`` or has no text at all) into a
    new text block after the last block (``content_block_start``, ``content_block_delta``,
    ``content_block_stop``). The annotation is a ``guardrail`` key on the ``message_delta``
    event, the last event the SDK's stream helper hands over as received (it rebuilds
    ``message_stop``) and which the SDKs keep unknown keys on. A stream that broke off gets a
    clean end: ``close()`` adds the missing ``message_stop`` after a ``message_delta``, and
    ``finish(None, annotation)`` synthesises a ``message_stop`` carrying the annotation when no
    ``message_delta`` came.

    Limit: a text block whose whole text the guard removes stays in the stream as an empty text
    block (its start was sent before its text was known); a client that sends that message back
    to the API verbatim would have to drop it, as the non-streamed :func:`apply` does.
    """

    name = NAME
    media_type = "text/event-stream"

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._decoder = SSEDecoder(max_event_bytes)
        self.progress = False
        self._open: dict[int, None] = {}  # text blocks without a stop yet, in order
        self._last_block = -1
        self._tail: int | None = None  # last block, when it is text and its stop is not out yet
        self._held: SSEEvent | None = None
        self._held_block = 0  # the text block whose stop is held
        self._ended = False
        self._terminated = False
        self._stopped = False
        self._append_to: tuple[int, bool] | None = None  # (block, is new), fixed at reply end


    def feed(self, event: SSEEvent) -> list[StreamItem[SSEEvent]]:
        if self._stopped:  # after message_stop nothing is the message's
            return []
        if event.data is None:
            return [Forward(event)]
        obj = load_json_object(event.data)
        if obj is not None:
            event, obj = scrub_event(event, obj)
        if event.event == "ping":
            return [Forward(event)]
        kind = obj.get("type") if obj is not None else None
        items: list[StreamItem[SSEEvent]] = []
        if self._held is not None:
            items += self._release_held(obj, kind)
        if obj is None:
            return [*items, Forward(event)]
        if kind == "content_block_start":
            items += self._start(event, obj)
        elif kind == "content_block_delta":
            items += self._delta(event, obj)
        elif kind == "content_block_stop" and obj.get("index") in self._open:
            self._open.pop(obj["index"], None)
            self._held, self._held_block = event, obj["index"]
        elif kind in ("message_delta", "message_stop"):
            self._stopped = self._stopped or kind == "message_stop"
            if self._terminated:
                items.append(Forward(event))
            else:
                self._terminated = True
                items += [*self._end_reply(), Terminator(event)]
        else:
            items.append(Forward(event))
        return items

    def _release_held(self, obj: dict[str, Any] | None, kind: object) -> list[StreamItem[SSEEvent]]:
        """The held stop's TextEnd (continued into a text block that starts now, or followed by
        the ReplyEnd when the message ends now), then the stop itself."""
        assert self._held is not None
        held, block = self._held, self._held_block
        items: list[StreamItem[SSEEvent]] = []
        if kind in ("message_delta", "message_stop"):
            items += [TextEnd(0, block), *self._end_reply()]  # appends go into this block
        elif kind == "content_block_start" and obj is not None and _starts_text(obj):
            items.append(TextEnd(0, block, into=obj["index"]))
        else:
            items.append(TextEnd(0, block))
        self._held, self._tail = None, None
        return [*items, Forward(held)]

    def _start(self, event: SSEEvent, obj: dict[str, Any]) -> list[StreamItem[SSEEvent]]:
        index, block = obj.get("index"), obj.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return [Forward(event)]
        self._last_block = max(self._last_block, index)
        self._tail = None
        if block.get("type") != "text":
            return [Forward(event)]
        self._open[index] = None
        self._tail = index
        text = block.get("text")
        if not isinstance(text, str) or not text:
            return [Forward(event)]
        cleared = {**obj, "content_block": {**block, "text": ""}}
        return [Forward(sse_event(cleared, event.event)), TextDelta(0, index, text)]

    def _delta(self, event: SSEEvent, obj: dict[str, Any]) -> list[StreamItem[SSEEvent]]:
        index, delta = obj.get("index"), obj.get("delta")
        if (
            index in self._open
            and isinstance(delta, dict)
            and delta.get("type") == "text_delta"
            and isinstance(delta.get("text"), str)
        ):
            return [TextDelta(0, index, delta["text"])] if delta["text"] else []
        return [Forward(event)]

    def _end_reply(self) -> list[StreamItem[SSEEvent]]:
        if self._ended:
            return []
        self._ended = True
        self._fix_append_target()
        ends: list[StreamItem[SSEEvent]] = [TextEnd(0, i) for i in self._open]  # never stopped
        self._open.clear()
        return [*ends, ReplyEnd(0)]

    def _fix_append_target(self) -> tuple[int, bool]:
        if self._append_to is None:
            if self._tail is not None:
                self._append_to = (self._tail, False)
            else:
                self._last_block += 1
                self._append_to = (self._last_block, True)
        return self._append_to

    def close(self) -> list[StreamItem[SSEEvent]]:
        items = [item for event in self._decoder.flush() for item in self.feed(event)]
        if self._held is not None:
            items += self._release_held(None, "message_stop")
        items += self._end_reply()
        if self._terminated and not self._stopped:
            self._stopped = True
            items.append(Forward(sse_event({"type": "message_stop"}, "message_stop")))
        return items

    def text(self, slot: Slot, text: str) -> bytes:
        if not text:
            return b""
        delta = {
            "type": "content_block_delta",
            "index": slot,
            "delta": {"type": "text_delta", "text": text},
        }
        return sse_event(delta, "content_block_delta").raw

    def append(self, reply: int, text: str) -> bytes:
        if not text:
            return b""
        index, new = self._fix_append_target()
        if not new:
            return self.text(index, text)
        start = {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""},
        }
        stop = {"type": "content_block_stop", "index": index}
        return (
            sse_event(start, "content_block_start").raw
            + self.text(index, text)
            + sse_event(stop, "content_block_stop").raw
        )

    def render(self, event: SSEEvent) -> bytes:
        return event.encode()

    def finish(self, event: SSEEvent | None, annotation: Mapping[str, object] | None) -> bytes:
        if event is not None and annotation is None:
            return event.encode()
        obj = load_json_object(event.data) if event is not None else None
        if obj is None:
            obj = {"type": "message_stop"}
            self._stopped = True
        if annotation is not None:
            obj = {**obj, "guardrail": dict(annotation)}
        return sse_event(obj, event.event if event is not None else "message_stop").raw


def _starts_text(obj: Mapping[str, Any]) -> bool:
    """True for a ``content_block_start`` event that opens a text block."""
    block = obj.get("content_block")
    return (
        isinstance(obj.get("index"), int)
        and isinstance(block, dict)
        and block.get("type") == "text"
    )


def with_instruction(body: object, text: str) -> dict[str, Any]:
    """The request ``body`` once more, with ``text`` appended to ``system`` after
    a blank line (a string), as a last text block (a list of blocks), or as ``system`` itself."""
    if not isinstance(body, dict):
        raise FormatError("request body is not a JSON object")
    system = body.get("system")
    new_system: object
    if isinstance(system, list):
        new_system = [*system, {"type": "text", "text": text}]
    elif isinstance(system, str) and system:
        new_system = f"{system}\n\n{text}"
    else:
        new_system = text
    return {**body, "system": new_system}


_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(status: int, kind: str, code: str, message: str) -> object:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message"}}``."""
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    return {"type": "error", "error": error}


def excludes(segments: Sequence[str]) -> bool:
    """OpenAI Assistants' ``threads/{id}/messages`` adds a message to a thread: not a reply."""
    return "threads" in segments[-3:-1]


FORMAT = WireFormat(
    name=NAME,
    endpoints=(("messages",),),
    parse_request=parse_request,
    reply_texts=reply_texts,
    apply=apply,
    with_instruction=with_instruction,
    stream_codec=MessagesStream,
    stream_media_type=MessagesStream.media_type,
    error_body=error_body,
    excludes=excludes,
    user_of=anthropic_user,
)
"""This API, for :mod:`guardrail.formats.registry`."""
