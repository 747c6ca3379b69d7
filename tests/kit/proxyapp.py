"""The proxy app in-process, for tests that need no socket: called through
``httpx.ASGITransport``, its upstream an ``httpx.MockTransport`` behind the one seam
(``build_app(..., transport=...)``). Mock replies use ``stream=`` bodies, as a real transport
delivers them (``httpx.Response(content=...)`` would be pre-read).

The fixtures (``fixture_policies``, ``upstream``, ``settings``, ``proxy``) are imported by the
conftest of each folder that drives the proxy this way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from guardrail.config.settings import Settings
from guardrail.policy import PolicySet, load_policies
from guardrail.proxy.app import build_app
from guardrail.proxy.pipeline import PolicyEngine

from .paths import PROXY_FIXTURES
from .wire import completion

UPSTREAM = "https://upstream.test"
SENTINEL = "SENTINEL-7f3a9c"


def reply(
    status: int = 200,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    """A streamed mock upstream response (JSON body unless ``raw`` is given)."""
    data = raw if raw is not None else json.dumps(body).encode()
    hdrs = {"content-type": "application/json"} if raw is None else {}
    hdrs.update(headers or {})
    return httpx.Response(status, headers=hdrs, stream=httpx.ByteStream(data))


@dataclass
class Upstream:
    """A scripted upstream: records every request and answers with ``handler``."""

    handler: Callable[[httpx.Request], httpx.Response] = field(
        default=lambda request: reply(body=completion("Hello."))
    )
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@dataclass
class Proxy:
    """The proxy app, a client calling it in-process, and its scripted upstream."""

    app: Starlette
    client: httpx.AsyncClient
    upstream: Upstream


@contextlib.asynccontextmanager
async def open_proxy(
    settings: Settings, policies: PolicyEngine, upstream: Upstream
) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling the proxy app in-process, the app's upstream being ``upstream``."""
    app = build_app(settings, policies, transport=httpx.MockTransport(upstream))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        yield client
    await app.state.client.aclose()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def fixture_policies() -> PolicySet:
    return load_policies(PROXY_FIXTURES / "policies")


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def settings() -> Settings:
    return Settings(upstream=UPSTREAM, policies=PROXY_FIXTURES / "policies")


@pytest.fixture
async def proxy(
    settings: Settings, fixture_policies: PolicySet, upstream: Upstream
) -> AsyncIterator[Proxy]:
    app = build_app(settings, fixture_policies, transport=httpx.MockTransport(upstream))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        yield Proxy(app, client, upstream)
    await app.state.client.aclose()
