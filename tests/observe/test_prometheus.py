"""deploy/ proven against the real tools: promtool checks and unit-tests the rules, and a real
Prometheus scraping a real ``guardrail serve`` after real traffic answers every panel query of
the Grafana dashboard.

Needs Debian's ``prometheus`` package (``/usr/bin/prometheus`` and ``/usr/bin/promtool``).
Without it these tests skip, except under CI (``CI`` set), where they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.paths import ROOT
from tests.kit.serve import guardrail_serve, policy_copy, stop
from tests.kit.servers import ThreadedServer, free_port
from tests.kit.upstreams import mock_upstream

from .observekit import drive_traffic

pytestmark = pytest.mark.subprocess

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
TOKEN = "prometheus-scrape-token-42"
RATE_INTERVAL = "30s"
RANGE = "5m"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} not installed (Debian package 'prometheus')"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return found


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    promtool = binary("promtool")
    rules = run(promtool, "check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    config = run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.slow
def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    promtool = binary("promtool")
    result = run(promtool, "test", "rules", "rules_test.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL) for every target of every panel, variables filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$route", ".*")
            expr = expr.replace("$__range", RANGE)
            out.append((panel["title"], target.get("legendFormat", ""), expr))
    return out


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        res = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        document = res.json()
        assert document["status"] == "success", (expr, document)
        result: list[dict[str, Any]] = document["data"]["result"]
        return result


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[Prometheus]:
    prometheus = binary("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "guardrail",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials": TOKEN},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "prometheus.log").read_text())
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        stop(proc, timeout=20)
        log.close()


def wait_until(check: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.25)


MUST_BE_POSITIVE = {
    "Request rate by outcome",
    "Policy hit rate by policy",
    "Hit rate by category",
    "Enforce vs shadow hits",
    "Crisis resources added",
    "Replies rewritten and blocked",
    "Replies not inspected by reason",
    "Upstream errors by reason",
    "Policy reload failures",
    "Policies loaded",
    "Crisis referrals by kind",
    "Crisis referrals in range by locale",
}
EMPTY_WITHOUT_A_STATE_STORE = {"State store up"}
"""Panels of a series that exists only once a state store reports (none is configured here):
their query must still parse and run."""


@pytest.mark.slow
def test_every_dashboard_panel_query_returns_data_from_a_real_prometheus(
    tmp_path: Path,
) -> None:
    binary("prometheus")
    folder = policy_copy(tmp_path)
    env = {"GUARDRAIL_ADMIN_TOKEN": TOKEN, "GUARDRAIL_AUDIT_SINK": "off"}
    with (
        ThreadedServer(mock_upstream) as upstream,
        guardrail_serve(tmp_path, upstream.url, folder, env=env) as served,
    ):
        target = served.admin.removeprefix("http://")
        with running_prometheus(tmp_path, target) as prom:
            wait_until(lambda: prom.query('up{job="guardrail"} == 1'))
            time.sleep(2.5)  # a few scrapes of the zero-valued series before traffic
            drive_traffic(served.proxy, served.admin, folder, TOKEN)
            time.sleep(4)  # a few scrapes after it
            report = check_panels(prom)
            routes = httpx.get(
                f"{prom.url}/api/v1/label/route/values",
                params={"match[]": "guardrail_requests_total"},
            ).json()["data"]
            assert routes == ["/"]  # the dashboard's route variable
            crisis = prom.query('sum(guardrail_policy_hits_total{policy="ops.crisis"})')
            assert float(crisis[0]["value"][1]) == 3
            wait_until(lambda: _rules_evaluated(prom.url))
    print("\npanel | legend | series | max value")
    for row in report:
        print(" | ".join(str(x) for x in row))


def check_panels(prom: Prometheus) -> list[tuple[str, str, int, float]]:
    """Run every panel query; each must return data, the counting ones a positive value."""
    report = []
    for title, legend, expr in panel_queries():
        result = prom.query(expr)
        if not result and title in EMPTY_WITHOUT_A_STATE_STORE:
            report.append((title, legend, 0, math.nan))
            continue
        assert result, f"panel {title!r} ({legend}) returned no data: {expr}"
        values = [float(r["value"][1]) for r in result]
        report.append((title, legend, len(result), max(values)))
        if title in MUST_BE_POSITIVE:
            assert any(v > 0 for v in values), (title, legend, result)
    overhead = [v for t, _, _, v in report if t.startswith("Guardrail overhead")]
    assert all(math.isfinite(v) and 0 < v < 1 for v in overhead), overhead
    return report


def _rules_evaluated(url: str) -> bool:
    groups = httpx.get(f"{url}/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 15
    for rule in rules:
        assert rule["health"] != "err", rule
    return all(rule["health"] == "ok" for rule in rules)
