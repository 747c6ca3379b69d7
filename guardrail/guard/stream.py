"""The stream pump: an upstream's streamed reply in, the guarded stream for the client out.

One :class:`StreamGuard` per streamed response. It decodes the upstream bytes with the API's
stream codec (``guardrail.formats.streams``), feeds each reply's text into its own
:class:`~guardrail.guard.TextGuard` (one per choice, so ``n > 1`` works; a reply cut into several
text blocks shares one guard, and a sentence cut across two Anthropic text blocks is judged whole,
released into the second), and re-encodes what the guards release in the upstream's own
event format. Everything that is not assistant text passes through untouched.

Stages, when they run and what they guarantee:

* :meth:`StreamGuard.feed` (each upstream chunk) -> bytes for the client now. A chunk boundary
  anywhere, mid-line or mid-UTF-8 character included, never changes the output as a whole: the
  decoders only act on complete lines, and the guards on complete sentences.
* :meth:`StreamGuard.close` (end of upstream input, clean or not) -> the last bytes: held text
  is judged and released, end-of-reply texts are appended, and the annotation rides on the
  terminator. If the upstream broke off, stalled, sent an event over ``max_event_bytes`` or
  never sent its terminator, the client still
  gets a clean end of stream (a synthesised terminator carrying the annotation with
  ``"incomplete": <reason>``); a trailing half-received event is dropped rather than glued to it.
* :meth:`StreamGuard.pump` (the async driver) runs both over an async byte iterator, applies
  the stall timeout, and closes the upstream (the iterator, then ``aclose``) whatever happens,
  cancellation by a disconnecting client included.

Holdback ``full`` buffers the whole reply, and so also every event after its first text (a tool
call, a usage chunk) until the reply ends, in order; only keep-alives (SSE comments, Anthropic
``ping``) still go out at once. The other modes never hold an event. :meth:`StreamGuard.hold`
(``full`` only) holds the whole stream, first event to terminator, until ``release()`` or
``discard()`` after ``close()``: the caller may still replace it (``guardrail.proxy.regenerate_stream``).
Memory per stream, outside ``full``, is the holdback window, at most ``max_event_bytes`` of an
unfinished upstream event, and a few counters and codec indexes (the Responses codec alone keeps
released text, see its docstring). An exception inside the engine
never kills the stream: that reply passes through unchanged from there on and the annotation
says ``"reason": "engine-error"``. Nothing here logs, and :class:`StreamReport` never holds text.
"""

from __future__ import annotations

import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Mapping,
)
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio

from guardrail.formats.ndjson import NDJSONLine
from guardrail.formats.registry import new_stream_codec
from guardrail.guard.offload import offloaded
from guardrail.formats.sse import SSEEvent
from guardrail.formats.streams import (
    Forward,
    ReplyEnd,
    StreamItem,
    Terminator,
    TextDelta,
    TextEnd,
    spread_text,
)
from guardrail.guard import DEFAULT_MAX_HOLDBACK_CHARS, Holdback, TextGuard, check_holdback
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.policy.model import ACTION_ORDER
from guardrail.guard.stall import Stall, Stalled

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "UPSTREAM_BROKEN",
    "UPSTREAM_OVERSIZED",
    "UPSTREAM_STALLED",
    "UPSTREAM_UNTERMINATED",
    "StreamGuard",
    "StreamReport",
]

UPSTREAM_BROKEN = "upstream-broken"
"""The upstream iterator raised (connection reset, protocol error, read timeout)."""
UPSTREAM_STALLED = "upstream-stalled"
"""No upstream event but keep-alives arrived within the stall timeout."""
UPSTREAM_UNTERMINATED = "upstream-unterminated"
"""The upstream ended cleanly but without its terminator event."""
UPSTREAM_OVERSIZED = "upstream-event-too-large"
"""An upstream event (an NDJSON line) went over ``max_event_bytes``; the stream ended there."""
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Largest upstream event or line a stream guard buffers: ``max_inspect_bytes``' default, since a
Responses stream repeats the whole reply in its last event (``response.completed``)."""

Slot = Hashable
_CLOSE_SECONDS = 5.0
AClose = Callable[[], Awaitable[object]]


@dataclass
class StreamReport:
    """What happened to one stream, for logs and metrics; never holds text.

    Filled in as the stream runs and complete once the pump has ended (after a cancel too).
    ``fault`` is one of the ``UPSTREAM_*`` reasons or None; ``cancelled`` means the consumer
    stopped the pump before its end (a client that went away); ``guard_seconds`` is the time
    spent in decoding, the engine and encoding (the proxy's own cost); ``verdicts`` maps each
    reply (choice) index to its verdict (None after an engine error).
    """

    api: str
    holdback: str
    fault: str | None = None
    error_type: str | None = None
    engine_error: str | None = None
    terminated: bool = False
    cancelled: bool = False
    dropped_fragment: bool = False
    chunks_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    guard_seconds: float = 0.0
    verdicts: dict[int, Verdict | None] = field(default_factory=dict)
    prepends_moved: bool = False


@dataclass
class _Reply:
    """Per-reply state: its guard, the slot its held text belongs to, and (full mode only) the
    upstream text of each slot and, once judged, the final text of each slot."""

    guard: TextGuard
    segment: Slot | None = None
    last: Slot | None = None
    parts: dict[Slot, list[str]] = field(default_factory=dict)
    final: dict[Slot, str] = field(default_factory=dict)


class StreamGuard:
    """Guard one streamed response of API ``api`` (a format module's NAME, e.g. "openai.chat").

    ``extra`` is merged into the annotation (e.g. the proxy's version). ``max_event_bytes`` caps
    one upstream event or NDJSON line: past it the stream ends there, cleanly, with the fault
    :data:`UPSTREAM_OVERSIZED` (so memory per stream stays bounded whatever the upstream sends).
    Raises KeyError for an unknown ``api`` and ValueError for a bad setting, at construction.
    """

    def __init__(
        self,
        api: str,
        policyset: PolicySet,
        conversation: Conversation,
        *,
        locale: str | None = None,
        holdback: Holdback = "sentence",
        max_holdback_chars: int = DEFAULT_MAX_HOLDBACK_CHARS,
        extra: Mapping[str, object] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.codec = new_stream_codec(api, max_event_bytes)
        check_holdback(holdback, max_holdback_chars)
        self._new_guard = partial(
            TextGuard,
            policyset,
            conversation,
            locale=locale,
            holdback=holdback,
            max_holdback_chars=max_holdback_chars,
        )
        self._full = holdback == "full"
        self._locale = policyset.resources.resolve(locale)
        self._extra = dict(extra or {})
        self._replies: dict[int, _Reply] = {}
        self._pending = 0  # full mode: replies started and not ended (output is queued)
        self._held = False  # hold(): all output is queued until release() or discard()
        self._note: dict[str, object] = {}
        self._queue: list[Callable[[], bytes]] = []
        self._out: list[bytes] = []
        self._closed = False
        self.report = StreamReport(api=api, holdback=holdback)

    @property
    def media_type(self) -> str:
        """The content type of the stream (that of the upstream API)."""
        return self.codec.media_type

    def hold(self) -> None:
        """Hold every event, the first to the terminator, until :meth:`release` or
        :meth:`discard`. Only keep-alives go out meanwhile, as SSE comments (an Anthropic
        ``ping`` keeps its place in the stream too). ``full`` holdback only, before the first
        ``feed``; raises ValueError or RuntimeError otherwise."""
        if not self._full:
            raise ValueError("hold() needs holdback 'full'")
        if self.report.chunks_in:
            raise RuntimeError("hold() after feed()")
        self._held = True

    def release(self) -> bytes:
        """After ``close()``: the held events, now (b"" when nothing is held)."""
        started = time.perf_counter()
        self._held = False
        self._drain()
        return self._flush(started)

    def discard(self) -> None:
        """After ``close()``: drop the held events; this reply is not sent."""
        self._held, self._queue = False, []

    def add_note(self, note: Mapping[str, object]) -> None:
        """Merge ``note`` into the annotation (before the terminator is built)."""
        self._note.update(note)

    # ------------------------------------------------------------------ sync core
    def feed(self, chunk: bytes) -> bytes:
        """One upstream chunk in; the bytes to send to the client now (maybe b"")."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        started = time.perf_counter()
        self.report.chunks_in += 1
        self.report.bytes_in += len(chunk)
        self._handle(self.codec.feed_bytes(chunk))
        if self.codec.overflow and self.report.fault is None:
            self.report.fault = UPSTREAM_OVERSIZED  # the pump stops reading; close() ends it
        return self._flush(started)

    def close(self, fault: str | None = None) -> bytes:
        """End of upstream input (``fault``: why it ended early, if it did); the last bytes."""
        if self._closed:
            return b""
        started = time.perf_counter()
        self._closed = True
        items = self.codec.close()
        ends = self.report.terminated or any(isinstance(i, Terminator) for i in items)
        if not ends:
            fault = fault or UPSTREAM_UNTERMINATED
            items = [kept for i in items if (kept := self._whole(i)) is not None]
        self.report.fault = self.report.fault or fault
        self._handle(items)
        if not ends:
            self._put(self._terminate, None)
        self._pending = 0
        self._drain()
        return self._flush(started)

    def annotation(self) -> dict[str, Any]:
        """The ``guardrail`` object: hits per choice, signals OR-ed over choices, the holdback."""
        report = self.report
        done = [(r, v) for r, v in sorted(report.verdicts.items()) if v is not None]
        signals: dict[str, bool] = {}
        for _, verdict in done:
            for name, value in verdict.signals.items():
                signals[name] = signals.get(name, False) or bool(value)
        actions = [v.strongest_action for _, v in done]
        note: dict[str, Any] = {
            **self._extra,
            "inspected": report.engine_error is None,
            "holdback": report.holdback,
            "locale": done[0][1].locale if done else self._locale,
            "action": max(actions, key=ACTION_ORDER.index, default="none"),
            "changed": any(v.changed for _, v in done),
            "blocked": any(v.blocked for _, v in done),
            "hits": [{**hit.to_dict(), "choice": r} for r, v in done for hit in v.hits],
            "signals": signals,
        }
        if report.engine_error is not None:
            note["reason"] = "engine-error"
        if report.prepends_moved:
            note["prepends_moved"] = True
        if report.fault is not None:
            note["incomplete"] = report.fault
        return {**note, **self._note}

    # ------------------------------------------------------------------ items
    def _handle(self, items: list[StreamItem[Any]]) -> None:
        for i, item in enumerate(items):
            if isinstance(item, TextDelta):
                self._text(item)
            elif isinstance(item, TextEnd):
                after = items[i + 1] if i + 1 < len(items) else None
                # a reply that ends right here keeps its held text for finish(): the end texts
                # can then take the place of its trailing whitespace
                ending = isinstance(after, ReplyEnd) and after.reply == item.reply
                self._text_end(item, ending)
            elif isinstance(item, ReplyEnd):
                self._reply_end(item.reply)
            elif isinstance(item, Terminator):
                self.report.terminated = True
                self._put(self._terminate, item.event)
            elif self._queued() and _keepalive(item.event):  # full mode: keep the client alive
                if self._held and item.event.data is not None:  # a ping: its place is after
                    self._out.append(b":\n\n")  # the held head (message_start); a comment now
                    self._put(self.codec.render, item.event)
                else:
                    self._out.append(self.codec.render(item.event))
            else:
                self._put(self.codec.render, item.event)

    def _text(self, item: TextDelta) -> None:
        state = self._replies.get(item.reply)
        if state is None:
            state = self._replies[item.reply] = _Reply(self._new_guard())
            self._pending += self._full
        state.last = item.slot
        if self._full:  # the guard gets the text at the end (one copy of the reply, not two)
            state.parts.setdefault(item.slot, []).append(item.text)
            return
        if state.segment is not None and state.segment != item.slot:
            self._put(self.codec.text, state.segment, state.guard.release())
        state.segment = item.slot
        self._put(self.codec.text, item.slot, state.guard.feed(item.text))

    def _text_end(self, item: TextEnd, ending: bool) -> None:
        state = self._replies.get(item.reply)
        if state is None:
            return
        if self._full:
            if item.slot in state.parts:
                self._put(lambda: self.codec.text(item.slot, state.final.pop(item.slot, "")))
            return
        if state.segment == item.slot and not ending:
            if item.into is not None:  # the text goes on in the next slot: keep the sentence
                state.segment = item.into
                return
            self._put(self.codec.text, item.slot, state.guard.release())
            state.segment = None

    def _reply_end(self, reply: int) -> None:
        state = self._replies.get(reply)
        if state is None:  # no text in this reply: nothing to judge
            return
        slots = list(state.parts)  # full mode only
        texts = ["".join(state.parts.pop(s)) for s in slots]
        for text in texts:
            state.guard.feed(text)
        result = state.guard.finish()
        self.report.verdicts[reply] = result.verdict
        if result.error is not None:
            self.report.engine_error = self.report.engine_error or result.error
        self.report.prepends_moved = self.report.prepends_moved or bool(result.prepend)
        if self._full:
            state.final = dict(zip(slots, spread_text(texts, result.tail + result.append)))
            self._pending -= 1
            self._drain()
            return
        slot = state.segment if state.segment is not None else state.last
        self._put(self.codec.text, slot, result.tail)
        self._put(self.codec.append, reply, result.append)
        state.segment = None

    # ------------------------------------------------------------------ output
    def _put(self, build: Callable[..., bytes], *args: Any) -> None:
        """Build output now, or queue it while a full-mode reply is still being read (or held)."""
        if self._queued():
            self._queue.append(partial(build, *args))
        else:
            self._out.append(build(*args))

    def _queued(self) -> bool:
        """Output waits: a full-mode reply is being read, or the stream is held."""
        return bool(self._pending) or self._held

    def _terminate(self, event: Any) -> bytes:
        """The terminator ``event`` (None: a synthesised one) with the annotation, built when it
        goes out (so a held reply's annotation can still gain notes)."""
        return self.codec.finish(event, self.annotation())

    def _drain(self) -> None:
        if not self._queued() and self._queue:
            queue, self._queue = self._queue, []
            self._out += [build() for build in queue]

    def _flush(self, started: float) -> bytes:
        out = b"".join(self._out)
        self._out = []
        self.report.bytes_out += len(out)
        self.report.guard_seconds += time.perf_counter() - started
        return out

    def _whole(self, item: StreamItem[Any]) -> StreamItem[Any] | None:
        """Before a synthesised end: drop a trailing half-received event (an NDJSON line that
        parsed gets its missing line break instead)."""
        if isinstance(item, (TextDelta, TextEnd, ReplyEnd)):
            return item
        raw = getattr(item.event, "raw", b"")
        if not isinstance(raw, bytes) or not raw or raw.endswith((b"\n", b"\r")):
            return item
        if isinstance(item.event, NDJSONLine) and item.event.value is not None:
            return Forward(NDJSONLine(raw + b"\n", item.event.value))
        self.report.dropped_fragment = True
        return None

    # ------------------------------------------------------------------ async driver
    async def pump(
        self,
        chunks: AsyncIterable[bytes],
        *,
        stall_timeout: float | None = None,
        aclose: AClose | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Drive the stream: yield the client's bytes as upstream chunks arrive.

        ``stall_timeout`` (seconds, None = none) bounds the time from the start, and then from
        each upstream event that is not a keep-alive, to the next such event: keep-alives (SSE
        comments, blocks without data, Anthropic ``ping``, blank NDJSON lines) and bytes of an
        unfinished event do not count as progress, so an upstream that only keeps the
        connection alive is cut after ``stall_timeout``. Upstream faults end the stream cleanly
        (see ``close``) and are recorded in ``report``; they are never raised. On exit, however it happens (the end, a
        fault, the consumer's ``aclose()`` or a cancellation), the upstream iterator is closed
        and ``aclose`` awaited, shielded from cancellation, so the upstream request stops at
        once. Consumers must close this generator when they stop early (``aclosing``). A chunk
        over 64 KiB is fed in a worker thread, so a big burst never stalls other streams.
        """
        iterator = aiter(chunks)
        finished = False
        stall = None if stall_timeout is None else Stall(stall_timeout)
        try:
            fault: str | None = None
            while True:
                try:
                    chunk = await (anext(iterator) if stall is None else stall.read(iterator))
                except StopAsyncIteration:
                    break
                except Stalled:
                    fault = UPSTREAM_STALLED
                    break
                except Exception as exc:  # noqa: BLE001 -- any upstream failure ends cleanly
                    fault, self.report.error_type = UPSTREAM_BROKEN, type(exc).__name__
                    break
                if offloaded(len(chunk)):  # a big chunk: judge it off the event loop
                    out = await anyio.to_thread.run_sync(self.feed, chunk)
                else:
                    out = self.feed(chunk)
                if out:
                    yield out
                if self.report.fault is not None:  # an event over the cap: read no further
                    break
                if stall is not None and self.codec.progress:
                    stall.progressed()
            out = self.close(fault)
            finished = True
            if out:
                yield out
        finally:
            self.report.cancelled = not finished
            if stall is not None:
                stall.close()
            await _shut(iterator, aclose)


def _keepalive(event: object) -> bool:
    """An event whose place in the stream does not matter: a block a client does not dispatch
    (comments, ``retry``), or an Anthropic ``ping``."""
    return isinstance(event, SSEEvent) and (event.data is None or event.event == "ping")


async def _shut(iterator: AsyncIterator[bytes], aclose: AClose | None) -> None:
    """Close the upstream iterator and response, shielded (a cancel must not skip it) but
    bounded (a dead upstream must not hold the task)."""
    with anyio.move_on_after(_CLOSE_SECONDS, shield=True):
        for close in (getattr(iterator, "aclose", None), aclose):
            if close is None:
                continue
            try:
                await close()
            except Exception:  # noqa: BLE001, S112 -- closing a dead upstream may fail; it is gone
                continue
