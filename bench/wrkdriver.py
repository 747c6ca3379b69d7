"""Run ``wrk`` with ``bench/wrk/post.lua`` and read back its summary line.

One wrk thread is enough: wrk's event loop drives 64 keep-alive connections at well over the
proxy's rate, and a second thread would only compete with the mock for the client core.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import REPO, pinned

__all__ = ["LUA", "WrkError", "WrkResult", "available", "run_wrk"]

LUA = REPO / "bench" / "wrk" / "post.lua"


class WrkError(RuntimeError):
    """wrk failed or printed no summary."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; ``errors`` counts socket errors, timeouts and
    non-2xx/3xx responses together."""

    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def available() -> bool:
    """Whether ``wrk`` is on the PATH (``apt-get install -y wrk``)."""
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    bodies: Path,
    connections: int,
    seconds: float,
    *,
    cpu: str | None,
    headers: Sequence[str] = (),
    timeout_s: int = 10,
) -> WrkResult:
    """POST the bodies in ``bodies`` to ``url`` over ``connections`` connections for ``seconds``."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies),
        *headers,
    ]
    done = subprocess.run(
        pinned(cmd, cpu), check=False, capture_output=True, text=True, timeout=seconds + 60
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return _result(connections, json.loads(line[len("WRK_JSON ") :]))
    raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-500:]}")


def _result(connections: int, data: dict[str, object]) -> WrkResult:
    lat = data["latency_us"]
    errs = data["errors"]
    assert isinstance(lat, dict) and isinstance(errs, dict)
    duration = data["duration_us"]
    requests = data["requests"]
    assert isinstance(duration, int) and isinstance(requests, int)
    return WrkResult(
        connections=connections,
        requests=requests,
        seconds=duration / 1e6,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=lat["mean"] / 1000,
        errors=sum(int(v) for v in errs.values()),
    )
