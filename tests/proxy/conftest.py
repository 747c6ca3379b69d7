"""Fixtures for the proxy tests; helpers are in proxykit.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from proxykit import FIXTURES, UPSTREAM, Proxy, Upstream

from guardrail.proxy.app import build_app
from guardrail.policy import PolicySet, load_policies
from guardrail.config.settings import Settings


@pytest.fixture(scope="session")
def fixture_policies() -> PolicySet:
    return load_policies(FIXTURES / "policies")


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def settings() -> Settings:
    return Settings(upstream=UPSTREAM, policies=FIXTURES / "policies")


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
