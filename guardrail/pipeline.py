"""The request pipeline: parse -> forward -> evaluate -> act -> respond.

:meth:`Pipeline.handle` turns one client request into an ASGI response. Every request goes to the
configured upstream (:func:`guardrail.upstream.target_url` decides where and refuses targets that
could leave it). Two paths:

* **Inspected**: ``POST`` to a path whose last two segments are ``chat/completions``
  (``/v1/chat/completions``, ``/chat/completions``, Azure's ``/openai/deployments/x/chat/
  completions``; case, percent-encoding, empty segments and a trailing slash do not matter, so
  spelling the path differently cannot dodge inspection). The request goes upstream byte for
  byte, except that a non-streamed one asks for ``Accept-Encoding: identity`` (the proxy must read
  the reply, and re-serialises it anyway). The reply is read (at most ``max_inspect_bytes``),
  every choice is evaluated with the request's messages as context, rewritten and annotated.
* **Pass-through**: every other request, and inspected-endpoint replies that cannot be inspected
  (``stream``, ``upstream-error``, ``not-json``, ``too-large``, ``unparseable``,
  ``engine-error``): status, headers (hop-by-hop removed) and body unchanged, the body relayed
  chunk by chunk as it arrives unless it was already read.

Guarantees: the client never gets a traceback; an exception inside the policy engine never loses
the reply (it is returned with its text unchanged, marked ``engine-error``: fail open); a reply is
marked inspected only when every choice was evaluated. Per-request state lives in
:class:`~guardrail.observe.logs.Exchange`, logged once at the end.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import anyio
import httpx
from starlette.requests import Request
from starlette.types import ASGIApp

from guardrail import __version__
from guardrail.errors import UpstreamTimeout
from guardrail.formats import ChatRequest, FormatError
from guardrail.formats import openai_chat as chat_format
from guardrail.observe.logs import Exchange, safe_stack
from guardrail.observe.record import Recorder
from guardrail.policy import Conversation, Verdict
from guardrail.settings import Settings
from guardrail.upstream import (
    Buffered,
    Headers,
    Relay,
    TooLarge,
    Undecodable,
    decode_body,
    read_capped,
    request_headers,
    send,
    target_url,
)

__all__ = [
    "Outcome",
    "Pipeline",
    "PolicyEngine",
    "PolicyHolder",
    "annotation",
    "guardrail_headers",
    "inspect_reply",
    "is_inspected_endpoint",
]

ACTION_ORDER = ("none", "annotate", "append", "prepend", "replace", "remove", "block")
_OFFLOAD_BYTES = 64 * 1024  # replies bigger than this are evaluated in a worker thread
_LOCALE = re.compile(r"^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}|intl)$")


class PolicyEngine(Protocol):
    """What the pipeline needs of a policy set (``guardrail.policy.PolicySet`` provides it)."""

    @property
    def digest(self) -> str: ...

    def evaluate(self, conv: Conversation, reply: str, *, locale: str | None = None) -> Verdict: ...


class PolicyHolder:
    """Holds the current policy set; a reload swaps it in one assignment.

    A request takes :attr:`current` once when it starts and keeps that set to its end, so a swap
    never changes the rules under a request in flight.
    """

    def __init__(self, policies: PolicyEngine) -> None:
        self._current = policies

    @property
    def current(self) -> PolicyEngine:
        return self._current

    def swap(self, policies: PolicyEngine) -> PolicyEngine:
        """Install ``policies`` for requests that start from now on; returns the previous set."""
        previous, self._current = self._current, policies
        return previous


def is_inspected_endpoint(method: str, raw_path: bytes) -> bool:
    """True for ``POST .../chat/completions`` however the path is spelled.

    Matching ignores case, percent-encoding, empty segments, a trailing slash, backslashes used as
    separators and ``;params``, so no spelling a lenient upstream accepts can dodge inspection.
    """
    if method.upper() != "POST":
        return False
    path = unquote(raw_path.decode("latin-1")).lower().replace("\\", "/")
    segments = [s.split(";", 1)[0] for s in path.split("/")]
    return [s for s in segments if s][-2:] == ["chat", "completions"]


def guardrail_headers(
    inspected: bool,
    *,
    reason: str | None = None,
    policies: Sequence[str] = (),
    action: str | None = None,
) -> Headers:
    """The ``x-guardrail-*`` response headers (see the README's annotation section)."""
    out: Headers = [(b"x-guardrail-inspected", b"true" if inspected else b"false")]
    if reason is not None:
        out.append((b"x-guardrail-reason", reason.encode("ascii")))
    if policies:
        out.append((b"x-guardrail-policies", ",".join(policies).encode("ascii", "replace")))
    if action is not None:
        out.append((b"x-guardrail-action", action.encode("ascii")))
    return out


# --------------------------------------------------------------------------- evaluate + act


@dataclass(frozen=True)
class Outcome:
    """What inspecting one reply body decided. ``body`` None: return the upstream bytes as they are."""

    body: bytes | None
    inspected: bool
    reason: str | None = None
    policies: tuple[str, ...] = ()
    action: str = "none"
    changed: bool = False
    blocked: bool = False
    choices: int = 0
    error_stack: list[str] | None = None
    verdicts: tuple[Verdict | None, ...] = ()  # per choice, for metrics and audit
    texts: tuple[str | None, ...] = ()  # the upstream's reply texts, read only for audit excerpts

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
    rank = {name: i for i, name in enumerate(ACTION_ORDER)}
    return max(actions, key=lambda a: rank.get(a, 0), default="none")


def _serialise(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def inspect_reply(
    raw: bytes, encoding: str, chat: ChatRequest, policies: PolicyEngine, locale: str, limit: int
) -> Outcome:
    """Decode, parse, evaluate and rewrite one upstream reply body.

    Pure apart from calling the engine: safe to run in a worker thread. A failure while evaluating
    or applying verdicts yields the reply with its texts unchanged, marked ``engine-error``.
    """
    try:
        body = json.loads(decode_body(raw, encoding, limit))
    except TooLarge:
        return Outcome(None, False, "too-large")
    except (Undecodable, ValueError, RecursionError):
        return Outcome(None, False, "not-json")
    try:
        texts = chat_format.reply_texts(body)
    except FormatError:
        return Outcome(None, False, "unparseable")
    try:
        verdicts = [
            None if text is None else policies.evaluate(chat.conversation, text, locale=locale)
            for text in texts
        ]
        return _act(body, texts, verdicts, locale)
    except Exception as exc:  # noqa: BLE001 - fail open: an engine bug never loses the reply
        marked = {
            "version": __version__,
            "inspected": False,
            "reason": "engine-error",
            "locale": locale,
        }
        new = chat_format.apply(body, [None] * len(texts), marked)
        return Outcome(_serialise(new), False, "engine-error", error_stack=safe_stack(exc))


def _act(
    body: object, texts: list[str | None], verdicts: list[Verdict | None], locale: str
) -> Outcome:
    new_texts = [
        v.reply if v is not None and v.reply != text else None for text, v in zip(texts, verdicts)
    ]
    note = annotation(verdicts, locale)
    ids = list(dict.fromkeys(hit["policy"] for hit in note["hits"]))
    return Outcome(
        body=_serialise(chat_format.apply(body, new_texts, note)),
        inspected=True,
        policies=tuple(ids),
        action=note["action"],
        changed=note["changed"],
        blocked=note["blocked"],
        choices=len(texts),
        verdicts=tuple(verdicts),
        texts=tuple(texts),
    )


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """Per-process pipeline state: settings, the upstream client, the policy holder, and the
    recorder that turns verdicts into metrics and audit events (None: neither)."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        holder: PolicyHolder,
        recorder: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.holder = holder
        self.recorder = recorder
        self.route = settings.routes[0]
        self.base = httpx.URL(self.route.upstream)

    async def handle(self, request: Request, ex: Exchange) -> ASGIApp:
        """Forward ``request``; return the response to send.

        Raises UnsafeTarget (-> 400), UpstreamUnavailable (-> 502), UpstreamTimeout (-> 504).
        """
        raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        url = target_url(self.base, raw_path, request.scope.get("query_string", b""))
        drop = [self.settings.locale_header.encode("latin-1")]
        headers = request_headers(request.scope["headers"], drop=drop)
        ex.route = self.route.prefix
        if is_inspected_endpoint(request.method, raw_path):
            return await self._chat(request, ex, url, headers)
        return await self._pass_through(request, ex, url, headers)

    @asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """Apply ``timeouts.total`` (when set) to the enclosed upstream exchange."""
        total = self.settings.timeouts.total
        if total is None:
            yield
            return
        try:
            with anyio.fail_after(total):
                yield
        except TimeoutError:
            raise UpstreamTimeout("upstream exceeded timeouts.total") from None

    async def _open(
        self, ex: Exchange, method: str, url: httpx.URL, headers: Headers, content: Any
    ) -> httpx.Response:
        started = time.perf_counter()
        response = await send(self.client, method, url, headers, content)
        ex.upstream_s = time.perf_counter() - started
        ex.upstream_status = response.status_code
        ex.upstream_request_id = response.headers.get("x-request-id")
        return response

    async def _pass_through(
        self, request: Request, ex: Exchange, url: httpx.URL, headers: Headers
    ) -> ASGIApp:
        sent = {name.lower() for name, _ in request.scope["headers"]}
        chunked = b"transfer-encoding" in sent
        has_body = chunked or request.headers.get("content-length", "0") not in ("", "0")
        async with self._deadline():
            response = await self._open(
                ex, request.method, url, headers, request.stream() if has_body else None
            )
        return Relay(response, response.aiter_raw(), ex)

    async def _chat(
        self, request: Request, ex: Exchange, url: httpx.URL, headers: Headers
    ) -> ASGIApp:
        ex.api = chat_format.NAME
        offered = request.headers.get(self.settings.locale_header, "").strip()
        ex.locale = offered if _LOCALE.match(offered) else self.route.locale or self.settings.locale
        policies = self.holder.current  # this request keeps this set, whatever a reload does
        ex.policy_digest = policies.digest
        body = await request.body()
        started = time.perf_counter()
        chat = self._parse_request(body, request.headers.get("content-encoding", ""), ex)
        ex.guardrail_s = time.perf_counter() - started
        if chat is None or chat.stream:
            async with self._deadline():
                response = await self._open(ex, "POST", url, headers, body)
            reason = "unparseable" if chat is None else "stream"
            return self._relay_uninspected(response, response.aiter_raw(), [], ex, reason)
        headers = [(n, v) for n, v in headers if n != b"accept-encoding"]
        headers.append((b"accept-encoding", b"identity"))
        header = self.settings.audit.conversation_header
        conversation_id = request.headers.get(header) if header else None
        return await self._inspect(ex, url, headers, body, chat, policies, conversation_id)

    def _parse_request(self, body: bytes, encoding: str, ex: Exchange) -> ChatRequest | None:
        """The parsed request (a compressed body is decoded for reading, forwarded as sent)."""
        try:
            text = decode_body(body, encoding, self.settings.max_inspect_bytes)
            chat = chat_format.parse_request(json.loads(text))
        except (ValueError, RecursionError):  # JSON, Unicode, Format, Undecodable errors
            return None
        ex.model = chat.model[:200] if chat.model else None
        ex.stream = chat.stream
        return chat

    async def _inspect(
        self,
        ex: Exchange,
        url: httpx.URL,
        headers: Headers,
        body: bytes,
        chat: ChatRequest,
        policies: PolicyEngine,
        conversation_id: str | None,
    ) -> ASGIApp:
        limit = self.settings.max_inspect_bytes
        async with self._deadline():
            response = await self._open(ex, "POST", url, headers, body)
            chunks = response.aiter_raw()
            reason = _early_reason(response, limit)
            if reason is not None:
                return self._relay_uninspected(response, chunks, [], ex, reason)
            started = time.perf_counter()
            try:
                read, complete = await read_capped(chunks, limit)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
            ex.upstream_s = (ex.upstream_s or 0.0) + time.perf_counter() - started
        if not complete:
            return self._relay_uninspected(response, chunks, read, ex, "too-large")
        await response.aclose()
        return await self._evaluate(response, b"".join(read), chat, policies, ex, conversation_id)

    def _relay_uninspected(
        self,
        response: httpx.Response,
        chunks: AsyncIterator[bytes],
        prefix: list[bytes],
        ex: Exchange,
        reason: str,
    ) -> ASGIApp:
        if not 200 <= response.status_code < 300:
            reason = "upstream-error"
        ex.inspected, ex.reason = False, reason
        return Relay(
            response, chunks, ex, prefix=prefix, extra=guardrail_headers(False, reason=reason)
        )

    async def _evaluate(
        self,
        response: httpx.Response,
        raw: bytes,
        chat: ChatRequest,
        policies: PolicyEngine,
        ex: Exchange,
        conversation_id: str | None = None,
    ) -> ASGIApp:
        started = time.perf_counter()
        run = functools.partial(
            inspect_reply,
            raw,
            response.headers.get("content-encoding", ""),
            chat,
            policies,
            ex.locale or self.settings.locale,
            self.settings.max_inspect_bytes,
        )
        outcome = run() if len(raw) <= _OFFLOAD_BYTES else await anyio.to_thread.run_sync(run)
        ex.guardrail_s = (ex.guardrail_s or 0.0) + time.perf_counter() - started
        ex.inspected, ex.reason, ex.choices = outcome.inspected, outcome.reason, outcome.choices
        if outcome.inspected:
            ex.policies, ex.action = list(outcome.policies), outcome.action
            ex.changed, ex.blocked = outcome.changed, outcome.blocked
            if self.recorder is not None:
                self.recorder.evaluated(
                    ex,
                    policies,
                    chat.conversation,
                    outcome.verdicts,
                    replies=outcome.texts,
                    conversation_id=conversation_id,
                )
        if outcome.error_stack is not None:
            ex.error, ex.error_stack = "engine_error", outcome.error_stack
        if outcome.body is None:
            return Buffered(response, raw, ex, rewritten=False, extra=outcome.headers())
        return Buffered(response, outcome.body, ex, rewritten=True, extra=outcome.headers())


def _early_reason(response: httpx.Response, limit: int) -> str | None:
    """Why a reply cannot be inspected, known from its status and headers alone; else None."""
    if not 200 <= response.status_code < 300:
        return "upstream-error"
    if response.status_code in (204, 205):
        return "not-json"
    if response.headers.get("content-type", "").lower().startswith("text/event-stream"):
        return "stream"
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return "too-large"
    return None
