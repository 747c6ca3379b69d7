"""One stack per test module: the mock upstreams and the proxy, all on real loopback sockets.

Routes of the proxy under test (they exercise the ``routes:`` configuration too):

======================  =================  =============================================
prefix                  upstream           guard
======================  =================  =============================================
``/``                   MockAPI            fixture policies, holdback ``sentence``
``/full``, ``/none``    MockAPI            holdback ``full`` / ``none``
``/strict``             MockAPI            its own policy set (kit ``stack/strict``), en-GB
``/raw``                RawUpstream        stall_timeout 0.5 s
======================  =================  =============================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.config.routes import parse_routes
from guardrail.config.settings import Settings

from tests.kit.paths import STACK_FIXTURES
from tests.kit.policysets import STACK_POLICIES
from tests.kit.servers import Background
from tests.kit.upstreams import MockAPI, RawUpstream


@dataclass
class Stack:
    """The running servers of one test module."""

    background: Background
    proxy: str
    mock: MockAPI
    mock_url: str
    raw: RawUpstream
    raw_url: str
    app: object


def stack_settings(mock_url: str, raw_url: str, **top: object) -> Settings:
    routes = parse_routes([
        {"prefix": "/full", "holdback": "full"},
        {"prefix": "/none", "holdback": "none"},
        {"prefix": "/strict", "policies": str(STACK_FIXTURES / "strict"), "locale": "en-GB"},
        {"prefix": "/raw", "upstream": raw_url, "stall_timeout": 0.5},
    ])
    return Settings(
        upstream=mock_url,
        policies=STACK_FIXTURES / "policies",
        route_specs=routes,
        audit=AuditConfig(sink="off"),
        **top,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    background = Background()
    try:
        mock, raw = MockAPI(), RawUpstream()
        mock_url = background.serve_asgi(mock)
        raw_url = background.serve_raw(raw)
        app = build_app(stack_settings(mock_url, raw_url), STACK_POLICIES)
        proxy = background.serve_asgi(app)
        yield Stack(background, proxy, mock, mock_url, raw, raw_url, app)
    finally:
        background.close()
