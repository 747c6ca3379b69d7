"""The admin app: endpoints, bearer token, and nothing that leaks or forwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from guardrail.proxy.admin import build_admin_app
from guardrail.observe.dashboard import PAGE
from guardrail.observe.record import Recorder
from guardrail.policy import load_policies
from guardrail.proxy.reload import PolicyHolder, Reloader

from tests.kit.metrics import parse, value
from tests.kit.serve import BROKEN_POLICY, policy_copy


TOKEN = "admin-token-for-tests-1234"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return policy_copy(tmp_path)


async def client_for(folder: Path, token: str | None = None) -> httpx.AsyncClient:
    ps = load_policies(folder)
    holder = PolicyHolder(ps)
    recorder = Recorder([("/", "openai.chat")])
    recorder.install(ps)
    app = build_admin_app(
        holder, Reloader(holder, folder, on_install=recorder.install), token=token
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin.test")


@pytest.fixture
async def admin(folder: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(folder) as client:
        yield client


@pytest.fixture
async def guarded(folder: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(folder, TOKEN) as client:
        yield client


@pytest.mark.slow
@pytest.mark.anyio
async def test_metrics_endpoint_serves_the_exposition(admin: httpx.AsyncClient) -> None:
    res = await admin.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "guardrail_policy_hits_total" in parse(res.text)
    om = await admin.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


@pytest.mark.anyio
async def test_reload_endpoint_reports_success_and_refusal(
    admin: httpx.AsyncClient, folder: Path
) -> None:
    assert (await admin.get("/-/reload")).status_code == 405
    ok = await admin.post("/-/reload")
    assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["policies"] == 4
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    refused = await admin.post("/-/reload")
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["file"].endswith("zz_broken.yaml") and error["line"] == 7
    assert error["policy_id"] == "ops.broken"
    assert refused.json()["digest"] == ok.json()["digest"]  # the last good set still serves


@pytest.mark.anyio
async def test_health_ready_stats_and_unknown_paths(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/-/healthy")).json() == {"status": "ok"}
    assert (await admin.get("/-/ready")).status_code == 200
    stats = (await admin.get("/-/stats")).json()
    assert {p["id"] for p in stats["policies"]} == {
        "ops.crisis",
        "ops.dependency",
        "ops.agree_shadow",
        "ops.block",
    }
    assert {"counts", "hits", "hits_by_policy", "hits_by_category", "overhead_seconds"} <= set(
        stats["totals"]
    )
    for path in ("/", "/v1/chat/completions", "/metrics/", "/-/reload/x", "/%2e%2e/metrics"):
        res = await admin.get(path)
        assert res.status_code == 404, path
        assert res.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_dashboard_page_is_self_contained(admin: httpx.AsyncClient) -> None:
    for path in ("/dashboard", "/-/dashboard"):
        res = await admin.get(path)
        assert res.status_code == 200 and res.text == PAGE
        csp = res.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
    lowered = PAGE.lower()
    assert "http://" not in lowered and "https://" not in lowered and "src=" not in lowered
    assert "innerhtml" not in lowered


@pytest.mark.slow
@pytest.mark.anyio
async def test_token_is_required_everywhere_but_health_and_the_page(
    guarded: httpx.AsyncClient,
) -> None:
    before = value("guardrail_admin_unauthorized_total")
    for method, path in (
        ("GET", "/metrics"),
        ("POST", "/-/reload"),
        ("GET", "/-/stats"),
        ("GET", "/nope"),
    ):
        for headers in (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": TOKEN},
            {"authorization": f"Basic {TOKEN}"},
        ):
            res = await guarded.request(method, path, headers=headers)
            assert res.status_code == 401, (path, headers)
            assert res.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in res.text
    assert value("guardrail_admin_unauthorized_total") == before + 16
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert (await guarded.get("/metrics", headers=auth)).status_code == 200
    assert (await guarded.get("/metrics", headers={"authorization": f"bearer {TOKEN}"})).is_success
    assert (await guarded.post("/-/reload", headers=auth)).status_code == 200
    for path in ("/-/healthy", "/-/ready", "/dashboard", "/-/dashboard"):
        assert (await guarded.get(path)).status_code == 200


@pytest.mark.anyio
async def test_reload_response_never_echoes_the_token(guarded: httpx.AsyncClient) -> None:
    res = await guarded.post("/-/reload", headers={"authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in json.dumps(res.json())
