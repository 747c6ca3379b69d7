"""The dashboard's colours: the same label selections and thresholds as the shipped alert rules,
and grey for every zero."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardrail.observe.thresholds import (
    CLIENT_ERROR_REASONS,
    NOT_INSPECTED_EXCLUDED,
    RULES,
    UNINSPECTABLE_OUTCOMES,
    figures,
)

DEPLOY = Path(__file__).parents[2] / "deploy"
RULES_FILE = DEPLOY / "prometheus" / "rules.yml"


def _not(label: str, values: tuple[str, ...]) -> str:
    """The PromQL matcher that leaves ``values`` out, as rules.yml writes it."""
    if len(values) == 1:
        return f'{label}!="{values[0]}"'
    return f'{label}!~"{"|".join(values)}"'


def _exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    rules = [r for group in doc["groups"] for r in group["rules"]]
    return {r.get("alert") or r["record"]: " ".join(r["expr"].split()) for r in rules}


def test_the_page_selects_and_thresholds_as_the_alert_rules_do() -> None:
    exprs = _exprs()
    for name, rule in RULES.items():
        assert rule.alert in exprs, (name, rule.alert)
    ratio = exprs["guardrail:upstream_error_ratio:rate5m"]
    assert f"guardrail_upstream_errors_total{{{_not('reason', CLIENT_ERROR_REASONS)}}}" in ratio
    assert "guardrail_upstream_requests_total[" in ratio
    upstream = exprs[RULES["upstream_errors"].alert]
    assert upstream.endswith(f"> {RULES['upstream_errors'].threshold}")
    uninspected = exprs[RULES["not_inspected"].alert]
    skipped = _not("reason", NOT_INSPECTED_EXCLUDED)
    assert f"guardrail_not_inspected_total{{{skipped}}}" in uninspected
    assert f"guardrail_requests_total{{{_not('outcome', UNINSPECTABLE_OUTCOMES)}}}" in uninspected
    assert uninspected.endswith(f"> {RULES['not_inspected'].threshold}")
    engine = exprs[RULES["engine_errors"].alert]
    assert 'guardrail_not_inspected_total{reason="engine-error"}' in engine
    assert "guardrail_policy_errors_total[" in engine and engine.endswith("> 0")
    assert exprs[RULES["overhead_p99"].alert].endswith(f"> {RULES['overhead_p99'].threshold}")
    audit = exprs[RULES["audit_failures"].alert]
    assert 'result="failed"' in audit and audit.endswith("> 0")
    reload = exprs[RULES["reload_failures"].alert]
    assert re.search(r"guardrail_policy_last_reload_successful\) == 0$", reload)


def test_grafana_draws_client_errors_apart_from_upstream_errors() -> None:
    board = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    panel = next(p for p in board["panels"] if p["title"] == "Upstream errors by reason")
    upstream, client = (t["expr"] for t in panel["targets"])
    assert _not("reason", CLIENT_ERROR_REASONS) in upstream
    assert all(f'reason="{r}"' in client for r in CLIENT_ERROR_REASONS)


def _states(counts: dict[str, float], **kw: Any) -> dict[str, str]:
    args: dict[str, Any] = {"overhead_p99": None, "reload_failures": 0.0, "last_reload_ok": 1.0}
    args.update(kw)
    hits = {"enforce": counts.pop("enforce", 0.0), "shadow": counts.pop("shadow", 0.0)}
    return {name: f["state"] for name, f in figures(counts, hits, **args).items()}


def test_every_zero_is_neutral() -> None:
    states = _states({})
    assert set(states.values()) == {"zero"} and len(states) == 22  # 14 traffic tiles, 8 containment and state tiles


@pytest.mark.parametrize(
    ("errors", "state"), [(1, "warn"), (5, "warn"), (6, "bad")]  # alert: over 5 %, 5 is not over
)
def test_upstream_errors_turn_red_where_the_alert_fires(errors: int, state: str) -> None:
    doc = figures({"upstream_errors": errors, "upstream_requests": 100}, {}, None, 0.0, 1.0)
    assert doc["upstream_errors"]["state"] == state
    assert doc["upstream_errors"]["ratio"] == errors / 100


def test_client_errors_never_colour_and_never_count_as_upstream_errors() -> None:
    states = _states({"client_errors": 90, "upstream_requests": 100})
    assert states["client_errors"] == "ok" and states["upstream_errors"] == "zero"


def test_not_inspected_is_a_share_of_inspectable_requests() -> None:
    base = {"requests": 200.0, "requests.passthrough": 80.0, "requests.rejected": 20.0}
    assert _states({**base, "not_inspected": 10})["not_inspected"] == "ok"  # 10 of 100
    assert _states({**base, "not_inspected": 11})["not_inspected"] == "bad"


def test_engine_audit_overhead_and_reload_states() -> None:
    assert _states({"engine_errors": 1})["engine_errors"] == "bad"
    assert _states({"audit_failures": 1})["audit_failures"] == "bad"
    assert _states({}, overhead_p99=0.051)["overhead_p99"] == "bad"
    assert _states({}, overhead_p99=0.01)["overhead_p99"] == "ok"
    assert _states({}, reload_failures=1.0)["reload_failures"] == "warn"  # the set since reloaded
    # the last reload was refused before this window began: still red, as the alert fires
    assert _states({}, last_reload_ok=0.0)["reload_failures"] == "bad"
