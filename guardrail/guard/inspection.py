"""The one place policies are applied to chat bodies on the wire, whoever carries them.

The proxy (``guardrail.proxy.pipeline``) and the ASGI middleware (``guardrail.middleware``) call it:
both see a request path, a request body and a reply (whole bytes or a stream) and nothing here
knows where they came from. No I/O, no logging, no metrics: the caller records what the results say.

Stages, in the order a caller runs them, and what each guarantees:

1. :func:`detect_api` (request line): the wire format of a chat endpoint, recognised from the
   path however it is spelled, or None (not a chat endpoint: pass the request through).
2. :func:`parse_chat_request` (request body): the conversation the reply answers, whether the
   client asked for a stream, the model; None when the body is not a request of that API (pass
   it through, marked ``unparseable``). A compressed body is decoded for reading only.
3. Which way a reply goes, from its status and headers alone: a stream (:func:`is_stream`,
   :func:`stream_guardable`) or a whole reply (:func:`early_reason`: None, or why not).
   For a whole reply, :func:`inspect_body` -> :class:`Outcome`: the body rewritten and annotated,
   or why it was not inspected. Fail open: an exception inside the engine returns the reply with
   its text unchanged, marked ``engine-error``. A reply is marked inspected only when every
   choice was evaluated.
   For a streamed reply, :func:`open_stream_guard` -> a :class:`~guardrail.guard.stream.StreamGuard`
   to pump the upstream bytes through (its report says what happened); :func:`stream_outcome`
   then sums the report up as an :class:`Outcome` without a body.

Which paths are chat endpoints of which API: :mod:`guardrail.formats.registry`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from typing import Any, Protocol

from guardrail.formats.codings import TooLarge, Undecodable, decode_body
from guardrail.formats import ChatRequest, FormatError, jsontext
from guardrail.formats.registry import API_NAMES, ENDPOINTS, FORMATS, STREAM_TYPES, detect_api
from guardrail.formats.wireformat import WireFormat
from guardrail.guard.offload import OFFLOAD_BYTES, offloaded
from guardrail.guard.text import DEFAULT_MAX_HOLDBACK_CHARS, Holdback
from guardrail.errors import safe_stack
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.policy.facts import Facts
from guardrail.policy.model import ACTION_ORDER
from guardrail.version import __version__
from guardrail.guard.stream import DEFAULT_MAX_EVENT_BYTES, StreamGuard, StreamReport

__all__ = [
    "APIS",
    "ENDPOINTS",
    "FORMATS",
    "OFFLOAD_BYTES",
    "STALE_HEADERS",
    "STREAM_TYPES",
    "Headers",
    "Outcome",
    "PolicyEngine",
    "annotation",
    "detect_api",
    "early_reason",
    "guardrail_headers",
    "inspect_body",
    "is_stream",
    "open_stream_guard",
    "parse_chat_request",
    "request_locale",
    "stream_guardable",
    "stream_outcome",
]

Headers = list[tuple[bytes, bytes]]

APIS = API_NAMES
STALE_HEADERS = frozenset(
    {b"content-length", b"content-encoding", b"etag", b"content-md5", b"digest"}
)
"""Upstream headers that describe bytes the client does not get."""
_LOCALE = re.compile(r"^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}|intl)$")


class PolicyEngine(Protocol):
    """What inspecting a whole reply needs of a policy set (``PolicySet`` provides it; a stream
    needs a real ``PolicySet``)."""

    @property
    def digest(self) -> str: ...

    def evaluate(
        self,
        conv: Conversation,
        reply: str,
        *,
        locale: str | None = None,
        facts: Facts | None = None,
    ) -> Verdict: ...


# --------------------------------------------------------------------------- request side


def parse_chat_request(api: str, raw: bytes, encoding: str, limit: int) -> ChatRequest | None:
    """The chat request in ``raw`` (a request body of API ``api``), or None if it is not one."""
    try:
        body = _loads(decode_body(raw, encoding, limit))
        chat: ChatRequest = FORMATS[api].parse_request(body)
    except (ValueError, RecursionError):  # JSON, Unicode, Format, Undecodable errors
        return None
    return chat


def _loads(data: bytes) -> Any:
    """``json.loads``; above :data:`OFFLOAD_BYTES` (parsed in a worker thread) every JSON
    object is built by a Python call, where the interpreter can hand the GIL to the event loop:
    the C parser alone would hold it for the whole body (about 40 ms for 16 MB)."""
    if not offloaded(len(data)):
        return jsontext.loads(data)
    return jsontext.loads(data, object_pairs_hook=_object)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)


def request_locale(offered: str, default: str) -> str:
    """The locale a request asks for (its locale header, ``offered``) if it looks like a locale
    tag, else ``default``: a header value never reaches the engine or a label unchecked."""
    offered = offered.strip()
    return offered if _LOCALE.match(offered) else default


# --------------------------------------------------------------------------- reply side


def is_stream(content_type: str, asked: bool) -> bool:
    """A 2xx reply to guard as a stream: a stream media type, or anything but JSON when the
    client asked for a stream (some servers label their event streams ``text/plain``)."""
    content_type = content_type.lower()
    if content_type.startswith(STREAM_TYPES):
        return True
    media = content_type.split(";", 1)[0].strip()
    return asked and not (media == "application/json" or media.endswith("+json"))


def stream_guardable(content_type: str, guard: StreamGuard | None) -> bool:
    """Whether ``guard`` can read a stream of ``content_type``: not one of another API's stream
    media types (an unlabelled stream is read in the API's own)."""
    content_type = content_type.lower()
    if guard is None:
        return False
    return not content_type.startswith(STREAM_TYPES) or content_type.startswith(guard.media_type)


def early_reason(status: int, content_type: str, content_length: str, limit: int) -> str | None:
    """Why a whole reply cannot be inspected, known from its status and headers alone; else
    None (read it and call :func:`inspect_body`)."""
    if not 200 <= status < 300:
        return "upstream-error"
    if status in (204, 205):
        return "not-json"
    if content_type.lower().startswith(STREAM_TYPES):
        return "stream"
    if content_length.isdigit() and int(content_length) > limit:
        return "too-large"
    return None


def guardrail_headers(
    inspected: bool,
    *,
    reason: str | None = None,
    policies: Sequence[str] = (),
    action: str | None = None,
    holdback: str | None = None,
) -> Headers:
    """The ``x-guardrail-*`` response headers (see the README's annotation section)."""
    out: Headers = [(b"x-guardrail-inspected", b"true" if inspected else b"false")]
    if reason is not None:
        out.append((b"x-guardrail-reason", reason.encode("ascii")))
    if policies:
        out.append((b"x-guardrail-policies", ",".join(policies).encode("ascii", "replace")))
    if action is not None:
        out.append((b"x-guardrail-action", action.encode("ascii")))
    if holdback is not None:
        out.append((b"x-guardrail-holdback", holdback.encode("ascii")))
    return out


@dataclass(frozen=True)
class Outcome:
    """What inspecting one reply decided. ``body`` None: send the upstream bytes as they are
    (not inspected, or a stream, whose bytes went out as they were guarded)."""

    body: bytes | None
    inspected: bool
    reason: str | None = None
    policies: tuple[str, ...] = ()
    action: str = "none"
    changed: bool = False
    blocked: bool = False
    choices: int = 0
    error: str | None = None  # the engine exception's type name, when it failed open
    error_stack: list[str] | None = None
    verdicts: tuple[Verdict | None, ...] = ()  # per choice, for metrics and audit
    texts: tuple[str | None, ...] = ()  # the upstream's reply texts, read only for audit excerpts
    shown: Mapping[str, bool] | None = None  # a stream the client left before any reply was
    # judged: the signals of the conversation alone (what the person showed), for the state

    def headers(self) -> Headers:
        if not self.inspected:
            return guardrail_headers(False, reason=self.reason)
        return guardrail_headers(True, policies=self.policies, action=self.action)


def annotation(verdicts: Sequence[Verdict | None], locale: str) -> dict[str, Any]:
    """The ``guardrail`` body object for inspected choices (``None`` = choice without text).

    Hits carry the index of the choice they concern; a signal is true if it is true for any
    choice; ``action`` is the strongest action enforced on any choice.
    """
    hits: list[dict[str, Any]] = []
    signals: dict[str, bool] = {}
    for index, verdict in enumerate(verdicts):
        if verdict is None:
            continue
        hits.extend({**hit.to_dict(), "choice": index} for hit in verdict.hits)
        for name, value in verdict.signals.items():
            signals[name] = signals.get(name, False) or bool(value)
    done = [v for v in verdicts if v is not None]
    return {
        "version": __version__,
        "inspected": True,
        "locale": done[0].locale if done else locale,
        "action": _strongest([v.strongest_action for v in done]),
        "changed": any(v.changed for v in done),
        "blocked": any(v.blocked for v in done),
        "hits": hits,
        "signals": signals,
    }


def _strongest(actions: Sequence[str]) -> str:
    return max(
        actions, key=lambda a: ACTION_ORDER.index(a) if a in ACTION_ORDER else 0, default="none"
    )


def _serialise(body: object) -> bytes:
    return jsontext.dumps(body)  # a lone surrogate in a reply never makes it fail (issue 11)


def _spliced(body: object, decoded: bytes, note: dict[str, Any]) -> bytes | None:
    """The upstream's own bytes with the ``guardrail`` member added before the closing brace,
    when no reply text changed: the body is then the upstream's, byte for byte, plus the
    annotation, and the whole reply is not serialised again. None when that is not safe: the
    body is not a JSON object spelled plainly, or it already has a ``guardrail`` member (which
    the upstream must never be able to forge: it is replaced by re-serialising)."""
    if not isinstance(body, dict) or "guardrail" in body:
        return None
    text = decoded.strip()
    if not (text.startswith(b"{") and text.endswith(b"}")):
        return None
    member = b'"guardrail":' + _serialise(note)
    return text[:-1] + (b"," if body else b"") + member + b"}"


def inspect_body(
    api: str,
    chat: ChatRequest,
    raw: bytes,
    encoding: str,
    policies: PolicyEngine,
    locale: str,
    limit: int,
    facts: Facts | None = None,
) -> Outcome:
    """Decode, parse, evaluate and rewrite one whole reply body of API ``api``.

    Pure apart from calling the engine: safe to run in a worker thread. ``encoding`` is the
    reply's Content-Encoding; ``limit`` bounds the decoded size (``too-large`` past it).
    """
    fmt = FORMATS[api]
    try:
        decoded = decode_body(raw, encoding, limit)
        body = jsontext.loads(decoded)
    except TooLarge:
        return Outcome(None, False, "too-large")
    except (Undecodable, ValueError, RecursionError):
        return Outcome(None, False, "not-json")
    try:
        texts: list[str | None] = fmt.reply_texts(body)
    except FormatError:
        return Outcome(None, False, "unparseable")
    try:
        verdicts = [
            None if text is None else _evaluate(policies, chat.conversation, text, locale, facts)
            for text in texts
        ]
        return _act(fmt, body, texts, verdicts, locale, decoded)
    except Exception as exc:  # noqa: BLE001 - fail open: an engine bug never loses the reply
        marked = {
            "version": __version__,
            "inspected": False,
            "reason": "engine-error",
            "locale": locale,
        }
        new = fmt.apply(body, [None] * len(texts), marked)
        return Outcome(
            _serialise(new),
            False,
            "engine-error",
            error=type(exc).__name__,
            error_stack=safe_stack(exc),  # frames only, no message
        )


def _act(
    fmt: WireFormat,
    body: object,
    texts: list[str | None],
    verdicts: list[Verdict | None],
    locale: str,
    decoded: bytes = b"",
) -> Outcome:
    new_texts = [
        v.reply if v is not None and v.reply != text else None for text, v in zip(texts, verdicts)
    ]
    note = annotation(verdicts, locale)
    ids = list(dict.fromkeys(hit["policy"] for hit in note["hits"]))
    spliced = _spliced(body, decoded, note) if all(t is None for t in new_texts) else None
    return Outcome(
        body=spliced if spliced is not None else _serialise(fmt.apply(body, new_texts, note)),
        inspected=True,
        policies=tuple(ids),
        action=note["action"],
        changed=note["changed"],
        blocked=note["blocked"],
        choices=len(texts),
        verdicts=tuple(verdicts),
        texts=tuple(texts),
    )


# --------------------------------------------------------------------------- streams


def _evaluate(
    policies: PolicyEngine, conv: Conversation, text: str, locale: str, facts: Facts | None
) -> Verdict:
    if facts is None:  # an engine of the caller's own need not know facts
        return policies.evaluate(conv, text, locale=locale)
    return policies.evaluate(conv, text, locale=locale, facts=facts)


def open_stream_guard(
    api: str,
    chat: ChatRequest,
    policies: PolicyEngine,
    locale: str,
    *,
    holdback: Holdback = "sentence",
    max_holdback_chars: int = DEFAULT_MAX_HOLDBACK_CHARS,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    facts: Facts | None = None,
) -> StreamGuard | None:
    """A stream guard for one streamed reply of API ``api``; None when ``policies`` is not a
    :class:`~guardrail.policy.PolicySet` (an engine that can only judge whole replies: the
    stream then passes through, marked ``stream``)."""
    if not isinstance(policies, PolicySet):
        return None
    return StreamGuard(
        api,
        policies,
        chat.conversation,
        locale=locale,
        holdback=holdback,
        max_holdback_chars=max_holdback_chars,
        extra={"version": __version__},
        max_event_bytes=max_event_bytes,
        facts=facts,
    )


def stream_outcome(report: StreamReport, guard: StreamGuard) -> Outcome:
    """A finished stream summed up like a whole reply (no body: its bytes are already sent).

    Not inspected (``engine-error``) when the engine failed on any choice; a stream cut short
    (fault or client gone) is still inspected as far as it went."""
    verdicts = tuple(report.verdicts[i] for i in sorted(report.verdicts))
    if report.engine_error is not None:
        return Outcome(
            None,
            False,
            "engine-error",
            error=report.engine_error,
            verdicts=verdicts,
            choices=len(verdicts),
        )
    note = guard.annotation()
    ids = tuple(dict.fromkeys(hit["policy"] for hit in note["hits"]))
    return Outcome(
        None,
        True,
        policies=ids,
        action=note["action"],
        changed=note["changed"],
        blocked=note["blocked"],
        choices=len(verdicts),
        verdicts=verdicts,
    )
