"""Hits over time for the built-in dashboard: a series per category and per policy.

:class:`HitTrend` is fed the cumulative policy-hit counters the stats sampler reads from the
registry (``guardrail_policy_hits_total``, so the series stay right when several workers share
prometheus multiprocess files) and answers, for the last ``points`` steps of ``step`` seconds,
how many hits each category and each policy had in each step.

What it keeps: for each step, the counters of the first sample taken in it (one float per
policy-hit series in the registry, keys shared between steps), at most ``points + 1`` of them.
With the defaults (30 s steps, 120 points: the last hour) and 50 policies that is 121 x 50
floats, measured at 0.44 MB with ``tracemalloc`` (``tests/ops/test_trend.py`` checks the
bound). Nothing else grows.

Guarantees:

* step ``i`` counts the hits between the first sample of step ``i`` and the first sample of the
  next step; the last step (in progress) counts up to the sample just taken, so a hit shows at
  once;
* a step in which no sample was taken (the sampler stalled) shows 0, and the hits of the gap are
  counted in the step before it; a counter that went down (a restart) counts from zero, as
  PromQL's ``increase`` does;
* steps before the first sample are not reported: a young process returns fewer points.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["HitKey", "HitTrend"]

HitKey = tuple[str, str, str, str]  # policy, category, action, mode


def _increase(new: float, old: float) -> float:
    return new - old if new >= old else new


class HitTrend:
    """Per-step hit counts over the last ``points * step`` seconds. Not locked: the owner
    (:class:`guardrail.observe.stats.StatsHistory`) calls it under its own lock."""

    def __init__(self, step: float = 30.0, points: int = 120) -> None:
        if step <= 0 or points < 1:
            raise ValueError(f"trend step must be > 0 and points >= 1, got {step!r}, {points!r}")
        self.step = step
        self.points = points
        self._steps: deque[tuple[int, dict[HitKey, float]]] = deque(maxlen=points + 1)
        self._keys: dict[HitKey, HitKey] = {}  # one copy of each key, shared by the snapshots

    def record(self, at: float, hits: Mapping[HitKey, float]) -> None:
        """Keep ``hits`` (cumulative counters at time ``at``) if it is the first of its step."""
        index = math.floor(at / self.step)
        if not self._steps or index > self._steps[-1][0]:
            keys = self._keys
            self._steps.append((index, {keys.setdefault(k, k): v for k, v in hits.items()}))

    def series(self, at: float, hits: Mapping[HitKey, float]) -> dict[str, Any]:
        """The per-step counts up to the current sample (``hits`` at ``at``), oldest first."""
        now = math.floor(at / self.step)
        kept = [s for s in self._steps if s[0] <= now]
        first = max(kept[0][0] if kept else now, now - self.points + 1)
        length = now - first + 1
        policies: dict[str, list[float]] = {}
        categories: dict[str, list[float]] = {}
        bounds = [*kept, (now + 1, hits)]
        for (index, start), (_, end) in zip(bounds, bounds[1:], strict=False):
            if index < first:
                continue
            slot = index - first
            for key, value in end.items():
                grown = _increase(value, start.get(key, 0.0))
                for table, name in ((policies, key[0]), (categories, key[1])):
                    row = table.get(name)
                    if row is None:
                        row = table[name] = [0.0] * length
                    row[slot] += grown
        return {
            "step_seconds": self.step,
            "points": length,
            "categories": dict(sorted(categories.items())),
            "policies": dict(sorted(policies.items())),
        }
