"""``GuardrailMiddleware``: the proxy's inspection inside your own Starlette or FastAPI app.

    app.add_middleware(GuardrailMiddleware, policies="policies/")

It guards the app's OWN chat responses, the way the proxy guards an upstream's: the same
recognition of chat endpoints, the same inspection (:mod:`guardrail.guard.inspection` for whole replies,
:class:`~guardrail.guard.stream.StreamGuard` for streams), the same annotation (``x-guardrail-*``
headers and the ``guardrail`` body object or stream event), the same metrics and audit events
(:class:`~guardrail.observe.record.Recorder`). Where the proxy says "upstream", read "the wrapped
app": its status, its time to answer and its failures feed the ``guardrail_upstream_*`` series.

When each stage runs and what it guarantees (per request, state in a
:class:`~guardrail.middleware.exchange.ChatExchange`):

1. Request line: a ``POST`` whose path is in ``paths`` (exact, case- and trailing-slash-
   insensitive) or, with ``detect``, a chat endpoint the proxy recognises
   (:func:`~guardrail.guard.inspection.detect_api`). Anything else (other routes, websockets, lifespan)
   goes to the app untouched: no buffering, no header, no metric.
2. Request body: read whole (up to ``max_inspect_bytes``) to learn the conversation, then
   replayed to the app message by message, exactly as received. A body that is not a chat
   request of that API (or is too large) leaves the response untouched but for
   ``x-guardrail-inspected: false`` and counts as not inspected.
3. ``http.response.start`` is held until the middleware knows what the body becomes:
   * a non-2xx status, a 204/205, or a stream of another media type (or compressed): sent at
     once, marked not inspected (``upstream-error``, ``not-json``, ``stream``);
   * a stream in the API's media type (``text/event-stream``): sent at once without
     ``Content-Length``/``Content-Encoding`` (the bytes change), with
     ``x-guardrail-inspected: true`` and ``x-guardrail-holdback``; then every body chunk goes
     through the stream guard as it arrives and what it releases goes out at once (never
     buffered whole, except in ``full`` holdback, by design);
   * anything else is read whole (up to ``max_inspect_bytes``; past that it is sent on as it
     is, ``too-large``), inspected, and sent with the final ``Content-Length``.
4. The end: the verdicts go to the metrics and the audit trail once, however the response ended.

Fail open: an exception in the engine sends the reply with its text unchanged, marked
``engine-error``. An exception in the app propagates untouched (the response start was held, so
Starlette's error handling can still answer 500). Nothing here logs message text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.middleware.asgi import header, send_plain
from guardrail.errors import ConfigError
from guardrail.guard import DEFAULT_MAX_HOLDBACK_CHARS, Holdback, check_holdback
from guardrail.guard.inspection import APIS, detect_api
from guardrail.middleware.exchange import ChatExchange, Options
from guardrail.observe import metrics as m
from guardrail.observe.audit import AuditConfig, Auditor
from guardrail.observe.record import Recorder
from guardrail.policy import PolicySet, load_policies

__all__ = ["DEFAULT_MAX_INSPECT_BYTES", "GuardrailMiddleware"]

DEFAULT_MAX_INSPECT_BYTES = 4 * 1024 * 1024
"""Largest request or reply body read for inspection (the proxy's default)."""


def _norm(path: str) -> str:
    """A path as the ``paths`` map compares it: decoded, lower case, no empty segments."""
    return "/" + "/".join(s for s in unquote(path).lower().replace("\\", "/").split("/") if s)


class GuardrailMiddleware:
    """Guard a Starlette/FastAPI app's own chat responses (see the module docstring).

    Options (all keyword-only; bad values raise :class:`~guardrail.errors.ConfigError` or, for
    a policy set that does not load, :class:`~guardrail.errors.PolicyError`, when the app builds
    its middleware stack):

    ``policies``: a loaded :class:`~guardrail.policy.PolicySet`, or a folder/file to load, or
    ``"default"`` (the bundled pack), or a list of them applied in order.
    ``paths``: ``{path: api}`` for chat routes whose path the proxy would not recognise, e.g.
    ``{"/chat": "openai.chat"}``; API names are ``openai.chat``, ``openai.responses``,
    ``anthropic.messages``, ``ollama.chat``. ``detect``: also recognise the standard chat paths
    (``.../chat/completions``, ``.../responses``, ``.../messages``, ``/api/chat``); default True.
    ``locale``: locale of the crisis resources (default: the policy set's);
    ``locale_header``: request header that overrides it per request (None: none).
    ``holdback``, ``max_holdback_chars``: how streams are held back (the proxy's options).
    ``max_inspect_bytes``: largest body read for inspection.
    ``max_user_text_chars``: characters of each user message the detectors read, its last ones
    (set on the policy set; None: the policy set's, by default 16384).
    ``route``: the ``route`` label of the metrics and audit events (default ``/``).
    ``audit``: ``"stdout"`` (default, like the proxy), ``"off"``, or an
    :class:`~guardrail.observe.audit.AuditConfig` (file sink, key, excerpts).
    ``conversation_header``: request header with a stable conversation id for the audit hash.
    ``metrics_path``: answer ``GET <metrics_path>`` with guardrail's Prometheus metrics (None:
    no such route; scrape ``guardrail.observe.metrics.REGISTRY`` yourself).
    ``log_requests``: write guardrail's canonical ``request`` log line (metadata only) per
    guarded request. ``recorder``: share one recorder between several middlewares.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: PolicySet | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        paths: Mapping[str, str] | None = None,
        detect: bool = True,
        locale: str | None = None,
        locale_header: str | None = "x-guardrail-locale",
        holdback: Holdback = "sentence",
        max_holdback_chars: int = DEFAULT_MAX_HOLDBACK_CHARS,
        max_inspect_bytes: int = DEFAULT_MAX_INSPECT_BYTES,
        max_user_text_chars: int | None = None,
        route: str = "/",
        audit: AuditConfig | Literal["stdout", "off"] = "stdout",
        conversation_header: str | None = None,
        metrics_path: str | None = None,
        log_requests: bool = False,
        recorder: Recorder | None = None,
    ) -> None:
        self.app = app
        try:
            check_holdback(holdback, max_holdback_chars)
        except ValueError as exc:
            raise ConfigError(f"GuardrailMiddleware: {exc}") from None
        if max_inspect_bytes < 1:
            raise ConfigError("GuardrailMiddleware: max_inspect_bytes must be at least 1")
        self.paths = _paths(paths or {})
        self.detect = detect
        self.policies = (
            policies if isinstance(policies, PolicySet) else load_policies(
                Path(policies)
                if isinstance(policies, (str, os.PathLike))
                else [Path(p) for p in policies]
            )
        )
        if max_user_text_chars is not None:
            try:
                self.policies.max_user_chars = max_user_text_chars
            except ValueError as exc:
                raise ConfigError(f"GuardrailMiddleware: {exc}") from None
        self.metrics_path = metrics_path
        if recorder is None:
            recorder = Recorder(
                [(route, api) for api in APIS], _auditor(audit), conversation_header
            )
        recorder.install(self.policies)
        self.options = Options(
            policies=self.policies,
            recorder=recorder,
            route=route,
            locale=self.policies.resources.resolve(locale),
            locale_header=locale_header.lower() if locale_header else None,
            holdback=holdback,
            max_holdback_chars=max_holdback_chars,
            max_inspect_bytes=max_inspect_bytes,
            log_requests=log_requests,
        )

    def api_of(self, scope: Scope) -> str | None:
        """The API of the chat route ``scope`` asks for, or None (not guarded)."""
        method: str = scope.get("method", "")
        if method.upper() != "POST":
            return None
        path: str = scope.get("path", "")
        api = self.paths.get(_norm(path)) if self.paths else None
        if api is None and self.detect:
            raw: bytes = scope.get("raw_path") or path.encode("utf-8")
            api = detect_api(method, raw)
        return api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics_path is not None and scope.get("path") == self.metrics_path:
            await _metrics(scope, send)
            return
        api = self.api_of(scope)
        if api is None:
            await self.app(scope, receive, send)
            return
        await ChatExchange(self.options, scope, api, send).run(self.app, receive)


def _paths(paths: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path, api in paths.items():
        if api not in APIS:
            raise ConfigError(
                f"GuardrailMiddleware: paths[{path!r}]: unknown API {api!r} "
                f"(one of {', '.join(APIS)})"
            )
        out[_norm(path)] = api
    return out


def _auditor(audit: AuditConfig | str) -> Auditor | None:
    if isinstance(audit, AuditConfig):
        return Auditor(audit) if audit.sink != "off" else None
    if audit == "off":
        return None
    if audit == "stdout":
        return Auditor(AuditConfig(sink="stdout"))
    raise ConfigError("GuardrailMiddleware: audit must be 'stdout', 'off' or an AuditConfig")


async def _metrics(scope: Scope, send: Send) -> None:
    """``GET metrics_path``: the Prometheus exposition of guardrail's metrics."""
    if scope.get("method", "").upper() not in ("GET", "HEAD"):
        await send_plain(send, 405, b"method not allowed\n", b"text/plain; charset=utf-8")
        return
    accept = header(scope.get("headers", ()), b"accept")
    body, content_type = m.render(accept)
    await send_plain(send, 200, body, content_type.encode("latin-1"))
