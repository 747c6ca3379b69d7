"""The middleware benchmark runner still runs (a one-second smoke run; no timing is asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.kit.paths import ROOT


pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_bench_embed_runs_and_reports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.embed.run", "--runs", "1", "--seconds", "1",
         "--warmup", "1", "--clients", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and rows[0].endswith("| 0 |")  # one client count, no errors
