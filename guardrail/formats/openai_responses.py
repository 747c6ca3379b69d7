"""OpenAI Responses (``POST /v1/responses``), non-streamed and streamed: pure functions.

Request side: ``instructions`` (a string) becomes a leading system message. ``input`` is a string
(one user message) or a list of items: message items (``{"role", "content"}``, ``type`` optional;
content a string or a list of ``input_text`` / ``output_text`` parts, joined with newlines) keep
their role, with ``developer`` read as system; ``function_call_output`` items become ``tool``
messages; other items (function calls, reasoning, images, references to stored items) are skipped.
A request without ``input`` (e.g. one that continues a stored conversation through
``previous_response_id``) gives only what it states.

Response side: the reply is **one** text per response: the ``text`` of every ``output_text`` part
of every ``message`` item of ``output``, concatenated without separator (the same text the SDKs'
``response.output_text`` convenience property gives). Reasoning, tool calls, refusals and other
items or parts are never read nor changed. :func:`apply` writes the rewritten text back with
:func:`~guardrail.formats.streams.spread_text` (a rewritten sentence stays in its part, appended
text goes at the end of the last ``output_text`` part, prepended text at the start of the first);
a response without text that gets text gains a new ``message`` item at the end of ``output``. A
top-level ``output_text`` string, which some compatible servers send, is set to the new text.
A ``guardrail`` key is added to the response object.

Streaming: :class:`ResponsesStream`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.formats import ChatRequest, FormatError, chat_request, openai_user, reply_list
from guardrail.formats.openai_chat import content_text
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
    "FORMAT","NAME", "ResponsesStream", "apply", "parse_request", "reply_texts", "with_instruction"]

NAME = "openai.responses"

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_NEW_ITEM_ID = "msg_guardrail"
_Pos = tuple[int, int]
_Items = list[StreamItem[SSEEvent]]


def _input_item(item: object, index: int) -> Message | None:
    if not isinstance(item, dict):
        raise FormatError(f"input[{index}] is not an object")
    kind = item.get("type", "message")
    if kind == "message" and item.get("role") in _ROLES:
        return Message(role=_ROLES[item["role"]], content=content_text(item.get("content")))
    if kind == "function_call_output":
        output = item.get("output")
        return Message(role="tool", content=content_text(output))
    return None


def parse_request(body: object) -> ChatRequest:
    """The conversation (instructions first), stream flag and model of a Responses request."""
    if not isinstance(body, dict):
        raise FormatError("request body is not a JSON object")
    messages: list[Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append(Message(role="system", content=instructions))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        messages.append(Message(role="user", content=raw_input))
    elif isinstance(raw_input, list):
        for index, item in enumerate(raw_input):
            message = _input_item(item, index)
            if message is not None:
                messages.append(message)
    elif raw_input is not None:
        raise FormatError("'input' is neither a string nor a list of items")
    return chat_request(body, messages, user=openai_user(body))


def _output(body: object) -> list[Any]:
    return reply_list(body, "output")


def _text_parts(output: list[Any]) -> list[tuple[int, int]]:
    """(item, part) positions of the ``output_text`` parts of message items, in order."""
    return [
        (i, j)
        for i, item in enumerate(output)
        if isinstance(item, dict)
        and item.get("type") == "message"
        and isinstance(item.get("content"), list)
        for j, part in enumerate(item["content"])
        if isinstance(part, dict)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    ]


def reply_texts(body: object) -> list[str | None]:
    """``[text of all output_text parts]``, or ``[None]`` when the response has none."""
    output = _output(body)
    parts = _text_parts(output)
    if not parts:
        return [None]
    return ["".join(output[i]["content"][j]["text"] for i, j in parts)]


def _message_item(text: str, item_id: str = _NEW_ITEM_ID) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def _set_texts(output: list[Any], texts: Mapping[tuple[int, int], str]) -> list[Any]:
    """A copy of ``output`` with the part at each (item, part) position set to its text."""
    new_output = list(output)
    for (i, j), text in texts.items():
        item = new_output[i]
        if item["content"][j].get("text") == text:
            continue
        content = list(item["content"])
        content[j] = {**content[j], "text": text}
        new_output[i] = {**item, "content": content}
    return new_output


def apply(
    body: object, texts: Sequence[str | None], annotation: Mapping[str, Any]
) -> dict[str, Any]:
    """A new response with its text replaced (None = leave as is) and ``guardrail`` set.

    The input body is not modified.
    """
    output = _output(body)
    if len(texts) != 1:
        raise FormatError(f"{len(texts)} texts for one response")
    assert isinstance(body, dict)  # checked by _output
    text = texts[0]
    new_body = dict(body)
    parts = _text_parts(output)
    if text is not None and parts:
        pieces = spread_text([output[i]["content"][j]["text"] for i, j in parts], text)
        new_body["output"] = _set_texts(output, dict(zip(parts, pieces)))
    elif text:
        new_body["output"] = [*output, _message_item(text)]
    if text is not None and isinstance(body.get("output_text"), str):
        new_body["output_text"] = text
    new_body["guardrail"] = dict(annotation)
    return new_body


class ResponsesStream(DecodedStream[SSEEvent]):
    """OpenAI Responses ``stream: true`` events, as a stream codec (see ``streams``).

    The whole response is one reply (``reply == 0``); a slot is ``(output_index,
    content_index)`` of an ``output_text`` part.

    Split:
    * ``response.output_text.delta``: :class:`TextDelta`, not forwarded (when it carries
      logprobs, those are forwarded in a copy with an empty ``delta``).
    * ``response.content_part.added`` of an ``output_text`` part with initial text: forwarded
      with ``text: ""``, the text becomes a TextDelta.
    * ``response.output_text.done``: :class:`TextEnd` (text the deltas never carried becomes a
      TextDelta first). The ``.done`` event, and the ``content_part.done`` and
      ``output_item.done`` of the same item right after it, are **held** until the next other
      event shows whether the response ends there. If it does (``response.completed``,
      ``.incomplete`` or ``.failed``), :class:`ReplyEnd` comes first, so appended text is sent as
      extra ``output_text.delta`` events before that ``.done``.
    * the terminal event is the :class:`Terminator`; everything else is forwarded untouched,
      but for a ``guardrail`` key an upstream put in an event or its ``response`` object, which is
      removed (``streams.scrub``); nothing after the terminal event is forwarded.

    Rewrite (the events that repeat the whole text are made consistent with the released text):
    ``output_text.done`` ``text``, ``content_part.done`` ``part.text``, ``output_item.done``
    ``item.content[].text``, and in the terminal event ``response.output[].content[].text``
    (plus appended items and a top-level ``output_text`` string if present). Events whose text
    did not change are forwarded byte for byte.

    Build: released text is an ``output_text.delta`` copying ``item_id``, ``output_index``,
    ``content_index`` from the part, with ``logprobs: []``. Appended text goes into the last
    ``output_text`` part when the response ends with it; otherwise (it ends with a tool call, or
    has no text) into a new message item (id ``msg_guardrail``) after the last item, announced with
    the full ``output_item.added`` ... ``output_item.done`` sequence and added to the terminal
    event's ``output``. Built events repeat the ``sequence_number`` of the upstream event
    forwarded last, so numbers never go down in the output (upstream events are never
    renumbered, to keep them byte for byte; the dropped deltas leave gaps), and use ``event:``
    lines when the upstream does. The annotation is a ``guardrail`` key on the terminal event's
    ``response`` object, as on a non-streamed response. ``finish(None, ...)`` returns nothing: a
    response object cannot be made up, so a broken-off stream simply ends.
    """

    name = NAME
    media_type = "text/event-stream"

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._decoder = SSEDecoder(max_event_bytes)
        self.progress = False
        self._event_lines = True
        self._seq = 0
        self._item_ids: dict[int, str] = {}
        self._last_output = -1
        self._released: dict[Slot, list[str]] = {}  # every known output_text part
        self._received: dict[Slot, int] = {}
        self._closed: set[Slot] = set()
        self._held: list[SSEEvent] = []
        self._held_output: int | None = None
        self._tail: tuple[int, int] | None = None
        self._ended = False
        self._finished = False  # the terminal event came
        self._append_to: tuple[int, int] | None = None
        self._new_items: list[dict[str, Any]] = []


    def feed(self, event: SSEEvent) -> _Items:
        if self._finished:  # after the terminal event nothing is the response's
            return []
        obj = load_json_object(event.data)
        if obj is None:
            return [Forward(event)] if event.data is None else [*self._release(), Forward(event)]
        event, obj = scrub_event(event, obj)
        self._event_lines = event.event is not None
        kind = obj.get("type")
        self._finished = kind in _TERMINAL
        output, content = obj.get("output_index"), obj.get("content_index")
        if (
            self._held
            and output == self._held_output
            and kind in ("response.content_part.done", "response.output_item.done")
        ):
            self._held.append(event)
            return []
        items = [*self._end_reply(), *self._release()] if kind in _TERMINAL else self._release()
        slot = (output, content) if isinstance(output, int) and isinstance(content, int) else None
        if kind == "response.output_item.added" and isinstance(output, int):
            item = obj.get("item")
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self._item_ids[output] = item["id"]
            self._last_output = max(self._last_output, output)
            self._tail = None
        elif kind == "response.content_part.added" and slot is not None:
            return [*items, *self._part_added(event, obj, slot)]
        elif kind == "response.output_text.delta" and slot is not None:
            return [*items, *self._text_delta(event, obj, slot)]
        elif kind == "response.output_text.done" and slot is not None and slot not in self._closed:
            return [*items, *self._text_done(event, obj, slot)]
        elif kind in _TERMINAL:
            return [*items, Terminator(event)]
        return [*items, Forward(event)]

    def _part_added(self, event: SSEEvent, obj: dict[str, Any], slot: _Pos) -> _Items:
        part = obj.get("part")
        if not isinstance(part, dict) or part.get("type") != "output_text":
            self._tail = None
            return [Forward(event)]
        self._released.setdefault(slot, [])
        self._tail = slot
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return [Forward(event)]
        self._received[slot] = len(text)
        cleared = {**obj, "part": {**part, "text": ""}}
        return [Forward(self._event(cleared)), TextDelta(0, slot, text)]

    def _text_delta(self, event: SSEEvent, obj: dict[str, Any], slot: _Pos) -> _Items:
        delta = obj.get("delta")
        if not isinstance(delta, str):
            return [Forward(event)]
        self._released.setdefault(slot, [])
        self._received[slot] = self._received.get(slot, 0) + len(delta)
        items: _Items = []
        if obj.get("logprobs"):
            items.append(Forward(self._event({**obj, "delta": ""})))
        if delta:
            items.append(TextDelta(0, slot, delta))
        return items

    def _text_done(self, event: SSEEvent, obj: dict[str, Any], slot: _Pos) -> _Items:
        self._released.setdefault(slot, [])
        items: _Items = []
        text, seen = obj.get("text"), self._received.get(slot, 0)
        if isinstance(text, str) and len(text) > seen:
            items.append(TextDelta(0, slot, text[seen:]))
        items.append(TextEnd(0, slot))
        self._closed.add(slot)
        self._held, self._held_output, self._tail = [event], slot[0], slot
        return items

    def _release(self) -> _Items:
        if not self._held:
            return []
        items: _Items = [Forward(event) for event in self._held]
        self._held, self._held_output, self._tail = [], None, None
        return items

    def _end_reply(self) -> _Items:
        if self._ended:
            return []
        self._ended = True
        items: _Items = []
        for slot in self._released:
            if slot not in self._closed:
                items.append(TextEnd(0, slot))
                self._closed.add(slot)
        self._append_to = self._tail
        return [*items, ReplyEnd(0)]

    def close(self) -> _Items:
        items = [item for event in self._decoder.flush() for item in self.feed(event)]
        return [*items, *self._end_reply(), *self._release()]

    def text(self, slot: Slot, text: str) -> bytes:
        if not text:
            return b""
        assert isinstance(slot, tuple)
        output, content = slot
        self._released.setdefault(slot, []).append(text)
        return self._event(
            {
                "type": "response.output_text.delta",
                "item_id": self._item_ids.get(output, ""),
                "output_index": output,
                "content_index": content,
                "delta": text,
                "logprobs": [],
                "sequence_number": self._seq,
            }
        ).raw

    def append(self, reply: int, text: str) -> bytes:
        if not text:
            return b""
        if self._append_to is not None:
            return self.text(self._append_to, text)
        self._last_output += 1
        output = self._last_output
        item_id = f"{_NEW_ITEM_ID}_{len(self._new_items)}"
        self._item_ids[output] = item_id
        self._released[(output, 0)] = [text]
        self._closed.add((output, 0))
        item = _message_item(text, item_id)
        self._new_items.append(item)
        part = item["content"][0]
        where = {"item_id": item_id, "output_index": output, "content_index": 0}
        started = {**item, "status": "in_progress", "content": []}
        events = [
            {"type": "response.output_item.added", "output_index": output, "item": started},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": output, "item": item},
        ]
        return b"".join(self._event({**e, "sequence_number": self._seq}).raw for e in events)

    def render(self, event: SSEEvent) -> bytes:
        obj = load_json_object(event.data)
        if obj is not None and isinstance(obj.get("sequence_number"), int):
            self._seq = obj["sequence_number"]
        kind = obj.get("type") if obj is not None else None
        if obj is None or kind not in (
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ):
            return event.encode()
        output, content = obj.get("output_index"), obj.get("content_index")
        new = dict(obj)
        if kind == "response.output_text.done" and (output, content) in self._released:
            new["text"] = self._text((output, content))
        elif kind == "response.content_part.done" and (output, content) in self._released:
            part = obj.get("part")
            if isinstance(part, dict) and part.get("type") == "output_text":
                new["part"] = {**part, "text": self._text((output, content))}
        elif kind == "response.output_item.done" and isinstance(obj.get("item"), dict):
            new["item"] = self._item_texts(output, obj["item"])
        return event.encode() if new == obj else self._event(new).raw

    def finish(self, event: SSEEvent | None, annotation: Mapping[str, object] | None) -> bytes:
        obj = load_json_object(event.data) if event is not None else None
        response = obj.get("response") if obj is not None else None
        if event is None or obj is None or not isinstance(response, dict):
            return event.encode() if event is not None else b""
        new = dict(response)
        output = response.get("output")
        if isinstance(output, list):
            items = [
                self._item_texts(i, item) if isinstance(item, dict) else item
                for i, item in enumerate(output)
            ]
            new["output"] = [*items, *self._new_items]
            if isinstance(response.get("output_text"), str):
                new["output_text"] = reply_texts(new)[0] or ""
        if annotation is not None:
            new["guardrail"] = dict(annotation)
        return event.encode() if new == response else self._event({**obj, "response": new}).raw

    def _text(self, slot: Slot) -> str:
        return "".join(self._released.get(slot, ()))

    def _item_texts(self, output: object, item: dict[str, Any]) -> dict[str, Any]:
        content = item.get("content")
        if not isinstance(output, int) or not isinstance(content, list):
            return item
        parts = [
            {**part, "text": self._text((output, j))}
            if isinstance(part, dict)
            and part.get("type") == "output_text"
            and (output, j) in self._released
            else part
            for j, part in enumerate(content)
        ]
        return {**item, "content": parts}

    def _event(self, obj: dict[str, Any]) -> SSEEvent:
        return sse_event(obj, obj["type"] if self._event_lines else None)


def with_instruction(body: object, text: str) -> dict[str, Any]:
    """The request ``body`` once more, with ``text`` appended to ``instructions``
    after a blank line (or as ``instructions`` when it has none)."""
    if not isinstance(body, dict):
        raise FormatError("request body is not a JSON object")
    instructions = body.get("instructions")
    joined = f"{instructions}\n\n{text}" if isinstance(instructions, str) and instructions else text
    return {**body, "instructions": joined}


FORMAT = WireFormat(
    name=NAME,
    endpoints=(("responses",),),
    parse_request=parse_request,
    reply_texts=reply_texts,
    apply=apply,
    with_instruction=with_instruction,
    stream_codec=ResponsesStream,
    stream_media_type=ResponsesStream.media_type,
    user_of=openai_user,
)
"""This API, for :mod:`guardrail.formats.registry`."""
