"""Score the policy pack on a fixed split of the dev data: a tuning half and a check half.

    python -m bench.eval_split [--data ../shared/eval/dev] [--cmd '.venv/bin/guardrail check --jsonl -']
                               [--full] [--json OUT.json]
    python -m bench.eval_split --errors reddit.distress_weak [--limit 40]

Every change to a detector is judged on the CHECK half; only the TUNING half may be read for
errors (``--errors`` refuses anything else). The split is fixed by construction, so it cannot
drift toward whatever was tuned:

- Spiral-Bench: by scenario (the ``prompt_id`` part of ``spiral-bench/<model>/<prompt_id>/...``).
  The distinct scenarios are sorted; even positions tune, odd positions check. Every turn of every
  model's chat on one scenario stays in one half, so a phrasing learnt from a scenario's chats is
  never scored on the same scenario.
- Every other file: by the case's position in its file, even tunes and odd checks.

The halves are written to a temporary folder under the original file names and scored by the
evaluation kit's own ``score.py --data``, so the figures are exactly the kit's. This is a dev tool
that needs the kit (``../shared/eval``), not a test; the product's tests never read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "eval" / "dev"
DEFAULT_CMD = f"{REPO / '.venv' / 'bin' / 'guardrail'} check --jsonl -"
HALVES = ("tune", "check")


def scenario(case_id: str) -> str | None:
    """The Spiral-Bench scenario (``prompt_id``) of a case id, or None for any other source."""
    parts = case_id.split("/")
    if len(parts) >= 3 and parts[0] == "spiral-bench":
        return parts[2]
    return None


def split_file(cases: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """One file's cases into the two halves (see the module docstring for the rule)."""
    scenarios = sorted({s for c in cases if (s := scenario(str(c["id"]))) is not None})
    rank = {s: i for i, s in enumerate(scenarios)}
    out: dict[str, list[dict[str, Any]]] = {"tune": [], "check": []}
    for position, case in enumerate(cases):
        s = scenario(str(case["id"]))
        index = rank[s] if s is not None else position
        out[HALVES[index % 2]].append(case)
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_folder(data: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{half: {file name: cases}}`` for every ``*.jsonl`` in ``data``."""
    halves: dict[str, dict[str, list[dict[str, Any]]]] = {h: {} for h in HALVES}
    files = sorted(data.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"eval_split: no *.jsonl case files in {data}")
    for path in files:
        for half, cases in split_file(read_jsonl(path)).items():
            halves[half][path.name] = cases
    return halves


def write_half(folder: Path, files: Mapping[str, Iterable[dict[str, Any]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cases in files.items():
        with (folder / name).open("w", encoding="utf-8") as f:
            for case in cases:
                f.write(json.dumps(case, ensure_ascii=False) + "\n")


def score(score_py: Path, data: Path, cmd: str, out_json: Path) -> dict[str, Any]:
    """Run the kit's scorer on one folder; its report as a dict (exit 1 = contract violated)."""
    run = subprocess.run(
        [sys.executable, str(score_py), "--data", str(data), "--cmd", cmd, "--json", str(out_json)],
        capture_output=True, text=True, check=False,
    )
    if run.returncode not in (0, 1) or not out_json.exists():
        raise SystemExit(f"eval_split: score.py failed ({run.returncode}):\n{run.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(out_json.read_text(encoding="utf-8"))
    return report


def cell(m: Mapping[str, Any]) -> str:
    """One metric of one half, compactly: ``n=..  P R F1 FAR`` or ``n=..  rate``."""
    def f(v: object) -> str:
        return "  n/a" if v is None else f"{v:5.3f}"
    if "rate" in m:
        return f"n={m['n']:<5} rate {f(m['rate'])}"
    return (f"n={m['n']:<5} P {f(m['precision'])} R {f(m['recall'])} F1 {f(m['f1'])} "
            f"FAR {f(m['false_alarm_rate'])}")


def table(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """The halves (and any other report, e.g. ``full``) side by side, one metric per line."""
    names: list[str] = []
    for rep in reports.values():
        names += [n for n in rep["metrics"] if n not in names]
    cols = list(reports)
    lines = [f"{'metric':<46}" + "".join(f"{c:<52}" for c in cols)]
    for name in names:
        row = [cell(reports[c]["metrics"][name]) if name in reports[c]["metrics"] else "-" for c in cols]
        lines.append(f"{name:<46}" + "".join(f"{r:<52}" for r in row))
    tail = []
    for c in cols:
        t, k = reports[c]["throughput"], reports[c]["contract"]
        tail.append(f"{reports[c]['n_cases']} cases, {t['cases_per_s']} cases/s, "
                    f"contract {'OK' if k['ok'] else 'VIOLATED'} ({k['violations']} violations, "
                    f"{k['errors']} errors)")
    lines.append(f"{'run':<46}" + "".join(f"{r:<52}" for r in tail))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EVAL_DATA", DEFAULT_DATA)),
                    help="the kit's dev folder (default ../shared/eval/dev beside the repo)")
    ap.add_argument("--score", type=Path, default=None, help="score.py (default: beside --data)")
    ap.add_argument("--cmd", default=DEFAULT_CMD, help="the command under test")
    ap.add_argument("--full", action="store_true", help="also score the whole dev folder")
    ap.add_argument("--json", type=Path, default=None, help="write every report to this file")
    ap.add_argument("--errors", metavar="METRIC", help="list the TUNING half's misses and false "
                    "alarms of one metric instead (bench.eval_errors)")
    ap.add_argument("--limit", type=int, default=40, help="with --errors: how many of each")
    a = ap.parse_args(argv)
    if not a.data.is_dir():
        print(f"eval_split: no dev data at {a.data} (pass --data or set EVAL_DATA)", file=sys.stderr)
        return 2
    score_py = a.score or a.data.parent / "score.py"
    halves = split_folder(a.data)
    if a.errors:
        from bench.eval_errors import list_errors
        tune = [c for cases in halves["tune"].values() for c in cases]
        return list_errors(score_py, tune, a.cmd, a.errors, a.limit)
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="guardrail-eval-") as tmp:
        for half in HALVES:
            write_half(Path(tmp) / half, halves[half])
            reports[half] = score(score_py, Path(tmp) / half, a.cmd, Path(tmp) / f"{half}.json")
        if a.full:
            reports["full"] = score(score_py, a.data, a.cmd, Path(tmp) / "full.json")
    print(table(reports))
    if a.json:
        a.json.write_text(json.dumps(reports, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if all(r["contract"]["ok"] for r in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
