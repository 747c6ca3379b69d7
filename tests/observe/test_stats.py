"""The dashboard's figures: quantiles from buckets, windows from samples."""

from __future__ import annotations

import math

from guardrail.observe.stats import Sample, StatsHistory, quantile


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
