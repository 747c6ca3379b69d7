"""The built-in dashboard's colours, from the label selections and thresholds of the shipped
alert rules (``deploy/prometheus/rules.yml``), so the page and the alerts cannot disagree.

Each figure of a view (totals since start, or a 1, 5 or 15-minute window) gets a state:

* ``zero``: nothing counted; drawn in neutral grey, whatever the figure;
* ``ok``: a count that is not a problem (traffic, hits, client errors);
* ``warn``: something went wrong but below the alert's threshold (an upstream error, a refused
  reload since recovered);
* ``bad``: the alert's own condition holds for this view (without its ``for:`` delay, and over
  the chosen window instead of the rule's 5 or 15 minutes).

The selections below are the ones the rules use; ``tests/ops/test_thresholds.py`` reads
rules.yml and fails if either side changes alone. Client errors (the upstream answered 4xx: a
malformed request, a bad key, an unknown model) are counted apart from upstream errors, as in
``GuardrailUpstreamErrors``, which leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLIENT_ERROR_REASONS",
    "NOT_INSPECTED_EXCLUDED",
    "RULES",
    "UNINSPECTABLE_OUTCOMES",
    "Rule",
    "figures",
]

CLIENT_ERROR_REASONS = ("status_4xx",)
"""``guardrail_upstream_errors_total`` reasons that are the client's fault, not the upstream's."""
NOT_INSPECTED_EXCLUDED = ("upstream-error",)
"""``guardrail_not_inspected_total`` reasons the not-inspected alert leaves out (counted as
upstream errors already)."""
UNINSPECTABLE_OUTCOMES = ("passthrough", "rejected")
"""``guardrail_requests_total`` outcomes that never had a reply to inspect."""


@dataclass(frozen=True)
class Rule:
    """One alert rule as the page applies it: the figure is ``bad`` above ``threshold``."""

    alert: str
    threshold: float


RULES = {
    "upstream_errors": Rule("GuardrailUpstreamErrors", 0.05),  # share of upstream requests
    "not_inspected": Rule("GuardrailRepliesNotInspected", 0.1),  # share of inspectable requests
    "engine_errors": Rule("GuardrailEngineErrors", 0.0),  # count
    "overhead_p99": Rule("GuardrailOverheadHigh", 0.05),  # seconds
    "audit_failures": Rule("GuardrailAuditWriteFailures", 0.0),  # count
    "reload_failures": Rule("GuardrailPolicyReloadFailing", 0.0),  # last reload refused
}

_PLAIN = {
    "requests": "requests",
    "inspected": "inspected",
    "rewritten": "rewritten",
    "blocked": "blocked",
    "crisis_resources": "crisis_resources",
    "client_errors": "client_errors",
    "crisis_referrals": "crisis_referrals",
    "disclosures": "containment.disclosure",
    "break_reminders": "containment.break_reminder",
    "wind_downs": "containment.wind_down",
    "referrals_paced": "containment.referral_paced",
    "referrals_repointed": "containment.referral_repointed",
    "state_skipped": "containment.state_skipped",
}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _figure(
    value: float | None, state: str, ratio: float | None = None, rule: Rule | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value, "state": "zero" if not value else state}
    if ratio is not None:
        out["ratio"] = ratio
    if rule is not None:
        out["alert"], out["threshold"] = rule.alert, rule.threshold
    return out


def _share(value: float, whole: float, rule: Rule, below: str) -> dict[str, Any]:
    ratio = _ratio(value, whole)
    over = ratio is not None and ratio > rule.threshold
    return _figure(value, "bad" if over else below, ratio, rule)


def figures(
    counts: Mapping[str, float],
    hits: Mapping[str, float],
    overhead_p99: float | None,
    reload_failures: float,
    last_reload_ok: float | None,
) -> dict[str, dict[str, Any]]:
    """Every tile of one view: ``{name: {value, state, [ratio], [alert, threshold]}}``."""
    out = {name: _figure(counts.get(key, 0.0), "ok") for name, key in _PLAIN.items()}
    out["enforce_hits"] = _figure(hits.get("enforce", 0.0), "ok")
    out["shadow_hits"] = _figure(hits.get("shadow", 0.0), "ok")
    upstream = counts.get("upstream_errors", 0.0)
    rule = RULES["upstream_errors"]
    out["upstream_errors"] = _share(upstream, counts.get("upstream_requests", 0.0), rule, "warn")
    inspectable = counts.get("requests", 0.0) - sum(
        counts.get("requests." + o, 0.0) for o in UNINSPECTABLE_OUTCOMES
    )
    not_inspected = counts.get("not_inspected", 0.0)
    out["not_inspected"] = _share(not_inspected, inspectable, RULES["not_inspected"], "ok")
    # the state store failing: state-based policies are skipped (GuardrailStateStoreErrors)
    out["state_errors"] = _figure(counts.get("state_errors", 0.0), "warn")
    for name in ("engine_errors", "audit_failures"):
        out[name] = _figure(counts.get(name, 0.0), "bad", rule=RULES[name])
    rule = RULES["overhead_p99"]
    slow = overhead_p99 is not None and overhead_p99 > rule.threshold
    out["overhead_p99"] = _figure(overhead_p99, "bad" if slow else "ok", rule=rule)
    refused = last_reload_ok == 0
    out["reload_failures"] = _figure(
        reload_failures, "bad" if refused else "warn", rule=RULES["reload_failures"]
    )
    if refused:  # the alert's condition holds even when the refusal is older than the window
        out["reload_failures"]["state"] = "bad"
    return out
