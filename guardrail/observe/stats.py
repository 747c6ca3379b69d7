"""``/-/stats``: the figures of the built-in dashboard, read from the exported metrics.

Everything here is derived from the same registry ``/metrics`` exposes (so the page and Grafana
can never disagree), in three views:

* totals since the process started (or, in multiprocess mode, since the metric files were made);
* the same counts over recent windows (1, 5 and 15 minutes), as differences between samples the
  :class:`StatsHistory` keeps (taken at most every few seconds, whenever the page polls and by the
  admin listener's sampler); a window reports how many seconds it really covers, which is less
  than its length while the process is younger than that;
* guardrail's own time per request (p50, p90, p99), estimated from the histogram buckets the way
  PromQL's ``histogram_quantile`` does;
* hits over time per category and per policy (:mod:`guardrail.observe.trend`).

Each view also carries its tiles with a state (``zero``, ``ok``, ``warn``, ``bad``) computed
with the label selections and thresholds of the shipped alert rules
(:mod:`guardrail.observe.thresholds`):
``upstream_errors`` counts ``guardrail_upstream_errors_total{reason!="status_4xx"}``, the
client's 4xx are ``client_errors``; ``not_inspected`` leaves out ``reason="upstream-error"``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from guardrail.observe.metrics import scrape_registry
from guardrail.observe.thresholds import CLIENT_ERROR_REASONS, NOT_INSPECTED_EXCLUDED, figures
from guardrail.observe.trend import HitKey, HitTrend

__all__ = ["WINDOWS", "Sample", "StatsHistory", "quantile", "read_sample"]

WINDOWS = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
_MIN_SPACING = 2.0  # seconds between kept samples
_KEEP = 960.0  # seconds of history kept (just over the longest window)
_COUNTERS = {
    "guardrail_replies_inspected_total": "inspected",
    "guardrail_replies_rewritten_total": "rewritten",
    "guardrail_replies_blocked_total": "blocked",
    "guardrail_crisis_resources_added_total": "crisis_resources",
    "guardrail_upstream_requests_total": "upstream_requests",
}


@dataclass
class Sample:
    """Counter values at one moment (cumulative), and the overhead histogram's buckets."""

    at: float
    counts: dict[str, float] = field(default_factory=dict)
    hits: dict[HitKey, float] = field(default_factory=dict)
    overhead: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    reload_failures: float = 0.0
    reload_successes: float = 0.0
    last_reload_ok: float | None = None
    policies_loaded: dict[str, float] = field(default_factory=dict)

    def minus(self, older: Sample) -> Sample:
        """The increase since ``older`` (a counter that went down restarted: its value counts)."""

        def diff(new: float, old: float) -> float:
            return new - old if new >= old else new

        return Sample(
            at=self.at - older.at,
            counts={k: diff(v, older.counts.get(k, 0.0)) for k, v in self.counts.items()},
            hits={k: diff(v, older.hits.get(k, 0.0)) for k, v in self.hits.items()},
            overhead={k: diff(v, older.overhead.get(k, 0.0)) for k, v in self.overhead.items()},
            reload_failures=diff(self.reload_failures, older.reload_failures),
            reload_successes=diff(self.reload_successes, older.reload_successes),
        )


def _keys(name: str, labels: dict[str, str]) -> tuple[str, ...]:
    """The counts one sample of a counter adds to, with the label selections of the alert rules
    (:mod:`guardrail.observe.thresholds`); ``()`` for a sample the dashboard does not count."""
    if name == "guardrail_requests_total":
        return ("requests", "requests." + labels.get("outcome", ""))
    if name == "guardrail_upstream_errors_total":
        client = labels.get("reason") in CLIENT_ERROR_REASONS
        return ("client_errors",) if client else ("upstream_errors",)
    if name == "guardrail_not_inspected_total":
        reason = labels.get("reason")
        if reason in NOT_INSPECTED_EXCLUDED:
            return ()
        engine = reason == "engine-error"
        return ("not_inspected", "engine_errors") if engine else ("not_inspected",)
    if name == "guardrail_policy_errors_total":
        return ("policy_errors", "engine_errors")
    if name == "guardrail_audit_events_total":
        return ("audit_failures",) if labels.get("result") == "failed" else ()
    if name == "guardrail_containment_actions_total":
        return ("containment." + labels.get("action", ""),)
    if name == "guardrail_state_errors_total":
        return ("state_errors",)
    if name == "guardrail_crisis_referrals_total":
        return ("crisis_referrals",)
    plain = _COUNTERS.get(name)
    return (plain,) if plain else ()


def read_sample(registry: CollectorRegistry | None = None, now: float | None = None) -> Sample:
    """The current values of the metrics the dashboard shows, summed over routes and APIs."""
    sample = Sample(at=time.monotonic() if now is None else now)
    for family in (registry or scrape_registry()).collect():
        for s in family.samples:
            keys = _keys(s.name, s.labels)
            if keys:
                for key in keys:
                    sample.counts[key] = sample.counts.get(key, 0.0) + s.value
            elif s.name == "guardrail_policy_hits_total":
                lab = s.labels
                key4 = (lab["policy"], lab["category"], lab["action"], lab["mode"])
                sample.hits[key4] = sample.hits.get(key4, 0.0) + s.value
            elif s.name == "guardrail_overhead_seconds_bucket":
                le = float(s.labels["le"])
                sample.overhead[le] = sample.overhead.get(le, 0.0) + s.value
            elif s.name == "guardrail_policy_reloads_total":
                if s.labels.get("result") == "failure":
                    sample.reload_failures += s.value
                else:
                    sample.reload_successes += s.value
            elif s.name == "guardrail_policy_last_reload_successful":
                sample.last_reload_ok = s.value
            elif s.name == "guardrail_policies_loaded":
                sample.policies_loaded[s.labels.get("mode", "")] = s.value
    return sample


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate the ``q`` quantile from cumulative ``{le: count}`` buckets by linear
    interpolation inside the bucket that holds it (as PromQL's ``histogram_quantile``); None
    without observations. A quantile in the ``+Inf`` bucket returns the highest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _view(sample: Sample, last_reload_ok: float | None) -> dict[str, Any]:
    """The JSON view of a sample or a difference of two (``last_reload_ok``: the gauge now)."""
    by_category: dict[str, dict[str, float]] = {}
    by_policy = []
    for (policy, category, action, mode), value in sorted(sample.hits.items()):
        by_category.setdefault(category, {"enforce": 0.0, "shadow": 0.0})
        by_category[category][mode] = by_category[category].get(mode, 0.0) + value
        by_policy.append(
            {"policy": policy, "category": category, "action": action, "mode": mode, "hits": value}
        )
    enforce = sum(v for k, v in sample.hits.items() if k[3] == "enforce")
    shadow = sum(v for k, v in sample.hits.items() if k[3] == "shadow")
    levels = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    overhead = {name: quantile(q, sample.overhead) for name, q in levels}
    hits = {"enforce": enforce, "shadow": shadow}
    return {
        "counts": {k: v for k, v in sorted(sample.counts.items())},
        "hits": hits,
        "hits_by_policy": by_policy,
        "hits_by_category": by_category,
        "overhead_seconds": overhead,
        "reloads": {"success": sample.reload_successes, "failure": sample.reload_failures},
        "figures": figures(
            sample.counts, hits, overhead["p99"], sample.reload_failures, last_reload_ok
        ),
    }


class StatsHistory:
    """Recent samples, for the windowed views and the hits over time (``trend``, by default the
    last hour in 30-second steps). Thread-safe; cheap enough to sample on demand.

    Memory: at most one sample per ``_MIN_SPACING`` seconds over ``_KEEP`` seconds (480), plus
    what :class:`~guardrail.observe.trend.HitTrend` keeps (one hit snapshot per step).
    """

    def __init__(
        self,
        read: Callable[[], Sample] = read_sample,
        clock: Callable[[], float] = time.monotonic,
        trend: HitTrend | None = None,
    ) -> None:
        self._read = read
        self._clock = clock
        self._samples: deque[Sample] = deque()
        self._trend = trend if trend is not None else HitTrend()
        self._lock = threading.Lock()

    def sample(self) -> Sample:
        """Read the metrics now; keep the sample if the last kept one is old enough."""
        current = self._read()
        current.at = self._clock()
        with self._lock:
            if not self._samples or current.at - self._samples[-1].at >= _MIN_SPACING:
                self._samples.append(current)
            while self._samples and current.at - self._samples[0].at > _KEEP:
                self._samples.popleft()
            self._trend.record(current.at, current.hits)
        return current

    def _baseline(self, now: float, seconds: float) -> Sample | None:
        with self._lock:
            inside = [s for s in self._samples if now - s.at <= seconds]
        return inside[0] if inside else None

    def stats(self, policies: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
        """The ``/-/stats`` document: totals, windows and the policies now loaded."""
        current = self.sample()
        windows = {}
        for name, seconds in WINDOWS:
            base = self._baseline(current.at, seconds)
            if base is None or base is current:
                continue
            delta = current.minus(base)
            windows[name] = {"seconds": round(delta.at, 1), **_view(delta, current.last_reload_ok)}
        with self._lock:
            trend = self._trend.series(current.at, current.hits)
        return {
            "time": time.time(),
            "totals": _view(current, current.last_reload_ok),
            "windows": windows,
            "trend": trend,
            "last_reload_successful": current.last_reload_ok,
            "policies_loaded": current.policies_loaded,
            "policies": list(policies),
        }
