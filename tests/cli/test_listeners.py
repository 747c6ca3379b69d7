"""The two listeners of ``guardrail serve``: admin endpoints never on the proxy port, never
forwarded upstream; token, SIGHUP, watch and the admin reload on a real process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.kit.clients import exchange, request
from tests.kit.metrics import parse
from tests.kit.serve import BROKEN_POLICY, Served, guardrail_serve, policy_copy
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import MOCK_HEADER, mock_upstream
from tests.kit.wire import chat_request


pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TOKEN = "listener-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ThreadedServer(mock_upstream) as server:
        yield server.url


@pytest.fixture
def served(tmp_path: Path, upstream: str) -> Iterator[tuple[Served, Path]]:
    folder = policy_copy(tmp_path)
    env = {"GUARDRAIL_ADMIN_TOKEN": TOKEN, "GUARDRAIL_WATCH_INTERVAL": "0.2"}
    with guardrail_serve(tmp_path, upstream, folder, "--watch-policies", env=env) as proc:
        yield proc, folder


def raw(url: str, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Send a request line exactly as written (no client normalises it) and read the reply."""
    return exchange(url, request(method, target, host=urlsplit(url).netloc))


CRAFTED = [
    ("GET", "/metrics"),
    ("POST", "/-/reload"),
    ("GET", "/-/stats"),
    ("GET", "/-/healthy"),
    ("GET", "/dashboard"),
    ("GET", "/-/dashboard"),
    ("GET", "//metrics"),
    ("GET", "/%2e%2e/metrics"),
    ("GET", "/v1/../metrics"),
    ("GET", "/./metrics"),
    ("GET", "/%2fmetrics"),
    ("GET", "/v1/..%2f..%2fmetrics"),
    ("POST", "/v1/%2e%2e/-/reload"),
    ("GET", "/metrics?x=1"),
    ("GET", "/METRICS"),
]


def test_admin_paths_on_the_proxy_port_go_upstream_or_are_refused(
    served: tuple[Served, Path],
) -> None:
    proc, _ = served
    admin_port = urlsplit(proc.admin).port
    crafted = [*CRAFTED, ("GET", f"http://127.0.0.1:{admin_port}/metrics"), ("OPTIONS", "*")]
    for method, target in crafted:
        status, headers, body = raw(proc.proxy, target, method)
        text = body.decode("utf-8", "replace")
        assert "guardrail_" not in text and "<html" not in text.lower(), target
        assert headers.get(MOCK_HEADER) == "1" or 400 <= status < 500, (target, status)
        assert status != 401, target  # the admin token check never ran
    # nothing reached the admin app: no reload, no refused token
    metrics = httpx.get(f"{proc.admin}/metrics", headers=AUTH).text
    samples = parse(metrics)
    assert all(v == 0 for _, v in samples["guardrail_policy_reloads_total"])
    assert samples["guardrail_admin_unauthorized_total"] == [({}, 0.0)]


def test_admin_listener_needs_the_token_and_serves_nothing_upstream(
    served: tuple[Served, Path],
) -> None:
    proc, _ = served
    assert httpx.get(f"{proc.admin}/metrics").status_code == 401
    assert httpx.get(f"{proc.admin}/metrics", headers=AUTH).status_code == 200
    assert httpx.get(f"{proc.admin}/-/ready").status_code == 200
    for target in ("/v1/chat/completions", "/v1/models", "/%2e%2e/v1/models"):
        status, headers, _ = raw(proc.admin, target)
        assert MOCK_HEADER not in headers and status in (401, 404), target
    res = httpx.post(f"{proc.admin}/v1/chat/completions", json=chat_request("hi"), headers=AUTH)
    assert res.status_code == 404 and MOCK_HEADER not in res.headers


def wait_for(condition: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_sighup_watch_and_admin_reload_on_a_running_proxy(served: tuple[Served, Path]) -> None:
    proc, folder = served
    crisis = chat_request("I want to end it all. reply: I will always be here for you. Take care.")

    def reply_text() -> str:
        res = httpx.post(f"{proc.proxy}/v1/chat/completions", json=crisis, timeout=10)
        return str(res.json()["choices"][0]["message"]["content"])

    assert reply_text().startswith("If you are thinking about ending your life, Test Crisis Line")
    # a bad set: SIGHUP is refused, the log names file, line and policy id, the proxy keeps the set
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    os.kill(proc.proc.pid, signal.SIGHUP)
    wait_for(lambda: any(e["trigger"] == "signal" for e in proc.events("policy_reload_failed")))
    [failed] = [e for e in proc.events("policy_reload_failed") if e["trigger"] == "signal"]
    assert failed["file"].endswith("zz_broken.yaml") and failed["line"] == 7
    assert failed["policy_id"] == "ops.broken" and failed["level"] == "error"
    assert reply_text().startswith("If you are thinking")
    refused = httpx.post(f"{proc.admin}/-/reload", headers=AUTH)
    assert refused.status_code == 422 and refused.json()["error"]["line"] == 7
    # the watcher saw the change too, and refused it once
    wait_for(lambda: any(e["trigger"] == "watch" for e in proc.events("policy_reload_failed")))
    # a good change: the watcher installs it
    (folder / "zz_broken.yaml").unlink()
    ops = folder / "ops.yaml"
    ops.write_text(ops.read_text().replace("{crisis_line} is there", "{crisis_line} helps"))
    wait_for(lambda: any(e["trigger"] == "watch" for e in proc.events("policy_reload")))
    assert "Test Crisis Line helps" in reply_text()
    os.kill(proc.proc.pid, signal.SIGHUP)
    wait_for(lambda: any(e["trigger"] == "signal" for e in proc.events("policy_reload")))
    assert proc.proc.poll() is None
