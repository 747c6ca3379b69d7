"""The dev-data splitter behind ``make eval``, on small synthetic cases written here.

The evaluation kit itself (``../shared/eval``) is never read by the tests: these cases only have
the kit's id shapes, so the split rule is checked without the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.eval_split import split_file, split_folder, table, write_half


def _case(case_id: str) -> dict[str, Any]:
    return {"id": case_id, "source": case_id.split("/")[0], "messages": [], "reply": "", "labels": {}}


def _spiral() -> list[dict[str, Any]]:
    return [_case(f"spiral-bench/{model}/{scene}/c0/t{turn}")
            for model in ("model-a", "model-b") for scene in ("s3", "s1", "s2", "s4")
            for turn in (1, 2, 3)]


def test_spiral_bench_is_split_by_scenario_so_no_scenario_is_in_both_halves() -> None:
    halves = split_file(_spiral())
    scenes = {h: {c["id"].split("/")[2] for c in cases} for h, cases in halves.items()}
    assert scenes == {"tune": {"s1", "s3"}, "check": {"s2", "s4"}}
    assert len(halves["tune"]) == len(halves["check"]) == 12


def test_other_sources_alternate_by_position_in_their_file() -> None:
    cases = [_case(f"reddit-mh/teaching/{i}") for i in range(7)]
    halves = split_file(cases)
    assert [c["id"] for c in halves["tune"]] == [f"reddit-mh/teaching/{i}" for i in (0, 2, 4, 6)]
    assert [c["id"] for c in halves["check"]] == [f"reddit-mh/teaching/{i}" for i in (1, 3, 5)]


def test_the_split_is_fixed_and_loses_nothing(tmp_path: Path) -> None:
    src = tmp_path / "dev"
    write_half(src, {"spiral_bench.jsonl": _spiral(),
                     "diasafety.jsonl": [_case(f"diasafety/val/{i:05d}") for i in range(5)]})
    first, second = split_folder(src), split_folder(src)
    assert first == second
    for name in ("spiral_bench.jsonl", "diasafety.jsonl"):
        ids = [c["id"] for h in ("tune", "check") for c in first[h][name]]
        original = [json.loads(x)["id"] for x in (src / name).read_text().splitlines()]
        assert sorted(ids) == sorted(original) and len(set(ids)) == len(ids)


def test_the_table_puts_both_halves_of_each_metric_on_one_line() -> None:
    def report(recall: float) -> dict[str, Any]:
        return {"n_cases": 10, "throughput": {"cases_per_s": 100.0},
                "contract": {"ok": True, "violations": 0, "errors": 0},
                "metrics": {"m.binary": {"n": 10, "precision": 0.5, "recall": recall, "f1": 0.5,
                                         "false_alarm_rate": 0.1},
                            "m.share": {"n": 4, "flagged": 1, "rate": 0.25}}}
    lines = table({"tune": report(0.25), "check": report(0.75)}).splitlines()
    row = next(line for line in lines if line.startswith("m.binary"))
    assert "R 0.250" in row and "R 0.750" in row and row.index("R 0.250") < row.index("R 0.750")
    assert "rate 0.250" in next(line for line in lines if line.startswith("m.share"))
