"""The admin listener: metrics, reload, health and the built-in dashboard, on their own port.

``guardrail serve`` serves this app on ``admin_host:admin_port`` (default: the proxy's host, port
9787), apart from the proxy listener: the proxy's app has no admin route at all and forwards
every path it receives upstream, so no path sent to the proxy port (``/metrics``,
``/-/reload``, ``/%2e%2e/metrics``, ``//metrics``, ...) can reach an admin endpoint, and no
admin request is ever forwarded upstream: this app holds no upstream client.

=================  ======  ===========================================================
path               method  what
=================  ======  ===========================================================
``/metrics``       GET     Prometheus exposition (text, or OpenMetrics on request)
``/-/reload``      POST    reload the policies now; 200 with the new digest, or 422 with
                           the refused set's file, line, policy id and message
``/-/stats``       GET     the dashboard's figures as JSON (``guardrail.observe.stats``)
``/dashboard``     GET     the built-in dashboard page (also ``/-/dashboard``)
``/-/healthy``     GET     200 while the process answers (liveness)
``/-/ready``       GET     200 once the proxy listener serves (every policy set is loaded before
                           it starts; with ``--workers N``, once every worker does), 503 before
                           that and while draining (readiness)
``/-/state/users/  DELETE  erase one user's state (``guardrail.state``): the raw user id, as
{user}``                   sent in requests (percent-encoded), is hashed like theirs;
                           200 ``{"erased": true|false}``, 503 when the store is unreachable
=================  ======  ===========================================================

With ``admin_token`` set (``GUARDRAIL_ADMIN_TOKEN``), every endpoint but ``/-/healthy``,
``/-/ready`` and the dashboard page itself requires ``Authorization: Bearer <token>``, compared in
constant time; the page holds no data and asks for the token, which its script then sends with
each ``/-/stats`` call (it can also be given in the URL fragment, ``/dashboard#token=...``,
which browsers never send to a server). Without a token anyone who can reach the port may
reload the policies: bind the admin listener to loopback or a private interface, or set one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.observe import metrics
from guardrail.observe.dashboard import PAGE, PAGE_CSP
from guardrail.observe.stats import StatsHistory
from guardrail.proxy.pipeline import PolicyHolder
from guardrail.policy import PolicySet
from guardrail.proxy.reload import Reloads
from guardrail.state import StateUnavailable

__all__ = ["OPEN_PATHS", "Erases", "RequireToken", "build_admin_app"]

OPEN_PATHS = frozenset({"/-/healthy", "/-/ready", "/dashboard", "/-/dashboard"})
"""Paths served without the admin token: they reveal nothing."""
_SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class Erases(Protocol):
    """What ``DELETE /-/state/users/{user}`` needs: ``guardrail.state.StateAccess`` (one store),
    or the supervisor's fan-out to every worker's own store (``guardrail serve --workers N``)."""

    async def erase(self, raw_user: str) -> bool: ...


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode("utf-8"),
        status_code=status,
        media_type="application/json",
        headers={**_SECURITY_HEADERS, **(headers or {})},
    )


class RequireToken:
    """Refuse requests without ``Authorization: Bearer <token>`` (401), except ``open_paths``."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.expected = token.encode("utf-8")
        self.open_paths = open_paths

    def authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, offered = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    offered.strip(), self.expected
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        if not self.authorized(scope):
            metrics.ADMIN_UNAUTHORIZED.inc()
            body = {"error": {"code": "unauthorized", "message": "admin token required"}}
            challenge = {"www-authenticate": 'Bearer realm="guardrail-admin"'}
            await _json(body, 401, challenge)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _Endpoints:
    """The admin endpoints, over what they read: the policy set in service, the reloader, the
    proxy's readiness, the dashboard's history and the state store."""

    def __init__(
        self,
        holder: PolicyHolder,
        reloader: Reloads | None,
        ready: Callable[[], bool],
        draining: Callable[[], bool],
        history: StatsHistory,
        state: Erases | None,
    ) -> None:
        self.holder, self.reloader, self.state = holder, reloader, state
        self.ready, self.draining, self.history = ready, draining, history

    async def metrics(self, request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={**_SECURITY_HEADERS, "content-type": content_type})

    async def reload(self, request: Request) -> Response:
        if self.reloader is None:
            return _json({"status": "unavailable"}, 503)
        result = await self.reloader.areload("admin")
        return _json(result.to_dict(), 200 if result.ok else 422)

    async def stats(self, request: Request) -> Response:
        current = self.holder.current
        policies = [
            {
                "id": p.id,
                "category": p.category,
                "mode": p.mode,
                "severity": p.severity,
                "action": p.strongest_action,
            }
            for p in (current.policies if isinstance(current, PolicySet) else ())
        ]
        document = await anyio.to_thread.run_sync(self.history.stats, policies)
        document["policy_digest"] = current.digest
        return _json(document)

    async def dashboard(self, request: Request) -> Response:
        headers = {
            **_SECURITY_HEADERS,
            "content-security-policy": PAGE_CSP,
            "x-frame-options": "DENY",
        }
        return Response(PAGE, media_type="text/html; charset=utf-8", headers=headers)

    async def healthy(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready_state(self, request: Request) -> Response:
        if self.draining():  # SIGTERM: let the load balancer stop sending while work ends
            return _json({"status": "draining"}, 503)
        ok = self.ready()
        return _json({"status": "ready" if ok else "starting"}, 200 if ok else 503)

    async def erase_user(self, request: Request) -> Response:
        if self.state is None:
            return _json({"status": "unavailable", "message": "no state store"}, 503)
        raw: str = request.path_params["user"]
        if not raw.strip():
            body = {"error": {"code": "bad_user", "message": "the user id is empty"}}
            return _json(body, 400)
        try:
            erased = await self.state.erase(raw)
        except StateUnavailable as exc:
            body = {"error": {"code": "state_unavailable", "message": exc.cause}}
            return _json(body, 503)
        return _json({"erased": erased})

    def routes(self) -> list[Route]:
        return [
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/-/reload", self.reload, methods=["POST"]),
            Route("/-/stats", self.stats, methods=["GET"]),
            Route("/dashboard", self.dashboard, methods=["GET"]),
            Route("/-/dashboard", self.dashboard, methods=["GET"]),
            Route("/-/healthy", self.healthy, methods=["GET"]),
            Route("/-/ready", self.ready_state, methods=["GET"]),
            Route("/-/state/users/{user:path}", self.erase_user, methods=["DELETE"]),
        ]


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    body = {"error": {"code": "not_found", "message": "no such admin endpoint"}}
    await _json(body, 404)(scope, receive, send)


def _sampling(history: StatsHistory, every: float) -> Any:
    """The admin app's lifespan: sample the metrics every ``every`` seconds, so the dashboard's
    windows fill in without a page open."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sampler() -> None:
            while True:
                await anyio.to_thread.run_sync(history.sample)
                await anyio.sleep(every)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sampler)
            yield
            tasks.cancel_scope.cancel()

    return lifespan


def build_admin_app(
    holder: PolicyHolder,
    reloader: Reloads | None = None,
    *,
    token: str | None = None,
    ready: Callable[[], bool] = lambda: True,
    draining: Callable[[], bool] = lambda: False,
    history: StatsHistory | None = None,
    sample_every: float = 5.0,
    state: Erases | None = None,
) -> ASGIApp:
    """The admin ASGI app. ``reloader`` None: ``/-/reload`` answers 503 (reload not available).

    ``ready`` tells whether the proxy listener serves, ``draining`` whether it is finishing its
    work after SIGTERM (both read by ``/-/ready``); the lifespan samples the metrics every
    ``sample_every`` seconds so the dashboard's windows fill in without a page open.
    ``state``: the state store that ``DELETE /-/state/users/{user}`` erases from (None: 503).
    """
    history = history if history is not None else StatsHistory()
    endpoints = _Endpoints(holder, reloader, ready, draining, history, state)
    app = Starlette(routes=endpoints.routes(), lifespan=_sampling(history, sample_every))
    app.router.redirect_slashes = False
    app.router.default = _not_found
    return app if token is None else RequireToken(app, token)
