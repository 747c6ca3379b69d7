"""The state bench runs end to end (figures are the bench's business, not the test's)."""

from __future__ import annotations

import pytest

import subprocess
import sys
from pathlib import Path

pytestmark = [pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]


def test_the_state_bench_measures_memory_redis_and_the_overlap() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.state_bench", "--requests", "64", "--clients", "1,4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("memory") for line in lines) == 2
    assert any(line.startswith("redis") for line in lines)  # measured, or says why not
    assert any(line.startswith("overlap") for line in lines)
