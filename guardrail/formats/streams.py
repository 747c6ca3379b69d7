"""Stream codecs: what a guarded stream needs to know about one API's streamed events.

A stream codec is a pure, per-stream object that sits between the upstream's decoded events and
the stream guard (which holds text back, evaluates it and releases it). It does two things:

* **split** each upstream event into ordered :data:`StreamItem` instructions
  (:meth:`StreamCodec.feed`, or :meth:`StreamCodec.feed_bytes` which decodes first):

  - :class:`TextDelta`  assistant text for one reply and one slot (a choice, a content block, an
    output part). The event that carried it is *not* forwarded; the guard emits whatever it
    releases with :meth:`StreamCodec.text`.
  - :class:`TextEnd`    no more upstream text for that slot: release what is held for it now.
  - :class:`ReplyEnd`   no more upstream text for that reply: run the end-of-reply actions now
    and emit appended text with :meth:`StreamCodec.append`.
  - :class:`Forward`    emit :meth:`StreamCodec.render` of the event now: its upstream bytes, or,
    for the few events that repeat the whole text (Responses ``*.done``), a rewrite consistent
    with the text released so far. Everything that is not assistant text (tool calls, thinking,
    usage, pings, comments, errors, malformed lines, unknown event types) is a Forward of the
    untouched upstream bytes.
  - :class:`Terminator` the event that closes the reply and carries the annotation (chat:
    ``[DONE]``; Anthropic: ``message_delta``, or ``message_stop`` when no delta came; Responses:
    ``response.completed`` / ``.incomplete`` / ``.failed``; Ollama: the ``done`` line): emit
    :meth:`StreamCodec.finish`, which adds the annotation in the API's own format.

  Guarantees the guard can rely on: every slot that had a TextDelta gets exactly one TextEnd,
  before the ReplyEnd of its reply; each reply gets exactly one ReplyEnd (``close()`` supplies
  the missing ones when the upstream breaks off); at most one Terminator, after which only
  Forward items follow. What the guard must do in turn: release text for a slot only between its
  first TextDelta and its TextEnd (at the TextEnd at the latest: the slot may be closed right
  after, unless the TextEnd names an ``into`` slot: then held text may go there instead), call
  ``append`` once, at the ReplyEnd, and handle items in the order given.

* **build** events in the upstream's format: released text (:meth:`~StreamCodec.text`), appended
  text (:meth:`~StreamCodec.append`), the annotation plus terminator (:meth:`~StreamCodec.finish`,
  which also synthesises a clean end when the upstream broke off: ``finish(None, ...)``).
  Built events copy ids, model names and timestamps from events seen earlier in the stream.

The guard handles the items strictly in order; a sketch of the whole loop::

    for item in codec.feed_bytes(chunk):          # and codec.close() at end of input
        if isinstance(item, TextDelta): out += codec.text(item.slot, guard.feed(item))
        elif isinstance(item, TextEnd): out += codec.text(item.slot, guard.release(item))
        elif isinstance(item, ReplyEnd): out += codec.append(item.reply, guard.finish(item))
        elif isinstance(item, Forward): out += codec.render(item.event)
        else: out += codec.finish(item.event, annotation)

Memory: a codec keeps a template event, a few indexes and at most a handful of held events, never
text. The one exception is the Responses codec, which keeps the released text of each output part:
that API repeats the whole text in its ``*.done`` and ``response.completed`` events, so a proxy
holds a reply-sized event there whatever it does.

This module also holds :class:`DecodedStream`, the base of the four APIs' codecs (decoding bytes
into events, ``overflow``, ``progress``), and the helpers the format modules share.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from guardrail.formats import jsontext
from guardrail.formats.ndjson import NDJSONLine
from guardrail.formats.sse import SSEEvent, encode_event

__all__ = [
    "DecodedStream",
    "EventDecoder",
    "Forward",
    "ReplyEnd",
    "Slot",
    "StreamCodec",
    "StreamItem",
    "Terminator",
    "TextDelta",
    "TextEnd",
    "dump_json",
    "keepalive",
    "load_json_object",
    "progress",
    "scrub",
    "scrub_event",
    "spread_text",
    "sse_event",
    "text_edits",
]

E = TypeVar("E")
Slot: TypeAlias = Hashable
"""Where text is shown: a choice index (OpenAI chat), a content block index (Anthropic), an
``(output_index, content_index)`` pair (Responses), ``0`` (Ollama)."""


@dataclass(frozen=True)
class TextDelta:
    """Upstream assistant text for ``reply``, shown in ``slot``; its event is not forwarded."""

    reply: int
    slot: Slot
    text: str


@dataclass(frozen=True)
class TextEnd:
    """No more upstream text for ``slot``: release everything held for it before what follows.

    ``into``: the reply's text goes on in that slot, which opens right after (Anthropic cuts one
    text into several blocks, e.g. around citations). A guard may then keep the unfinished
    sentence it holds and release it, whole, into ``into`` instead of judging the two halves
    apart; nothing is lost either way.
    """

    reply: int
    slot: Slot
    into: Slot | None = None


@dataclass(frozen=True)
class ReplyEnd:
    """No more upstream text for ``reply``: apply end-of-reply actions, emit appended text now."""

    reply: int


@dataclass(frozen=True)
class Forward(Generic[E]):
    """Emit ``codec.render(event)`` now."""

    event: E


@dataclass(frozen=True)
class Terminator(Generic[E]):
    """The event that closes the reply: emit ``codec.finish(event, annotation)``."""

    event: E


StreamItem: TypeAlias = TextDelta | TextEnd | ReplyEnd | Forward[E] | Terminator[E]


class StreamCodec(Protocol[E]):
    """The per-stream codec interface (see the module docstring for the item protocol)."""

    name: str
    media_type: str
    progress: bool
    """The last ``feed_bytes`` completed an upstream event that is not a keep-alive (what the
    stall timeout counts as progress; bytes of an unfinished event are not)."""

    @property
    def overflow(self) -> bool:
        """An upstream event (an NDJSON line) went over the codec's ``max_event_bytes``: its
        decoder dropped it and ignores the rest of the input (``formats.sse``, ``.ndjson``)."""

    def feed_bytes(self, chunk: bytes) -> list[StreamItem[E]]:
        """Decode ``chunk`` and split every event it completes."""

    def feed(self, event: E) -> list[StreamItem[E]]:
        """Split one decoded upstream event into items."""

    def close(self) -> list[StreamItem[E]]:
        """Upstream input ended: flush the decoder, end open slots and replies, release held events.

        Emits no Terminator; if none came, ``finish(None, annotation)`` gives a clean end
        (chat: annotation chunk and ``[DONE]``; Anthropic: ``message_stop`` with the annotation;
        Ollama: a done line with the annotation; Responses: nothing).
        """

    def text(self, slot: Slot, text: str) -> bytes:
        """Events carrying released ``text`` for ``slot`` (``b""`` for empty text)."""

    def append(self, reply: int, text: str) -> bytes:
        """Events carrying end-of-reply ``text`` at the end of ``reply`` (``b""`` for empty text)."""

    def render(self, event: E) -> bytes:
        """The bytes to emit for a Forward item's event."""

    def finish(self, event: E | None, annotation: Mapping[str, object] | None) -> bytes:
        """The annotation (when given) and the terminator ``event`` (or a synthesised one)."""


class EventDecoder(Protocol[E]):
    """An incremental decoder of a stream's events (``formats.sse``, ``formats.ndjson``)."""

    @property
    def overflow(self) -> bool: ...

    def feed(self, chunk: bytes) -> list[E]: ...

    def flush(self) -> list[E]: ...


class DecodedStream(Generic[E]):
    """What every codec does with upstream bytes: its ``_decoder`` decodes them, ``progress``
    says whether a real event (not a keep-alive) completed, and each event is split by
    ``feed``. The codecs of the four APIs derive from it."""

    _decoder: EventDecoder[E]
    progress: bool = False

    @property
    def overflow(self) -> bool:
        """An upstream event went over ``max_event_bytes``: decoding stopped there."""
        return self._decoder.overflow

    def feed_bytes(self, chunk: bytes) -> list[StreamItem[E]]:
        events = self._decoder.feed(chunk)
        self.progress = progress(events)
        return [item for event in events for item in self.feed(event)]

    def feed(self, event: E) -> list[StreamItem[E]]:
        raise NotImplementedError


def dump_json(value: object) -> str:
    """Compact JSON, non-ASCII kept as is, a lone surrogate as its ``\\u`` escape."""
    return jsontext.dumps_text(value)


def load_json_object(data: str | None) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None (no data, not JSON, or not an object)."""
    if not data:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def keepalive(event: object) -> bool:
    """An event that only keeps the connection alive, whose place in the stream does not matter:
    an SSE block a client does not dispatch (comments, ``retry``), an Anthropic ``ping``, a
    blank NDJSON line."""
    if isinstance(event, SSEEvent):
        return event.data is None or event.event == "ping"
    return isinstance(event, NDJSONLine) and event.value is None and not event.raw.strip()


def progress(events: Sequence[object]) -> bool:
    """Whether ``events`` (decoded upstream events) hold one that is not a keep-alive."""
    return any(not keepalive(event) for event in events)


ANNOTATION = "guardrail"
"""The member that carries guardrail's annotation; only guardrail may put it in a reply."""
_NESTED = ("message", "response")  # objects an SDK builds its final reply from


def scrub(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """``obj`` without a ``guardrail`` member an upstream put in, at its top level or in its
    ``message`` / ``response`` object (where Anthropic's ``message_start`` and every Responses
    event carry the reply an SDK accumulates); None when there is none, the common case, which
    costs three dictionary lookups. The annotation a client reads comes from guardrail alone."""
    clean: dict[str, Any] | None = None
    if ANNOTATION in obj:
        clean = {k: v for k, v in obj.items() if k != ANNOTATION}
    for key in _NESTED:
        inner = obj.get(key)
        if isinstance(inner, dict) and ANNOTATION in inner:
            clean = dict(obj) if clean is None else clean
            clean[key] = {k: v for k, v in inner.items() if k != ANNOTATION}
    return clean


def scrub_event(event: SSEEvent, obj: dict[str, Any]) -> tuple[SSEEvent, dict[str, Any]]:
    """``event`` and its parsed data ``obj``, rebuilt without a forged annotation (see
    :func:`scrub`); the same objects when there is none."""
    clean = scrub(obj)
    if clean is None:
        return event, obj
    built = SSEEvent(event=event.event, data=dump_json(clean), id=event.id, retry=event.retry)
    return SSEEvent(built.event, built.data, built.id, built.retry, encode_event(built)), clean


def sse_event(data: object, event: str | None = None) -> SSEEvent:
    """A built SSE event whose ``raw`` is its own serialisation (so rendering it is a copy)."""
    built = SSEEvent(event=event, data=dump_json(data))
    return SSEEvent(event=event, data=built.data, raw=encode_event(built))


def spread_text(parts: Sequence[str], new: str) -> list[str]:
    """Distribute ``new`` over ``parts`` so that ``"".join(result) == new``, changing little.

    Used where one reply text is stored in several pieces (Anthropic text blocks, Responses
    ``output_text`` parts). The old joined text and ``new`` are compared word by word
    (:func:`text_edits`); text both share stays in the piece it was in, and each changed stretch
    goes, whole, into the piece that holds its start (an insertion at a boundary goes to the start
    of the following piece; at the very end, to the end of the last piece). So a rewritten
    sentence lands in the block it came from, appended text at the end of the last piece,
    prepended text at the start of the first, and untouched pieces keep their text (and whatever
    metadata, such as citations, belongs to them).
    """
    if not parts:
        raise ValueError("no parts to spread text over")
    old = "".join(parts)
    if old == new:
        return list(parts)
    bounds = [0]
    for part in parts:
        bounds.append(bounds[-1] + len(part))
    out: list[list[str]] = [[] for _ in parts]
    cursor = 0
    for start, end, text in [*text_edits(old, new), (len(old), len(old), "")]:
        for index in range(len(parts)):  # the shared stretch [cursor, start) stays in place
            lo, hi = max(cursor, bounds[index]), min(start, bounds[index + 1])
            if lo < hi:
                out[index].append(old[lo:hi])
        owner = next(
            (i for i in range(len(parts)) if bounds[i] <= start < bounds[i + 1]), len(parts) - 1
        )
        out[owner].append(text)
        cursor = end
    return ["".join(pieces) for pieces in out]


_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
_DIFF_LIMIT = 4_000_000  # token pairs; past this, one edit covering the whole changed middle


def text_edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """Edits ``(start, end, replacement)`` in ``old`` coordinates, in order, that make ``new``.

    The common prefix and suffix are cut first; the middle is compared as words, spaces and
    punctuation (``difflib``), so a replaced sentence plus appended text is two edits, not one.
    """
    limit = min(len(old), len(new))
    pre = 0
    while pre < limit and old[pre] == new[pre]:
        pre += 1
    suf = 0
    while suf < limit - pre and old[-1 - suf] == new[-1 - suf]:
        suf += 1
    old_mid, new_mid = old[pre : len(old) - suf], new[pre : len(new) - suf]
    a, b = _TOKEN.findall(old_mid), _TOKEN.findall(new_mid)
    if len(a) * len(b) > _DIFF_LIMIT:
        return [(pre, len(old) - suf, new_mid)]
    offsets = [pre]
    for token in a:
        offsets.append(offsets[-1] + len(token))
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        (offsets[i1], offsets[i2], "".join(b[j1:j2]))
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]
