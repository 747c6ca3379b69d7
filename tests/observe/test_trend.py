"""Hits over time: per-step counts per category and per policy, from cumulative counters."""

from __future__ import annotations

import tracemalloc

import pytest

from guardrail.observe.stats import Sample, StatsHistory
from guardrail.observe.trend import HitKey, HitTrend

CRISIS: HitKey = ("ops.crisis", "referral", "prepend", "enforce")
AGREE: HitKey = ("ops.agree", "validation", "append", "shadow")
BLOCK: HitKey = ("ops.block", "referral", "block", "enforce")


def test_each_step_counts_the_hits_between_its_first_sample_and_the_next() -> None:
    trend = HitTrend(step=10, points=6)
    trend.record(0.0, {CRISIS: 0, AGREE: 0})
    trend.record(4.0, {CRISIS: 5, AGREE: 0})  # same step: not kept, counted through the next
    trend.record(10.0, {CRISIS: 7, AGREE: 1})
    trend.record(21.0, {CRISIS: 7, AGREE: 4, BLOCK: 2})  # a policy that appears later
    doc = trend.series(25.0, {CRISIS: 8, AGREE: 4, BLOCK: 2})
    assert doc["step_seconds"] == 10 and doc["points"] == 3
    assert doc["policies"] == {
        "ops.agree": [1, 3, 0],
        "ops.block": [0, 2, 0],
        "ops.crisis": [7, 0, 1],  # the step in progress shows its hits at once
    }
    assert doc["categories"] == {"referral": [7, 2, 1], "validation": [1, 3, 0]}


def test_a_step_without_a_sample_shows_zero_and_its_hits_go_to_the_step_before() -> None:
    trend = HitTrend(step=10, points=10)
    trend.record(0.0, {CRISIS: 0})
    trend.record(31.0, {CRISIS: 6})  # nothing sampled in steps 1 and 2 (a stalled sampler)
    doc = trend.series(35.0, {CRISIS: 6})
    assert doc["policies"]["ops.crisis"] == [6, 0, 0, 0]


def test_a_counter_that_went_down_counts_from_zero_like_increase() -> None:
    trend = HitTrend(step=10, points=10)
    trend.record(0.0, {CRISIS: 40})
    trend.record(10.0, {CRISIS: 3})  # a restarted worker's counter
    doc = trend.series(12.0, {CRISIS: 5})
    assert doc["policies"]["ops.crisis"] == [3, 2]


def test_only_the_last_points_steps_are_reported_and_kept() -> None:
    trend = HitTrend(step=1, points=5)
    for second in range(100):
        trend.record(float(second), {CRISIS: float(second * 2)})
    doc = trend.series(99.5, {CRISIS: 199.0})
    assert doc["points"] == 5 and doc["policies"]["ops.crisis"] == [2, 2, 2, 2, 1]
    assert len(trend._steps) == 6  # noqa: SLF001 (the bound is the promise under test)


def test_a_young_process_reports_only_the_steps_it_lived() -> None:
    trend = HitTrend(step=30, points=120)
    trend.record(3.0, {CRISIS: 0})
    doc = trend.series(9.0, {CRISIS: 2})
    assert doc["points"] == 1 and doc["policies"] == {"ops.crisis": [2]}


@pytest.mark.parametrize(("step", "points"), [(0, 10), (-1, 10), (10, 0)])
def test_bad_shapes_are_refused(step: float, points: int) -> None:
    with pytest.raises(ValueError, match="trend step"):
        HitTrend(step=step, points=points)


def test_an_hour_of_fifty_policies_stays_under_a_megabyte() -> None:
    def hits(at: int) -> dict[HitKey, float]:  # new key objects each read, as the registry gives
        return {(f"team.p{i:03d}", f"cat_{i % 8}", "append", "enforce"): at + i for i in range(50)}

    trend = HitTrend()  # 30 s steps, 120 points
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for step in range(1000):  # over eight hours of steps
            trend.record(step * 30.0, hits(step))
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(trend._steps) == 121  # noqa: SLF001
    assert kept < 1_000_000, kept


def test_stats_carry_the_trend_of_the_sampled_registry() -> None:
    now = [100.0]
    hits = [0.0]

    def read() -> Sample:
        return Sample(at=0.0, hits={CRISIS: hits[0], AGREE: hits[0] / 2})

    history = StatsHistory(read=read, clock=lambda: now[0], trend=HitTrend(step=30, points=4))
    for _ in range(12):  # one sample every 10 s, 2 crisis hits each
        history.sample()
        now[0] += 10
        hits[0] += 2
    doc = history.stats()
    trend = doc["trend"]
    assert trend["points"] == 4 and trend["step_seconds"] == 30
    assert trend["policies"]["ops.crisis"] == [6, 6, 6, 2]
    assert trend["categories"]["validation"] == [3, 3, 3, 1]
