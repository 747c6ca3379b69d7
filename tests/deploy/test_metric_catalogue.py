"""deploy/ is consistent with the metric catalogue (no Prometheus needed for these checks)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from guardrail.observe import metrics as m
from guardrail.observe.record import Recorder
from guardrail.policy import load_policies

from tests.kit.paths import OPS_POLICIES, ROOT


DEPLOY = ROOT / "deploy"
_NAME = re.compile(r"\b(guardrail_[a-z_]+|up)\b(?!\s*\()")
REQUIRED_PANELS = {
    "Request rate by outcome",
    "Policy hit rate by policy",
    "Hit rate by category",
    "Enforce vs shadow hits",
    "Crisis resources added",
    "Replies rewritten and blocked",
    "Guardrail overhead p50 / p99",
    "Upstream errors by reason",
    "Policy reload failures",
    "Crisis referrals by kind",
    "Crisis referrals in range by locale",
    "Containment actions",
    "State store up",
    "State store errors by operation",
}


def exported_names() -> set[str]:
    Recorder([("/", "openai.chat")]).install(load_policies(OPS_POLICIES))
    names = {"up"}
    for family in m.REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return data


def test_dashboard_has_a_datasource_variable_used_by_every_panel() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert REQUIRED_PANELS <= {p["title"] for p in panels}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_query_and_rule_names_exported_metrics() -> None:
    known = exported_names()
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    all_rules = [r for g in rules["groups"] for r in g["rules"]]
    exprs += [r["expr"] for r in all_rules]
    for expr in exprs:
        missing = metric_names(expr) - known
        assert not missing, (missing, expr)


def test_every_alert_says_how_severe_what_and_what_to_do() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "GuardrailCrisisResourcesSurge",
        "GuardrailEngineErrors",
        "GuardrailPolicyReloadFailing",
        "GuardrailUpstreamErrors",
        "GuardrailStateStoreDown",
        "GuardrailStateStoreErrors",
    }
    tested = (DEPLOY / "prometheus" / "rules_test.yml").read_text()
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert f"alertname: {alert['alert']}" in tested, alert["alert"]
