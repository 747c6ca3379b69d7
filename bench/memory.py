"""Resident memory of the proxy over many requests: does it stay flat after warm-up?

    python -m bench.memory [--target guardrail|ARGS] [--requests 200000] [--warmup 20000]
                           [--clients 16] [--slice 20]

Same placement as ``bench.run``. After ``--warmup`` requests, wrk runs in slices of ``--slice``
seconds until ``--requests`` more were served, and the proxy's RSS (``/proc/PID/status``) is
read after each slice. Prints the curve and the growth from the first to the last reading
(issue 6: within 10%). Mixed non-streamed and streamed bodies alternate by slice.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.procs import (
    CLIENT_CPU,
    PROXY_CPU,
    exit_on_signals,
    free_port,
    proxy_command,
    rss_kib,
    start,
)
from bench.texts import request_bodies
from bench.wrkdriver import run_wrk

__all__ = ["main"]

LIMIT = 0.10


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument(
        "--target", default="guardrail", help="'guardrail' or bench.proxy_variant ARGS"
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slice", type=float, default=20.0, help="seconds per wrk slice")
    args = parser.parse_args(argv)
    exit_on_signals()
    folder = Path(tempfile.mkdtemp())
    bodies = {}
    for mode in ("whole", "stream"):
        bodies[mode] = folder / f"{mode}.jsonl"
        bodies[mode].write_text("\n".join(request_bodies("openai", stream=mode == "stream")) + "\n")
    with ExitStack() as stack:
        mport, pport = free_port(), free_port()
        mock = start(
            "mock",
            [sys.executable, "-m", "bench.mock_upstream", "--port", str(mport)],
            mport,
            cpu=CLIENT_CPU,
        )
        stack.callback(mock.stop)
        proxy = start(
            "proxy",
            proxy_command(sys.executable, args.target, mock.url, pport),
            pport,
            cpu=PROXY_CPU,
        )
        stack.callback(proxy.stop)
        url = proxy.url + "/v1/chat/completions"
        served = 0
        while served < args.warmup:
            served += run_wrk(
                url, bodies["whole"], args.clients, args.slice / 2, cpu=CLIENT_CPU
            ).requests
        curve = [(0, rss_kib(proxy.pid))]
        print(f"after warm-up ({served:,} requests): {curve[0][1] / 1024:.1f} MiB", flush=True)
        done, n = 0, 0
        while done < args.requests:
            mode = "whole" if n % 2 == 0 else "stream"
            res = run_wrk(url, bodies[mode], args.clients, args.slice, cpu=CLIENT_CPU)
            done, n = done + res.requests, n + 1
            curve.append((done, rss_kib(proxy.pid)))
            print(f"{done:>9,} requests ({mode:6} {res.rps:6,.0f}/s, errors {res.errors}): "
                  f"{curve[-1][1] / 1024:.1f} MiB", flush=True)  # fmt: skip
    first, last = curve[0][1], curve[-1][1]
    peak = max(kib for _, kib in curve)
    growth = (last - first) / first
    status = "met" if abs(growth) <= LIMIT else "NOT met"
    print(f"\nRSS after warm-up {first / 1024:.1f} MiB, after {done:,} more requests "
          f"{last / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB): {growth:+.1%}, target within "
          f"{LIMIT:.0%}: {status}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
