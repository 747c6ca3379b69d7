"""The ASGI application: one catch-all route into the pipeline, errors in the OpenAI format.

:func:`build_app` wires settings, the policy set and the upstream client into a Starlette app.
Every method on every path goes to :class:`ProxyEndpoint`, which creates the per-request
:class:`~guardrail.observe.logs.Exchange`, runs the pipeline, sends its response, and writes the one
canonical log line. ``app.state`` holds ``settings``, ``policies`` (the main
:class:`~guardrail.config.policysets.PolicyHolder`: a reload calls ``app.state.policies.swap(new_set)``),
``policy_sets`` (:class:`~guardrail.config.policysets.PolicySets`: the main holder and each route's own,
with the reload hooks), ``pipeline``, ``client`` and ``recorder`` (the
:class:`~guardrail.observe.record.Recorder` that turns requests and verdicts into metrics and
audit events).

The app has no admin route: ``/metrics``, ``/-/reload`` and the dashboard live on the separate
admin listener (``guardrail.proxy.admin``), and every path sent here goes upstream like any other.

Errors reach the client in the format of its API (:func:`error_payload`; OpenAI's ``{"error":
{"message", "type", "param", "code"}}`` on paths guardrail does not inspect) and never as
tracebacks:

=======  ===========================  =====================================================
status   code                         when
=======  ===========================  =====================================================
400      ``invalid_request_target``   the target could leave the upstream (see upstream.py)
404      ``no_route``                 no configured route matches the path (see routes.py)
413      ``request_too_large``        body over ``max_request_bytes`` (see limits.py)
429      ``client_busy``              the client address has ``max_upstream_per_client``
                                      requests in flight (``Retry-After: 1``)
503      ``streams_busy``             streams hold their whole share of the upstream pool
                                      (``Retry-After: 1``)
503      ``requests_busy``            other requests hold their whole share of the pool
                                      (``Retry-After: 1``)
502      ``upstream_unavailable``     connection refused or reset, DNS failure
504      ``upstream_timeout``         no reply within the configured timeouts
500      ``internal_error``           a bug in guardrail (logged by type and stack, no text)
=======  ===========================  =====================================================

Upstream error statuses (4xx/5xx from the upstream itself) are not errors here: they pass
through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from email.utils import formatdate
import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from guardrail.formats.registry import error_body
from guardrail.guard.inspection import PolicyEngine, guardrail_headers
from guardrail.proxy.limits import Refused
from guardrail.observe.logs import Exchange, log_request, new_request_id, safe_stack
from guardrail.config.recording import recorder_for
from guardrail.errors import ConfigError, PolicyError
from guardrail.state import Clock, StateStore, open_store
from guardrail.state.link import StateLink
from guardrail.observe.record import Recorder
from guardrail.proxy.pipeline import Pipeline
from guardrail.policy.sources import PolicySource
from guardrail.config.policysets import PolicySets
from guardrail.config.routes import NoRoute
from guardrail.config.settings import Settings
from guardrail.proxy.upstream import RelayAborted, UnsafeTarget, build_client

if TYPE_CHECKING:
    from guardrail.judge.runner import JudgeRunner

__all__ = ["ProxyEndpoint", "build_app", "error_payload", "error_response"]


def error_payload(api: str | None, status: int, kind: str, code: str, message: str) -> object:
    """An error body in the format of the client's API (the registry's ``error_body``)."""
    return error_body(api, status, kind, code, message)


class ErrorResponse:
    """An error body in the API's format; after an upstream or internal failure on an
    inspected endpoint also marked not inspected (a refusal by a limit is not: nothing was
    sent upstream)."""

    def __init__(
        self,
        status: int,
        kind: str,
        code: str,
        message: str,
        ex: Exchange,
        retry_after: int | None = None,
        refused: bool = False,
    ) -> None:
        reason = "internal-error" if status == 500 else "upstream-error"
        payload = error_payload(ex.api, status, kind, code, message)
        self.status = status
        self.body = json.dumps(payload).encode("utf-8")
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode("ascii")),
            (b"date", formatdate(usegmt=True).encode("ascii")),
            (b"x-request-id", ex.request_id.encode("latin-1")),
        ]
        if retry_after is not None:
            self.headers.append((b"retry-after", str(retry_after).encode("ascii")))
        if ex.api != "passthrough" and not refused:
            ex.inspected, ex.reason = False, reason
            self.headers += guardrail_headers(False, reason=reason)
        self.ex = ex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ex.status = self.status
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def error_response(exc: BaseException, ex: Exchange) -> ErrorResponse:
    """The client-facing response for a request-time failure (see the module table)."""
    rid = ex.request_id
    if isinstance(exc, Refused):
        ex.error = exc.code
        return ErrorResponse(
            exc.status, exc.kind, exc.code, str(exc), ex, exc.retry_after, refused=True
        )
    if isinstance(exc, UnsafeTarget):
        ex.error = "unsafe_target"
        return ErrorResponse(400, "invalid_request_error", "invalid_request_target", f"{exc}.", ex)
    if isinstance(exc, NoRoute):
        ex.error = "no_route"
        message = "No route is configured for this path."
        return ErrorResponse(404, "invalid_request_error", "no_route", message, ex)
    if isinstance(exc, UpstreamError):
        ex.upstream_host, ex.upstream_cause = exc.host, exc.cause
    if isinstance(exc, UpstreamTimeout):
        ex.error = "upstream_timeout"
        message = f"The upstream API did not answer in time (guardrail request {rid})."
        return ErrorResponse(504, "upstream_error", "upstream_timeout", message, ex)
    if isinstance(exc, UpstreamUnavailable):
        ex.error = "upstream_unavailable"
        message = f"guardrail could not reach the upstream API (request {rid})."
        return ErrorResponse(502, "upstream_error", "upstream_unavailable", message, ex)
    if isinstance(exc, ClientDisconnect):
        ex.error = "client_disconnected"
        return ErrorResponse(
            400, "invalid_request_error", "client_disconnected", "Request body incomplete.", ex
        )
    ex.error, ex.error_stack = f"internal_{type(exc).__name__}", safe_stack(exc)
    message = f"guardrail hit an internal error (request {rid})."
    return ErrorResponse(500, "server_error", "internal_error", message, ex)


class ProxyEndpoint:
    """The catch-all ASGI endpoint: one Exchange per request, one log line when it ends.

    Guarantees: every request gets a response or, if the upstream body breaks after the response
    started, a dropped connection; no exception text or traceback is ever sent to the client.
    """

    def __init__(self, pipeline: Pipeline, recorder: Recorder) -> None:
        self.pipeline = pipeline
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path: str = scope.get("path", "")
        ex = Exchange(new_request_id(request.headers), request.method, path[:300])
        ex.route = self.pipeline.route_label(scope)  # the in-flight gauge: same label both ends
        tokens = structlog.contextvars.bind_contextvars(request_id=ex.request_id)
        self.recorder.started(ex.route)
        try:
            await self._serve(request, ex, send)
        finally:
            log_request(ex)
            self.recorder.finished(ex)
            structlog.contextvars.reset_contextvars(**tokens)

    async def _serve(self, request: Request, ex: Exchange, send: Send) -> None:
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response: ASGIApp = await self.pipeline.handle(request, ex)
            await response(request.scope, request.receive, tracked_send)
        except RelayAborted:
            raise
        except Exception as exc:  # noqa: BLE001 - the catch-all: no client ever sees a traceback
            if started:
                ex.error, ex.error_stack = f"internal_{type(exc).__name__}", safe_stack(exc)
                raise RelayAborted("response broken off after an internal error") from None
            await error_response(exc, ex)(request.scope, request.receive, send)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Last-resort handler (routing bugs): an OpenAI-format 500, never a traceback."""
    body = {
        "error": {
            "message": "guardrail hit an internal error.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    return Response(json.dumps(body), status_code=500, media_type="application/json")


def build_app(
    settings: Settings,
    policies: PolicyEngine,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    recorder: Recorder | None = None,
    route_policies: Mapping[PolicySource, PolicyEngine] | None = None,
    state_store: StateStore | None = None,
    clock: Clock | None = None,
    judge_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The proxy as an ASGI app. ``transport`` replaces the upstream transport (tests);
    ``recorder`` defaults to one built from ``settings`` (metrics, and audit to its sink);
    ``route_policies`` are the routes' own policy sets by source, already loaded (any missing
    one is loaded here: a set that does not load raises PolicyError). ``state_store`` replaces
    the configured state backend, ``clock`` the system clock, ``judge_transport`` the judges'
    HTTP transport (tests). A judge detector naming an endpoint the ``judges`` setting lacks is
    a PolicyError at start-up and refuses a reload."""
    recorder = recorder_for(settings) if recorder is None else recorder
    sets = _policy_sets(settings, policies, route_policies, recorder)
    client = build_client(settings, transport)
    store = state_store if state_store is not None else open_store(settings.state)
    link = StateLink(store, settings.state, clock)
    runner = _judge_runner(settings, judge_transport)
    _check_judges(sets, runner)
    pipeline = Pipeline(settings, client, sets, recorder, state=link, judges=runner)
    endpoint = ProxyEndpoint(pipeline, recorder)
    app = Starlette(
        debug=False,
        routes=[Route("/{path:path}", endpoint, name="proxy")],
        exception_handlers={Exception: _internal_error},
        lifespan=_lifespan(client, link, runner, recorder),
    )
    app.router.redirect_slashes = False
    app.router.default = endpoint  # targets that are not paths (absolute-form, '*') get a 400
    app.state.settings = settings
    app.state.policies = sets.main
    app.state.policy_sets = sets
    app.state.pipeline = pipeline
    app.state.client = client
    app.state.recorder = recorder
    app.state.state_store = store  # the admin listener's erase reaches the store requests use
    app.state.state_link = link
    app.state.judges = runner
    return app


def _policy_sets(
    settings: Settings,
    policies: PolicyEngine,
    route_policies: Mapping[PolicySource, PolicyEngine] | None,
    recorder: Recorder,
) -> PolicySets:
    """The policy sets in service (the main one and the routes'), each known to the recorder."""
    sets = PolicySets.for_routes(
        policies, settings.routes, route_policies, max_user_chars=settings.max_user_text_chars
    )
    for engine in sets.current():
        recorder.install(engine)
    return sets


def _check_judges(sets: PolicySets, runner: JudgeRunner | None) -> None:
    """Every judge a set in service reads has an endpoint, now and at each reload."""
    if runner is not None:
        sets.check = _judges_checked(runner)
    for engine in sets.current():
        _judges_checked(runner)(engine)


def _lifespan(
    client: httpx.AsyncClient, link: StateLink, runner: JudgeRunner | None, recorder: Recorder
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """At shutdown: the upstream client, the state link, the judges' client, then the recorder."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()
        await link.aclose()
        if runner is not None:
            await runner.aclose()
        recorder.close()

    return lifespan


def _judge_runner(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> JudgeRunner | None:
    """One judge client per process, when the ``judges`` setting names endpoints."""
    if not settings.judges:
        return None
    from guardrail.judge.runner import JudgeRunner

    return JudgeRunner(settings.judges, transport=transport)


def _judges_checked(runner: JudgeRunner | None) -> Callable[[PolicyEngine], None]:
    """A check that every judge detector of a set names a configured endpoint."""

    def check(engine: PolicyEngine) -> None:
        judges = tuple(getattr(engine, "judges", ()))
        if not judges:
            return
        if runner is None:
            names = ", ".join(sorted({j.endpoint for j in judges}))
            raise PolicyError(
                f"judge detectors need the `judges:` setting, which names no endpoint "
                f"(they ask: {names})",
                file=str(getattr(engine, "source", "")) or None,
            )
        try:
            runner.check(judges)
        except ConfigError as exc:
            raise PolicyError(str(exc), file=str(getattr(engine, "source", "")) or None) from None

    return check
