"""The containment and state store metrics (issue 14, item 9): names, bounded labels, series at
zero from the start, and the helpers the request flow calls."""

from __future__ import annotations

import pytest

from guardrail.observe import metrics as m
from tests.ops.opskit import exposition, parse, value

from .conftest import Run


def test_a_running_proxy_exports_the_containment_series_at_zero_and_no_store_gauge(
    served: Run,
) -> None:
    actions = {lab["action"]: v for lab, v in served.metrics["guardrail_containment_actions_total"]}
    assert actions == dict.fromkeys(m.CONTAINMENT_ACTIONS, 0.0)
    for name in ("guardrail_state_operations_total", "guardrail_state_errors_total"):
        assert {lab["operation"] for lab, _ in served.metrics[name]} == set(m.STATE_OPERATIONS)
    # no store reported: no gauge at 0 that would page someone about a store nobody runs
    assert "guardrail_state_store_up" not in served.metrics


def actions(action: str) -> float:
    return value("guardrail_containment_actions_total", action=action)


def test_records_count_as_containment_actions_once_each() -> None:
    before = {a: actions(a) for a in m.CONTAINMENT_ACTIONS}
    m.note_records(["disclosure", "break_reminder", "disclosure", "referral", "crisis_referral"])
    m.note_records(frozenset({"wind_down"}))
    m.note_containment("referral_paced")
    m.note_containment("state_skipped", 3)
    after = {a: actions(a) for a in m.CONTAINMENT_ACTIONS}
    assert {a: after[a] - before[a] for a in after} == {
        "disclosure": 1,
        "break_reminder": 1,
        "wind_down": 1,
        "referral_paced": 1,
        "referral_repointed": 0,
        "state_skipped": 3,
    }
    with pytest.raises(ValueError, match="unknown containment action"):
        m.note_containment("user-42")


def test_state_calls_errors_and_the_up_gauge() -> None:
    calls = value("guardrail_state_operations_total", operation="load")
    errors = value("guardrail_state_errors_total", operation="load")
    m.note_state("load", ok=True)
    m.note_state("load", ok=False)
    assert value("guardrail_state_operations_total", operation="load") == calls + 2
    assert value("guardrail_state_errors_total", operation="load") == errors + 1
    m.state_store_up("redis", False)
    assert value("guardrail_state_store_up", backend="redis") == 0
    m.state_store_up("redis", True)
    assert value("guardrail_state_store_up", backend="redis") == 1
    for bad in (lambda: m.note_state("drop_table", True), lambda: m.state_store_up("x", True)):
        with pytest.raises(ValueError):
            bad()
    samples = parse(exposition())
    assert ({"backend": "redis"}, 1.0) in samples["guardrail_state_store_up"]
