"""The request pipeline: route -> parse -> forward -> evaluate -> act -> respond.

:meth:`Pipeline.handle` turns one client request into an ASGI response. The request's path picks
its route (``guardrail.config.routes``: longest prefix; the prefix is stripped; no match is a 404 and
nothing is forwarded), and the route's upstream gets it (:func:`guardrail.proxy.upstream.target_url`
refuses targets that could leave it). Every decision about a chat request is taken by its
:class:`~guardrail.guard.flow.Flow` (sans I/O, shared with the middleware); this module does the
HTTP around it and what the flow decides. Three paths:

* **Whole reply**: ``POST`` to a chat endpoint (:func:`guardrail.guard.flow.choose_api`: the path, or the
  route's pinned ``api``) whose upstream reply is not a stream. The request goes upstream byte
  for byte, except ``Accept-Encoding: identity`` (the proxy reads the reply). The reply is read
  (at most ``max_inspect_bytes``), evaluated per choice with the request's messages as context,
  rewritten, annotated (``guardrail`` body key and ``x-guardrail-*`` headers). When a policy
  asks to regenerate and the route has ``regenerate`` on, the upstream is asked once more
  (``guardrail.proxy.regenerate``) and the better of the two replies is sent.
* **Stream**: the same, with a 2xx reply in the API's stream media type (whatever the request's
  ``stream`` flag said): pumped through a stream guard with the route's holdback, as it arrives
  (``guardrail.proxy.relay``). Upstream faults end the client's stream cleanly, and are logged
  and counted; a client that leaves cancels the upstream request. With holdback ``full`` and
  ``regenerate`` on, the whole stream is held until its end, so that a policy's request to
  regenerate can still replace it by a second stream (``guardrail.proxy.regenerate_stream``).
* **Pass-through**: every other request, and chat replies that cannot be inspected (reasons:
  ``stream`` for a stream of another media type, ``encoding`` for a stream in a content coding
  guardrail cannot undo as it arrives (byte for byte, never with its text lost),
  ``upstream-error``, ``not-json``, ``too-large``, ``unparseable``, ``engine-error``): status,
  headers (hop-by-hop removed) and body unchanged, relayed chunk by chunk unless it was already
  read.

Guarantees: the client never gets a traceback; an exception inside the policy engine never loses
the reply (fail open, marked ``engine-error``). Per-request state lives in
:class:`~guardrail.observe.logs.Exchange`, logged once at the end.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.errors import UpstreamTimeout
from guardrail.formats.registry import detect_api
from guardrail.guard.flow import Flow, FlowConfig, choose_api
from guardrail.guard.inspection import (
    Outcome,
    PolicyEngine,
    annotation,
    guardrail_headers,
    request_locale,
)
from guardrail.proxy.limits import (
    Gate,
    RequestTooLarge,
    Ticket,
    Worker,
    capped,
    declared_length,
    read_body,
)
from guardrail.observe.logs import Exchange
from guardrail.observe.record import Recorder, follow_log
from guardrail.config.policysets import PolicyHolder, PolicySets
from guardrail.proxy.regenerate import Second, regenerate
from guardrail.proxy.regenerate_stream import StreamRegeneration
from guardrail.config.routes import NoRoute, Route, RouteTable
from guardrail.config.settings import Settings
from guardrail.guard.stream import StreamGuard, StreamReport
from guardrail.proxy.gather import Gathering
from guardrail.proxy.relay import GuardedStream
from guardrail.state.identity import state_header_names
from guardrail.state.link import StateLink
from guardrail.proxy.respond import Buffered, Relay
from guardrail.proxy.upstream import (
    Headers,
    check_path,
    read_capped,
    request_headers,
    send,
    target_url,
)

if TYPE_CHECKING:
    from guardrail.judge.runner import JudgeRunner

__all__ = [
    "Outcome",
    "Pipeline",
    "PolicyEngine",
    "PolicyHolder",
    "annotation",
    "guardrail_headers",
    "is_inspected_endpoint",
]



def is_inspected_endpoint(method: str, raw_path: bytes) -> bool:
    """True for a ``POST`` to any chat endpoint guardrail inspects, however the path is spelled."""
    return detect_api(method, raw_path) is not None


@dataclass
class _Chat:
    """One inspected request in flight: its route and flow, and where it went (to send it once
    more when a policy asks to regenerate)."""

    route: Route
    flow: Flow
    url: httpx.URL
    headers: Headers
    body: bytes
    encoding: str
    gathering: Gathering | None = None


class Pipeline:
    """Per-process pipeline state: settings, the upstream client, the routes and their policy
    sets, and the recorder that turns verdicts into metrics and audit events (None: neither)."""

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        policies: PolicySets | PolicyHolder,
        recorder: Recorder | None = None,
        *,
        state: StateLink | None = None,
        judges: JudgeRunner | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sets = policies if isinstance(policies, PolicySets) else PolicySets(policies)
        self.holder = self.sets.main
        self.recorder = recorder
        self.state = state
        self.judges = judges
        self.table = RouteTable(settings.routes)
        self.bases = {route.prefix: httpx.URL(route.upstream) for route in self.table.routes}
        self.gate = Gate(settings.max_upstream_per_client, settings.max_connections)
        self.worker = Worker()

    def route_label(self, scope: Scope) -> str:
        """The prefix of the route a request will take (``/`` when none matches), known before
        anything else happens, so metrics label the request the same from start to end."""
        raw_path: bytes = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")
        try:
            return self.table.match(raw_path.split(b"?", 1)[0])[0].prefix
        except NoRoute:
            return "/"

    async def handle(self, request: Request, ex: Exchange) -> ASGIApp:
        """Forward ``request``; return the response to send.

        Raises NoRoute (-> 404), UnsafeTarget (-> 400), UpstreamUnavailable (-> 502),
        UpstreamTimeout (-> 504), and the limits' refusals (``guardrail.proxy.limits``: 413, 429,
        503). The request holds its place in the client's share of the upstream pool until its
        response has been sent.
        """
        raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        check_path(raw_path)
        route, rest = self.table.match(raw_path)
        ex.route = route.prefix
        url = target_url(self.bases[route.prefix], rest, request.scope.get("query_string", b""))
        drop = [
            self.settings.locale_header.encode("latin-1"),
            *state_header_names(self.settings.state),  # guardrail's own: never forwarded
        ]
        headers = request_headers(request.scope["headers"], drop=drop)
        api = choose_api(request.method, raw_path, route.api)
        ex.api = api or ex.api  # known before any refusal, which answers in the API's format
        client = request.scope.get("client")
        ticket = self.gate.enter(str(client[0]) if client else "")
        try:
            if api is None:
                ticket.other()
                response = await self._pass_through(request, ex, url, headers)
            else:
                response = await self._chat(request, ex, route, api, url, headers, ticket)
        except BaseException:
            ticket.release()
            raise
        return _Releasing(response, ticket)

    @asynccontextmanager
    async def _deadline(self, spent: float = 0.0) -> AsyncIterator[None]:
        """Apply ``timeouts.total`` (when set), less ``spent`` seconds, to the enclosed wait."""
        total = self.settings.timeouts.total
        if total is None:
            yield
            return
        try:
            with anyio.fail_after(max(0.0, total - spent)):
                yield
        except TimeoutError:
            raise UpstreamTimeout("upstream exceeded timeouts.total") from None

    async def _open(
        self, ex: Exchange, method: str, url: httpx.URL, headers: Headers, content: Any
    ) -> httpx.Response:
        started = time.perf_counter()
        async with self._deadline():
            response = await send(self.client, method, url, headers, content)
        ex.upstream_s = time.perf_counter() - started
        ex.upstream_status = response.status_code
        ex.upstream_request_id = response.headers.get("x-request-id")
        return response

    async def _pass_through(
        self, request: Request, ex: Exchange, url: httpx.URL, headers: Headers
    ) -> ASGIApp:
        limit = self.settings.max_request_bytes
        sent = {name.lower() for name, _ in request.scope["headers"]}
        chunked = b"transfer-encoding" in sent
        has_body = chunked or request.headers.get("content-length", "0") not in ("", "0")
        declared_length(request.scope["headers"], limit)
        body = _Capped(request.stream(), limit) if has_body else None
        try:
            response = await self._open(ex, request.method, url, headers, body)
        except Exception:
            if body is not None and body.over is not None:  # the upload broke off at the cap
                raise body.over from None
            raise
        return Relay(response, response.aiter_raw(), ex)

    def _flow(self, request: Request, ex: Exchange, route: Route, api: str) -> Flow:
        """The request's flow, with the route's guard settings, followed by the recorder."""
        offered = request.headers.get(self.settings.locale_header, "")
        ex.locale = request_locale(offered, route.locale or self.settings.locale)
        policies = self.sets.holder(route).current  # kept to the end, whatever a reload does
        ex.policy_digest = policies.digest
        config = FlowConfig(
            locale=ex.locale,
            holdback=route.holdback,  # type: ignore[arg-type]  # validated by config values
            max_holdback_chars=route.max_holdback_chars,
            max_inspect_bytes=self.settings.max_inspect_bytes,
            max_event_bytes=self.settings.max_event_bytes,
            regenerate=route.regenerate,
        )
        header = self.settings.audit.conversation_header
        flow = Flow(
            policies,
            api,
            config,
            conversation_id=request.headers.get(header) if header else None,
        )
        if self.recorder is not None:
            self.recorder.follow(flow, ex)
        else:
            follow_log(flow, ex)
        return flow

    async def _chat(
        self,
        request: Request,
        ex: Exchange,
        route: Route,
        api: str,
        url: httpx.URL,
        headers: Headers,
        ticket: Ticket,
    ) -> ASGIApp:
        ex.api = api
        flow = self._flow(request, ex, route, api)
        limit = self.settings.max_request_bytes
        declared_length(request.scope["headers"], limit)
        body = await read_body(request.stream(), limit)
        started = time.perf_counter()
        encoding = request.headers.get("content-encoding", "")
        read = functools.partial(flow.read_request, body, encoding)
        chat = await self.worker.run(read, flow.request_weight(len(body)))
        ex.guardrail_s = time.perf_counter() - started
        if chat is not None and chat.stream:
            ticket.stream()
        else:
            ticket.other()
        if chat is not None:
            headers = [(n, v) for n, v in headers if n != b"accept-encoding"]
            headers.append((b"accept-encoding", b"identity"))
        state = _Chat(route, flow, url, headers, body, encoding)
        gathering = Gathering.start(
            flow, request.headers, link=self.state, runner=self.judges, minor_route=route.minor
        )  # beside the upstream call: what answers first adds no latency
        state.gathering = gathering
        try:
            response = await self._open(ex, "POST", url, headers, body)
        except BaseException:
            if gathering is not None:
                gathering.cancel()
            raise
        kind = response.headers.get("content-type", "").lower()
        mode = flow.plan_reply(
            response.status_code,
            kind,
            response.headers.get("content-length", ""),
            response.headers.get("content-encoding", ""),
        )
        if mode == "pass":
            if gathering is not None:
                gathering.cancel()
            return self._uninspected(response, response.aiter_raw(), [], ex, flow)
        if mode == "stream":
            try:
                if gathering is not None:  # a stream's judges read the conversation only
                    flow.facts = await gathering.facts(None)
                return await self._stream(response, state, ex, kind)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
        return await self._whole(response, state, ex)

    # ------------------------------------------------------------------ streams
    async def _stream(
        self, response: httpx.Response, state: _Chat, ex: Exchange, kind: str
    ) -> ASGIApp:
        route, flow = state.route, state.flow
        started = time.perf_counter()
        opening = functools.partial(flow.open_stream, kind)
        guard = await self.worker.run(opening, flow.request_weight())  # reads the conversation
        ex.guardrail_s = (ex.guardrail_s or 0.0) + time.perf_counter() - started
        if guard is None:
            flow.passes("stream")
            return self._uninspected(response, response.aiter_raw(), [], ex, flow)
        extra = guardrail_headers(True, holdback=route.holdback)
        clock = self.recorder.holdback_clock(ex) if self.recorder is not None else None
        again = None
        if flow.regenerates_stream:  # held whole: it may be replaced
            second = self._second(state)
            again = StreamRegeneration(guard, second, stall_timeout=route.stall_timeout)
        return GuardedStream(
            response,
            guard,
            ex,
            extra=extra,
            stall_timeout=route.stall_timeout,
            clock=clock,
            finish=again.finish if again is not None else None,
            on_end=functools.partial(self._stream_ended, ex, flow, guard, again),
        )

    def _stream_ended(
        self,
        ex: Exchange,
        flow: Flow,
        guard: StreamGuard,
        again: StreamRegeneration | None,
        report: StreamReport,
    ) -> None:
        """The stream is over (however it ended): its timings, then its judging, once."""
        ex.stream_fault = report.fault
        ex.guardrail_s = (ex.guardrail_s or 0.0) + report.guard_seconds
        if again is not None and again.result is not None:
            flow.regenerated(again.result, tuple(again.policies))
            ex.upstream_s = (ex.upstream_s or 0.0) + again.upstream_s
            ex.guardrail_s += again.guard_s
            guard = again.sent or guard  # the reply that went out is the one recorded
        flow.stream_ended(guard.report, guard)

    # ------------------------------------------------------------------ whole replies
    async def _whole(self, response: httpx.Response, state: _Chat, ex: Exchange) -> ASGIApp:
        flow = state.flow
        limit = self.settings.max_inspect_bytes
        chunks = response.aiter_raw()
        started = time.perf_counter()
        try:
            async with self._deadline(spent=ex.upstream_s or 0.0):  # one deadline, both waits
                read, complete = await read_capped(chunks, limit)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        ex.upstream_s = (ex.upstream_s or 0.0) + time.perf_counter() - started
        if not complete:
            if state.gathering is not None:  # nothing will be judged: stop the judges
                state.gathering.cancel()
            flow.passes("too-large")
            return self._uninspected(response, chunks, read, ex, flow)
        await response.aclose()
        raw = b"".join(read)
        if state.gathering is not None:
            text = None
            if state.gathering.reads_reply:
                reading = functools.partial(flow.reply_text, raw, response.headers.get(
                    "content-encoding", ""))
                text = await self.worker.run(reading, len(raw))
            flow.facts = await state.gathering.facts(text)
        started = time.perf_counter()
        judge = functools.partial(
            flow.judge_whole, raw, response.headers.get("content-encoding", "")
        )
        outcome = await self.worker.run(judge, flow.reply_weight(len(raw)))
        ex.guardrail_s = (ex.guardrail_s or 0.0) + time.perf_counter() - started
        if flow.wants_regenerate(outcome):  # a whole reply, whatever was asked
            outcome = await self._regenerate(state, ex, outcome)
        flow.finish(outcome, stream=False)
        rewritten = outcome.body is not None
        body = outcome.body if outcome.body is not None else raw
        return Buffered(response, body, ex, rewritten=rewritten, extra=outcome.headers())

    async def _regenerate(self, state: _Chat, ex: Exchange, first: Outcome) -> Outcome:
        """``first``, or the reply to the request sent once more if a policy asks for it."""
        attempt = await regenerate(self._second(state), first)
        if attempt is None:
            return first
        state.flow.regenerated(attempt.result, tuple(attempt.policies))
        ex.upstream_s = (ex.upstream_s or 0.0) + attempt.upstream_s
        return attempt.outcome

    def _second(self, state: _Chat) -> Second:
        """How to send ``state``'s request once more (see ``guardrail.proxy.regenerate``)."""
        flow = state.flow
        assert flow.chat is not None
        return Second(
            self.client,
            state.url,
            state.headers,
            flow.api,
            state.body,
            state.encoding,
            flow.chat,
            flow.policies,
            flow.locale,
            self.settings.max_inspect_bytes,
            state.route.regenerate_budget,
            flow.facts,
        )

    def _uninspected(
        self,
        response: httpx.Response,
        chunks: AsyncIterator[bytes],
        prefix: list[bytes],
        ex: Exchange,
        flow: Flow,
    ) -> ASGIApp:
        """Relay the reply as it is, marked not inspected for the flow's reason."""
        extra = guardrail_headers(False, reason=flow.reason)
        return Relay(response, chunks, ex, prefix=prefix, extra=extra)


class _Capped:
    """A request body relayed upstream as it arrives, cut off past ``limit`` bytes; ``over``
    holds the refusal when it was (the transport reports the cut as a failed upload)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self.chunks = chunks
        self.limit = limit
        self.over: RequestTooLarge | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in capped(self.chunks, self.limit):
                yield chunk
        except RequestTooLarge as exc:
            self.over = exc
            raise


class _Releasing:
    """The pipeline's response, giving the request's place in the pool back once sent."""

    def __init__(self, response: ASGIApp, ticket: Ticket) -> None:
        self.response = response
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.ticket.release()
