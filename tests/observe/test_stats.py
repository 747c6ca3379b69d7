"""The dashboard's figures: quantiles from buckets, windows from samples."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter

from guardrail.observe.stats import Sample, StatsHistory, quantile, read_sample


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = {0.001: 0.0, 0.002: 50.0, 0.004: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == 0.002
    assert abs(quantile(0.75, buckets) - 0.003) < 1e-12  # type: ignore[operator]
    assert quantile(0.25, buckets) == 0.0015
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1  # beyond the last finite bound


def test_windows_are_differences_between_kept_samples() -> None:
    now = [1000.0]
    counter = [0.0]

    def read() -> Sample:
        return Sample(
            at=0.0,
            counts={"requests": counter[0]},
            hits={("p", "c", "append", "shadow"): counter[0] / 2},
        )

    history = StatsHistory(read=read, clock=lambda: now[0])
    for _ in range(100):  # 100 samples, 10 s apart, +3 requests each
        history.sample()
        now[0] += 10
        counter[0] += 3
    doc = history.stats([{"id": "p"}])
    assert doc["totals"]["counts"]["requests"] == 300
    one = doc["windows"]["1m"]
    assert one["seconds"] == 60 and one["counts"]["requests"] == 18
    assert one["hits"] == {"enforce": 0, "shadow": 9}
    assert doc["windows"]["15m"]["counts"]["requests"] == 270
    assert doc["policies"] == [{"id": "p"}]


def test_a_young_process_reports_what_its_windows_cover() -> None:
    now = [0.0]
    history = StatsHistory(
        read=lambda: Sample(at=0.0, counts={"requests": now[0]}), clock=lambda: now[0]
    )
    history.sample()
    now[0] = 30.0
    doc = history.stats()
    assert (
        doc["windows"]["5m"]["seconds"] == 30 and doc["windows"]["5m"]["counts"]["requests"] == 30
    )


def test_client_errors_are_read_apart_from_upstream_errors_as_the_rules_select() -> None:
    registry = CollectorRegistry()
    errors = Counter(
        "guardrail_upstream_errors", "", ("route", "api", "reason"), registry=registry
    )
    skipped = Counter("guardrail_not_inspected", "", ("route", "api", "reason"), registry=registry)
    policy_errors = Counter("guardrail_policy_errors", "", ("policy",), registry=registry)
    audit = Counter("guardrail_audit_events", "", ("result",), registry=registry)
    requests = Counter("guardrail_requests", "", ("route", "api", "outcome"), registry=registry)
    errors.labels("/", "openai.chat", "status_4xx").inc(4)
    errors.labels("/", "openai.chat", "status_5xx").inc(2)
    errors.labels("/b", "passthrough", "timeout").inc(1)
    skipped.labels("/", "openai.chat", "upstream-error").inc(6)  # the upstream's fault, not ours
    skipped.labels("/", "openai.chat", "too-large").inc(3)
    skipped.labels("/", "openai.chat", "engine-error").inc(1)
    policy_errors.labels("p").inc(2)
    audit.labels("written").inc(9)
    audit.labels("failed").inc(1)
    requests.labels("/", "openai.chat", "unchanged").inc(20)
    requests.labels("/", "passthrough", "rejected").inc(5)
    counts = read_sample(registry).counts
    assert counts["upstream_errors"] == 3 and counts["client_errors"] == 4
    assert counts["not_inspected"] == 4 and counts["engine_errors"] == 3
    assert counts["audit_failures"] == 1
    assert counts["requests"] == 25 and counts["requests.rejected"] == 5


def test_a_window_judges_its_own_figures() -> None:
    now = [0.0]
    errors = [0.0]

    def read() -> Sample:
        counts = {"upstream_errors": errors[0], "upstream_requests": 10 * now[0]}
        return Sample(at=0.0, counts=counts, last_reload_ok=1.0)

    history = StatsHistory(read=read, clock=lambda: now[0])
    for _ in range(40):  # 10 requests a second; 40 errors in the first 40 s, then none
        history.sample()
        now[0] += 10
        errors[0] += 10 if now[0] <= 40 else 0
    doc = history.stats()
    assert doc["totals"]["figures"]["upstream_errors"]["state"] == "warn"  # 40 of 4,000
    assert doc["windows"]["1m"]["figures"]["upstream_errors"]["state"] == "zero"
