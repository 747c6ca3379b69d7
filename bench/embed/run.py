"""The middleware's overhead: the same Starlette chat app with and without GuardrailMiddleware.

    python -m bench.embed.run [--runs 3] [--seconds 8] [--clients 1,16] [--json FILE]

Starts both apps (``bench.embed.app``: a ~1 KB non-streamed Chat Completions reply; the guarded
one with the default pack) with a real uvicorn on loopback, pinned to core 0, then for every run
and client count drives each in turn with ``wrk`` (one thread, pinned to core 1) and
``bench/embed/post.lua`` POSTing the proxy benchmark's request bodies (``bench.texts``). Each
target is warmed up first. Prints, per client count, the median over runs of each target's p50
latency and throughput, and the median added time per request (guarded p50 - bare p50).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.texts import request_bodies

REPO = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("post.lua")
PATH = "/v1/chat/completions"
SERVER_CPU, CLIENT_CPU = "0", "1" if (os.cpu_count() or 1) > 1 else "0"
TARGETS = ("bare", "guarded")


@dataclass(frozen=True)
class Sample:
    """One wrk run against one target (latencies in milliseconds)."""

    target: str
    clients: int
    run: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    mean_ms: float
    errors: int


def pinned(cmd: Sequence[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else list(cmd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(guard: bool) -> Iterator[str]:
    """Run ``bench.embed.app`` (guarded or bare) until the block ends; yield its chat URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.embed.app", "--port", str(port)]
    cmd += ["--guard"] if guard else []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(  # audit events (stdout) and logs go nowhere, as in production
        pinned(cmd, SERVER_CPU), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the app did not listen within 60 s")
        yield f"http://127.0.0.1:{port}{PATH}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def wrk(url: str, bodies: Path, clients: int, seconds: float) -> dict[str, object]:
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout=10s",
           "-s", str(LUA), url, "--", str(bodies)]  # fmt: skip
    done = subprocess.run(
        pinned(cmd, CLIENT_CPU), capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("EMBED_WRK "):
            result: dict[str, object] = json.loads(line[len("EMBED_WRK ") :])
            return result
    raise RuntimeError(f"wrk printed no summary: {done.stdout}{done.stderr}")


def sample(target: str, clients: int, run: int, raw: dict[str, object]) -> Sample:
    lat = raw["latency_us"]
    assert isinstance(lat, dict)
    requests, micros = int(str(raw["requests"])), int(str(raw["duration_us"]))
    return Sample(
        target, clients, run, requests, requests / (micros / 1e6),
        lat["p50"] / 1000, lat["p90"] / 1000, lat["mean"] / 1000, int(str(raw["errors"])),
    )  # fmt: skip


def measure(
    runs: int, seconds: float, clients: Sequence[int], warmup: float, bodies: Path
) -> list[Sample]:
    samples: list[Sample] = []
    with serve(False) as bare, serve(True) as guarded:
        urls = {"bare": bare, "guarded": guarded}
        for url in urls.values():
            wrk(url, bodies, max(clients), warmup)
        for run in range(runs):
            for count in clients:
                order = TARGETS if run % 2 == 0 else TARGETS[::-1]  # drift hits both alike
                for target in order:
                    samples.append(sample(target, count, run, wrk(urls[target], bodies, count,
                                                                  seconds)))  # fmt: skip
    return samples


def report(samples: Sequence[Sample], clients: Sequence[int]) -> str:
    lines = [
        "| clients | bare p50 ms | guarded p50 ms | added per request ms | bare req/s"
        + " | guarded req/s | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in clients:
        mine = [s for s in samples if s.clients == count]
        by = {t: [s for s in mine if s.target == t] for t in TARGETS}
        p50 = {t: statistics.median(s.p50_ms for s in by[t]) for t in TARGETS}
        rps = {t: statistics.median(s.rps for s in by[t]) for t in TARGETS}
        pairs = zip(by["bare"], by["guarded"])
        added = statistics.median(g.p50_ms - b.p50_ms for b, g in pairs)
        errors = sum(s.errors for s in mine)
        lines.append(
            f"| {count} | {p50['bare']:.3f} | {p50['guarded']:.3f} | {added:.3f} "
            f"| {rps['bare']:.0f} | {rps['guarded']:.0f} | {errors} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GuardrailMiddleware overhead (see docstring)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--json", type=Path, default=None, help="write every sample here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.embed.run: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("\n".join(request_bodies("openai", stream=False)) + "\n")
        samples = measure(args.runs, args.seconds, clients, args.warmup, bodies)
    python = sys.version.split()[0]
    print(f"# GuardrailMiddleware overhead: {args.runs} runs x {args.seconds:g} s, "
          f"server on core {SERVER_CPU}, wrk on core {CLIENT_CPU}, python {python}")  # fmt: skip
    print(report(samples, clients))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
