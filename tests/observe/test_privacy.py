"""No message text and no credential in any output: logs, audit, metrics, admin answers.

A sentinel string rides in user and system messages, assistant replies (buffered and streamed),
upstream error bodies, credential headers (Authorization, api-key, x-api-key, cookie) and a
policy file that fails to load; it must appear nowhere guardrail writes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig, Auditor
from guardrail.observe.logs import configure_logging
from guardrail.observe.record import Recorder
from guardrail.policy import load_policies
from guardrail.config.settings import Settings

from tests.kit.metrics import exposition
from tests.kit.paths import OPS_POLICIES
from tests.kit.serve import (
    BROKEN_POLICY,
    SENTINEL,
    Served,
    guardrail_serve,
    policy_copy,
    run_guardrail,
)
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream
from tests.kit.wire import chat_request


SECRET_HEADERS = {
    "authorization": f"Bearer sk-{SENTINEL}",
    "api-key": SENTINEL,
    "x-api-key": f"key-{SENTINEL}",
    "cookie": f"session={SENTINEL}",
}


def requests_with_sentinel(proxy: str) -> list[httpx.Response]:
    """Every kind of request, each carrying the sentinel in text and credentials."""
    sent = []
    system = [{"role": "system", "content": SENTINEL}, {"role": "user", "content": "hi"}]
    with httpx.Client(base_url=proxy, headers=SECRET_HEADERS, timeout=10) as client:
        url = "/v1/chat/completions"
        for body in (
            chat_request(f"I want to end it all {SENTINEL}. reply: I will always be here for you."),
            chat_request(f"{SENTINEL} reply: You are absolutely right. {SENTINEL} forbidden marker"),
            chat_request(f"reply: Fine. {SENTINEL}", stream=True),
            chat_request(f"upstream-fail {SENTINEL}"),
            {"model": "ops-model", "messages": system},
        ):
            sent.append(client.post(url, json=body))
        sent.append(client.post(url, content=f'{{"broken json {SENTINEL}'.encode()))
        sent.append(client.get("/v1/models"))
    return sent


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ThreadedServer(mock_upstream) as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.subprocess
def test_sentinel_never_reaches_any_output_of_a_running_proxy(
    tmp_path: Path, upstream: str
) -> None:
    folder = policy_copy(tmp_path)
    token = f"admin-{SENTINEL}"
    env = {"GUARDRAIL_ADMIN_TOKEN": token}
    with guardrail_serve(tmp_path, upstream, folder, "--log-level", "debug", env=env) as proc:
        responses = requests_with_sentinel(proc.proxy)
        assert [r.status_code for r in responses] == [200, 200, 200, 500, 200, 400, 200]
        assert SENTINEL in responses[3].text  # upstream error bodies reach the client as they are
        assert SENTINEL in responses[5].text
        (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
        os.kill(proc.proc.pid, signal.SIGHUP)
        auth = {"authorization": f"Bearer {token}"}
        reload = httpx.post(f"{proc.admin}/-/reload", headers=auth)
        assert reload.status_code == 422
        denied = httpx.get(f"{proc.admin}/metrics", headers={"authorization": "Bearer nope"})
        metrics = httpx.get(f"{proc.admin}/metrics", headers=auth).text
        stats = httpx.get(f"{proc.admin}/-/stats", headers=auth).text
        deadline = time.monotonic() + 10
        while len(proc.events("policy_reload_failed")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        _assert_clean(proc, reload.text, denied.text, metrics, stats)


def _assert_clean(proc: Served, *answers: str) -> None:
    output = proc.output()
    assert len(proc.events("request")) == 7
    assert len(proc.events("policy_reload_failed")) == 2
    audit = proc.audit()
    assert {e["policy"] for e in audit} >= {"ops.crisis", "ops.dependency", "ops.block"}
    for where, text in (("output", output), *(("admin answer", a) for a in answers)):
        assert SENTINEL not in text, where
        assert "end it all" not in text and "always be here" not in text, where


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_policy_load_error_at_start_names_the_place_not_the_content(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    done = run_guardrail(
        "serve", "--upstream", "http://127.0.0.1:9", "--port", "0", "--admin-port", "0",
        "--policies", str(folder),
    )  # fmt: skip
    assert done.returncode == 2
    assert "zz_broken.yaml:7: policy 'ops.broken'" in done.stderr
    assert SENTINEL not in done.stdout + done.stderr


@pytest.mark.anyio
async def test_in_process_log_records_and_audit_stay_clean(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream, audit = io.StringIO(), io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        ps = load_policies(OPS_POLICIES)
        recorder = Recorder([("/", "openai.chat")], Auditor(AuditConfig(), stream=audit))
        transport = httpx.ASGITransport(app=mock_upstream)
        app = build_app(Settings(upstream="http://up.test"), ps, transport, recorder=recorder)
        with capture_logs() as records, caplog.at_level(logging.DEBUG):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
            ) as client:
                for body in (
                    chat_request(f"I want to end it all {SENTINEL}. reply: I will always be here for you."),
                    chat_request(f"upstream-fail {SENTINEL}"),
                ):
                    await client.post("/v1/chat/completions", json=body, headers=SECRET_HEADERS)
            await app.state.client.aclose()
    finally:
        configure_logging("info", "auto")
    assert [r["event"] for r in records].count("request") == 2
    everything = [json.dumps(records, default=str), caplog.text, stream.getvalue()]
    everything += [audit.getvalue(), exposition()]
    assert json.loads(audit.getvalue().splitlines()[0])["policy"] == "ops.crisis"
    for text in everything:
        assert SENTINEL not in text
