"""The request flow: every decision about one chat request, sans I/O.

The proxy (``guardrail.proxy.pipeline``) and the ASGI middleware (``guardrail.middleware``) are
adapters: they move bytes between their sockets (or their app) and one :class:`Flow`, and do
what it decides. The flow never reads a socket, sleeps or logs; it takes bytes and headers in
and hands decisions, bytes and events out, in the manner of h11. So the two adapters cannot
decide differently, and whatever a request must carry (state, judges) enters in one place.

Decisions, each taken here and nowhere else:

* **which API**: from the path (:func:`guardrail.formats.registry.detect_api`), else the
  route's configured API for ``POST`` (:func:`choose_api`); None: pass the request through;
* **inspect or pass through, and why not**: :meth:`Flow.read_request` (an unreadable request:
  ``unparseable``, ``too-large``), :meth:`Flow.plan_reply` (``upstream-error``, ``not-json``,
  ``too-large``, ``encoding``, ``stream``);
* **whole or stream**: :meth:`Flow.plan_reply`, from the reply's status and headers alone;
* **offload or inline**: :func:`guardrail.guard.offload.offloaded`, by the bytes a step reads
  (:meth:`Flow.request_weight`, :meth:`Flow.reply_weight`);
* **regenerate or not**: :meth:`Flow.wants_regenerate` (a whole reply),
  :attr:`Flow.regenerates_stream` (a stream held whole);
* **the annotation**: :meth:`Flow.judge_whole` and the stream guard's own, one builder
  (:func:`guardrail.guard.inspection.annotation`);
* **what is recorded**: the events below, to which the recorder subscribes.

Lifecycle events (frozen; delivered synchronously to every subscriber, in this order):

=================  ===================================================  ===========================
event              fires                                                guarantees
=================  ===================================================  ===========================
``RequestRead``    once, after the request body was read                ``chat`` or ``reason`` set
``ReplyPlanned``   once, when the reply's status and headers are known  ``mode`` final; ``reason``
                                                                        set iff ``mode == "pass"``
``Regenerated``    at most once, after a second attempt was judged      ``result`` and ``policies``
``ReplyJudged``    at most once, when the reply that went out was       ``outcome`` is final; never
                   judged (whole: before it is sent; stream: when it    for a passed-through reply
                   ended, however it ended)
=================  ===================================================  ===========================

A subscriber must not raise (the recorder does not); an exception from one is the adapter's bug
to report, not the client's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from guardrail.formats import ChatRequest
from guardrail.formats.codings import stream_decodable
from guardrail.formats import jsontext
from guardrail.formats.codings import decode_body
from guardrail.formats.registry import FORMATS, detect_api
from guardrail.guard.inspection import (
    Outcome,
    PolicyEngine,
    early_reason,
    inspect_body,
    is_stream,
    open_stream_guard,
    parse_chat_request,
    stream_guardable,
    stream_outcome,
)
from guardrail.guard.stream import DEFAULT_MAX_EVENT_BYTES, StreamGuard, StreamReport
from guardrail.guard.text import DEFAULT_MAX_HOLDBACK_CHARS, Holdback
from guardrail.policy.facts import Facts

__all__ = [
    "Event",
    "Flow",
    "FlowConfig",
    "Mode",
    "RequestRead",
    "Regenerated",
    "ReplyJudged",
    "ReplyPlanned",
    "choose_api",
]

Mode = Literal["pass", "whole", "stream"]


def choose_api(method: str, raw_path: bytes, route_api: str = "auto") -> str | None:
    """The API of a request: its path's, else the route's configured one for ``POST``
    (``auto``: none); None: not a chat request, pass it through."""
    api = detect_api(method, raw_path)
    if api is None and route_api != "auto" and method.upper() == "POST":
        return route_api
    return api


@dataclass(frozen=True)
class FlowConfig:
    """What a route (proxy) or the middleware's options say about guarding its replies."""

    locale: str
    holdback: Holdback = "sentence"
    max_holdback_chars: int = DEFAULT_MAX_HOLDBACK_CHARS
    max_inspect_bytes: int = 10 * 1024 * 1024
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    regenerate: bool = False


@dataclass(frozen=True)
class RequestRead:
    flow: Flow
    chat: ChatRequest | None
    reason: str | None


@dataclass(frozen=True)
class ReplyPlanned:
    flow: Flow
    mode: Mode
    reason: str | None


@dataclass(frozen=True)
class Regenerated:
    flow: Flow
    result: str
    policies: tuple[str, ...]


@dataclass(frozen=True)
class ReplyJudged:
    flow: Flow
    outcome: Outcome
    stream: bool


Event = RequestRead | ReplyPlanned | Regenerated | ReplyJudged
Subscriber = Callable[[Event], None]


class Flow:
    """One chat request of API ``api`` judged by ``policies`` (kept to its end, whatever a
    reload does). Methods are called in lifecycle order; each fires its event."""

    def __init__(
        self,
        policies: PolicyEngine,
        api: str,
        config: FlowConfig,
        *,
        locale: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        self.policies = policies
        self.api = api
        self.config = config
        self.locale = locale or config.locale
        self.conversation_id = conversation_id
        self.facts: Facts | None = None
        """What the request brings besides text (state, the clock, judges' answers): set by the
        adapter before the reply is judged; None: nothing."""
        self.chat: ChatRequest | None = None
        self.reason: str | None = None  # why the request cannot be inspected
        self.mode: Mode | None = None
        self.request_bytes = 0
        self.judged = False
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber(event)

    # ------------------------------------------------------------------ request
    def read_request(self, raw: bytes, encoding: str) -> ChatRequest | None:
        """Parse the request body (pure: run it off the loop when :meth:`request_weight` says
        so); None: not a request of this API, the reply passes through ``unparseable``."""
        self.request_bytes = len(raw)
        chat = parse_chat_request(self.api, raw, encoding, self.config.max_inspect_bytes)
        self.request_is(chat, None if chat is not None else "unparseable")
        return chat

    def request_is(self, chat: ChatRequest | None, reason: str | None) -> None:
        """The request as read (``read_request`` calls it; an adapter that could not read the
        whole body calls it with the reason, e.g. ``too-large``)."""
        self.chat, self.reason = chat, reason
        self._emit(RequestRead(self, chat, reason))

    def request_weight(self, size: int | None = None) -> int:
        """The bytes parsing the request reads (the offload rule's input)."""
        return self.request_bytes if size is None else size

    @property
    def asked_stream(self) -> bool:
        return self.chat is not None and self.chat.stream

    # ------------------------------------------------------------------ reply head
    def plan_reply(
        self,
        status: int,
        content_type: str,
        content_length: str = "",
        content_encoding: str = "",
        *,
        decodes: Callable[[str], bool] = stream_decodable,
    ) -> Mode:
        """Whole, stream or pass, from the reply's status and headers alone. ``decodes``: which
        ``Content-Encoding`` of a stream the adapter's byte source can undo."""
        kind = content_type.lower()
        if self.reason is None and 200 <= status < 300 and is_stream(kind, self.asked_stream):
            if not decodes(content_encoding):
                return self.passes("encoding", status)
            return self._planned("stream", None)
        limit = self.config.max_inspect_bytes
        reason = self.reason or early_reason(status, kind, content_length, limit)
        if reason is not None:
            return self.passes(reason, status)
        return self._planned("whole", None)

    def passes(self, reason: str, status: int | None = None) -> Mode:
        """The reply passes through uninspected, for ``reason`` (an upstream error status
        always says ``upstream-error``)."""
        if status is not None and not 200 <= status < 300:
            reason = "upstream-error"
        return self._planned("pass", reason)

    def _planned(self, mode: Mode, reason: str | None) -> Mode:
        self.mode, self.reason = mode, reason
        self._emit(ReplyPlanned(self, mode, reason))
        return mode

    # ------------------------------------------------------------------ whole replies
    def reply_weight(self, reply_bytes: int) -> int:
        """The bytes judging a whole reply reads: the reply and the conversation."""
        return reply_bytes + self.request_bytes

    def judge_whole(self, raw: bytes, encoding: str) -> Outcome:
        """Decode, evaluate, rewrite and annotate a whole reply (pure; fail open)."""
        assert self.chat is not None
        return inspect_body(
            self.api,
            self.chat,
            raw,
            encoding,
            self.policies,
            self.locale,
            self.config.max_inspect_bytes,
            self.facts,
        )

    def reply_text(self, raw: bytes, encoding: str) -> str | None:
        """The first choice's text of a whole reply (what a ``reply`` judge reads), or None
        when there is none or the body cannot be read (the judging step then says why)."""
        try:
            body = jsontext.loads(decode_body(raw, encoding, self.config.max_inspect_bytes))
            texts = FORMATS[self.api].reply_texts(body)
        except (ValueError, RecursionError):  # Undecodable, TooLarge, JSON and format errors
            return None
        return next((t for t in texts if t is not None), None)

    def wants_regenerate(self, outcome: Outcome) -> bool:
        """Whether to ask once more: the route allows it and the reply was inspected (the
        policies' requests are read by ``regenerate`` itself)."""
        return self.config.regenerate and outcome.inspected

    @property
    def regenerates_stream(self) -> bool:
        """A stream is regenerated only when held whole: nothing of it is out yet."""
        return self.config.regenerate and self.config.holdback == "full"

    def regenerated(self, result: str, policies: tuple[str, ...]) -> None:
        self._emit(Regenerated(self, result, policies))

    # ------------------------------------------------------------------ streams
    def open_stream(self, content_type: str) -> StreamGuard | None:
        """The guard of a streamed reply (reads the conversation: offload by
        :meth:`request_weight`); None: it cannot be guarded, and the reply passes ``stream``."""
        assert self.chat is not None
        guard = open_stream_guard(
            self.api,
            self.chat,
            self.policies,
            self.locale,
            holdback=self.config.holdback,
            max_holdback_chars=self.config.max_holdback_chars,
            max_event_bytes=self.config.max_event_bytes,
            facts=self.facts,
        )
        if guard is None or not stream_guardable(content_type, guard):
            return None
        return guard

    def stream_ended(self, report: StreamReport, guard: StreamGuard) -> Outcome:
        """A finished stream (however it ended) summed up, and judged once. A stream the client
        left before any reply was judged carries what the conversation alone showed
        (``Outcome.shown``): the person's distress is known even though no reply was judged."""
        outcome = stream_outcome(report, guard)
        if report.cancelled and not any(v is not None for v in outcome.verdicts):
            outcome = replace(outcome, shown=self._shown())
        self.finish(outcome, stream=True)
        return outcome

    def _shown(self) -> dict[str, bool] | None:
        """The signals of the conversation alone (the verdict on an empty reply; ``user.*``
        signals do not depend on the reply), or None when the engine fails on it."""
        assert self.chat is not None
        conv, facts = self.chat.conversation, self.facts
        try:
            if facts is None:  # an engine of the caller's own need not know facts
                verdict = self.policies.evaluate(conv, "", locale=self.locale)
            else:
                verdict = self.policies.evaluate(conv, "", locale=self.locale, facts=facts)
        except Exception:  # noqa: BLE001 -- fail open: what was shown stays unknown
            return None
        return {name: bool(value) for name, value in verdict.signals.items()}

    # ------------------------------------------------------------------ end
    def finish(self, outcome: Outcome, *, stream: bool) -> None:
        """The reply that went out was judged: fire :class:`ReplyJudged`, once."""
        if self.judged:
            return
        self.judged = True
        self._emit(ReplyJudged(self, outcome, stream))
