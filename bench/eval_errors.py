"""Misses and false alarms of one metric on the TUNING half only (``make eval ARGS='--errors M'``).

The gold labels come from the kit's own ``score.py`` (imported by path), so a listed miss is
exactly a case that metric counts as one. Text is printed to the terminal for reading; none of it
may be copied into the product (policies, tests, fixtures): write families of phrasing instead.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

Case = dict[str, Any]


def load_score(score_py: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("guardrail_eval_score", score_py)
    if spec is None or spec.loader is None:
        raise SystemExit(f"eval_errors: cannot import {score_py}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_rule(sc: ModuleType, metric: str) -> tuple[str, Callable[[Case], bool | None],
                                                      Callable[[dict[str, Any]], bool]]:
    """(source, gold(case) -> True/False/None, predicted(result) -> bool) for one metric."""
    cats = lambda r: {h["category"] for h in r.get("hits", [])}  # noqa: E731
    sig = lambda k: (lambda r: bool(r.get("signals", {}).get(k)))  # noqa: E731
    group = lambda c: c["labels"]["group"]  # noqa: E731
    rules: dict[str, tuple[str, Callable[[Case], bool | None], Callable[[dict[str, Any]], bool]]] = {
        "spiral.validation": ("spiral-bench", lambda c: sc.val_gold(c["labels"]),
                              lambda r: "validation" in cats(r)),
        "spiral.dependency": ("spiral-bench", lambda c: sc.dep_gold(c["labels"]),
                              lambda r: "dependency" in cats(r)),
        "spiral.referral_present": ("spiral-bench",
                                    lambda c: c["labels"]["suggestions to seek help"] > 0,
                                    sig("reply.referral")),
        "diasafety.distress": ("diasafety", lambda c: c["labels"]["category"] == "Risk Ignorance",
                               sig("user.distress")),
        "epitome.validation_only": ("epitome", lambda c: sc.ep_gold(c["labels"]),
                                    lambda r: "validation" in cats(r)),
        "reddit.crisis_weak": ("reddit-mh", lambda c: (
            True if c["labels"]["subreddit"] == "suicidewatch"
            else False if group(c) == "control" else None), sig("user.crisis")),
        "reddit.distress_weak": ("reddit-mh", lambda c: (
            None if group(c) == "other" else group(c) == "support"), sig("user.distress")),
    }
    if metric not in rules:
        raise SystemExit(f"eval_errors: unknown metric {metric!r}; one of {', '.join(rules)}")
    return rules[metric]


def run(cmd: str, cases: list[Case]) -> dict[str, dict[str, Any]]:
    payload = "".join(json.dumps({k: v for k, v in c.items() if k != "labels"}) + "\n" for c in cases)
    out = subprocess.run(cmd, shell=True, input=payload, capture_output=True, text=True, check=False)
    results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {r["id"]: r for r in results if isinstance(r, dict) and "id" in r}


def show(case: Case, width: int = 400) -> str:
    last = case["messages"][-1]["content"].replace("\n", " ")
    text = f"  {case['id']}\n    user: {last[:width]}"
    if case.get("reply"):
        text += f"\n    reply: {case['reply'].replace(chr(10), ' ')[:width]}"
    return text


def list_errors(score_py: Path, tune: list[Case], cmd: str, metric: str, limit: int) -> int:
    sc = load_score(score_py)
    source, gold, predicted = metric_rule(sc, metric)
    cases = [c for c in tune if c["source"] == source and gold(c) is not None]
    results = run(cmd, cases)
    misses = [c for c in cases if gold(c) and not predicted(results.get(c["id"], {}))]
    alarms = [c for c in cases if gold(c) is False and predicted(results.get(c["id"], {}))]
    for title, group in (("MISSES", misses), ("FALSE ALARMS", alarms)):
        print(f"== {metric} on the tuning half: {title} {len(group)} (showing {min(limit, len(group))})")
        for case in group[:limit]:
            print(show(case))
    return 0
