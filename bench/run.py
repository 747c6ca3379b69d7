"""``make bench``: direct vs through guardrail, side by side in one run.

    python -m bench.run [--quick] [--runs 3] [--seconds 8] [--clients 1,16,64]
                        [--modes whole,stream] [--targets direct,guardrail]
                        [--variant NAME='--transport aiohttp --http httptools'] [--json FILE]
                        [--script N]

Starts the mock upstream (core 1), each proxy target (core 0, alone), then for every run, mode
and client count drives every target in turn with ``wrk`` (core 1, beside the mock), so drift in
machine load hits all targets alike. Streams are then timed for time to first token with the
Python driver at 1 and 4 clients, paced by the mock (``--pace``: by default 20 ms to the first
token, then 5 ms per chunk).
Prints the machine's details, Markdown tables of medians, issue 6's targets for the first
proxy target, and that target against the bare pass-through (issue 12: req/s at 16 clients and
added median latency at 1 client as ratios of ``bare``'s, both measured in the same run).

Targets: ``direct`` (the mock itself), ``bare`` (:mod:`bench.bare`: Starlette, the same
upstream client, JSON parsed and re-serialised, no policies), ``guardrail`` (``python -m
guardrail serve``, exactly as shipped), ``guardrail-httpx`` / ``guardrail-httpx-aiohttp`` (:mod:`bench.proxy_variant` with
httpx's own pool / the httpx-aiohttp package as the transport), and any ``--variant NAME=ARGS``
(``bench.proxy_variant`` with ARGS). ``--baseline DIR`` adds ``guardrail-baseline``: ``guardrail serve`` from
the ``guardrail/`` package in DIR (another commit's), so before and after share one run and its
machine load; its ratios to ``bare`` are printed too. ``--script N`` makes the mock answer every
request with reply N of ``bench.texts.REPLIES`` (0: one the default pack rewrites) instead of cycling. ``--ttft-targets`` (default ``guardrail-holdback-none``,
served with ``GUARDRAIL_HOLDBACK=none``) are started too but timed for time to first token only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import report, ttft
from bench.procs import (
    CLIENT_CPU,
    PROXY_CPU,
    REPO,
    Proc,
    cpu_seconds,
    exit_on_signals,
    free_port,
    machine,
    proxy_command,
    start,
)
from bench.texts import request_bodies
from bench.wrkdriver import available, run_wrk

__all__ = ["Plan", "main", "run"]

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
KNOWN: dict[str, tuple[str, dict[str, str]]] = {
    "guardrail": ("guardrail", {}),
    "bare": ("bare", {}),
    "guardrail-holdback-none": ("guardrail", {"GUARDRAIL_HOLDBACK": "none"}),
    "guardrail-httpx": ("--transport httpx", {}),
    "guardrail-httpx-aiohttp": ("--transport httpx-aiohttp", {}),
}
"""Proxy targets by name: (the shipped CLI or bench.proxy_variant arguments, environment)."""
NONE_TARGET = "guardrail-holdback-none"
BASELINE = "guardrail-baseline"
"""``guardrail serve`` from another checkout (``--baseline DIR``): before and after in one run."""


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures."""

    targets: tuple[str, ...]
    variants: tuple[tuple[str, str], ...]
    modes: tuple[str, ...]
    clients: tuple[int, ...]
    runs: int
    seconds: float
    warmup_s: float
    ttft_streams: int
    api: str
    reply_bytes: int
    chunks: int
    python: str
    logs: Path | None
    pace: str = "20,5"
    proxy_cpus: str = PROXY_CPU
    proxy_env: tuple[tuple[str, str], ...] = ()
    ttft_targets: tuple[str, ...] = (NONE_TARGET,)
    script: int | None = None
    baseline: Path | None = None

    @property
    def started(self) -> tuple[str, ...]:
        """Every proxy to start: the load targets, plus the TTFT-only ones when streaming."""
        extra = self.ttft_targets if "stream" in self.modes else ()
        names = [t for t in (*self.targets, *extra) if t != report.DIRECT]
        return tuple(dict.fromkeys(names))


def _proxy_command(
    plan: Plan, name: str, upstream: str, port: int
) -> tuple[list[str], dict[str, str]]:
    if name == BASELINE and plan.baseline is not None:
        cmd = proxy_command(plan.python, "guardrail", upstream, port)
        path = f"{plan.baseline}{os.pathsep}{REPO}"  # its guardrail, this bench
        return cmd, {**dict(plan.proxy_env), "PYTHONPATH": path}
    variant = dict(plan.variants).get(name)
    args, env = (variant, {}) if variant is not None else KNOWN.get(name, (None, {}))
    if args is None:
        raise SystemExit(
            f"unknown target {name!r}: use {', '.join(KNOWN)} or --variant {name}=ARGS"
        )
    return proxy_command(plan.python, args, upstream, port), {**env, **dict(plan.proxy_env)}


def _log(plan: Plan, name: str) -> Path | None:
    return plan.logs / f"{name}.log" if plan.logs else None


def _start_all(plan: Plan, stack: ExitStack) -> dict[str, Proc]:
    mock_port = free_port()
    mock_cmd = [
        plan.python, "-m", "bench.mock_upstream", "--port", str(mock_port),
        "--reply-bytes", str(plan.reply_bytes), "--chunks", str(plan.chunks),
    ]  # fmt: skip
    if plan.script is not None:
        mock_cmd += ["--script", str(plan.script)]
    mock = start("mock", mock_cmd, mock_port, cpu=CLIENT_CPU, log=_log(plan, "mock"))
    stack.callback(mock.stop)
    procs = {report.DIRECT: mock}
    for name in plan.started:
        port = free_port()
        cmd, env = _proxy_command(plan, name, mock.url, port)
        cwd = plan.baseline if name == BASELINE and plan.baseline is not None else REPO
        proc = start(
            name, cmd, port, cpu=plan.proxy_cpus, env=env, log=_log(plan, name), cwd=cwd
        )
        stack.callback(proc.stop)
        procs[name] = proc
    return procs


def _bodies(plan: Plan, folder: Path) -> dict[str, Path]:
    out = {}
    for mode in plan.modes:
        path = folder / f"{plan.api}-{mode}.jsonl"
        path.write_text("\n".join(request_bodies(plan.api, stream=mode == "stream")) + "\n")
        out[mode] = path
    return out


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load(plan: Plan, procs: dict[str, Proc], bodies: dict[str, Path]) -> list[report.Measured]:
    path = PATHS[plan.api]
    procs = {name: proc for name, proc in procs.items() if name in plan.targets}
    if plan.warmup_s:
        for proc in procs.values():
            for mode in plan.modes:
                run_wrk(proc.url + path, bodies[mode], 16, plan.warmup_s, cpu=CLIENT_CPU)
    measured: list[report.Measured] = []
    for run_no in range(plan.runs):
        for mode in plan.modes:
            for clients in plan.clients:
                for name, proc in procs.items():
                    cpu0 = cpu_seconds(proc.pid)
                    res = run_wrk(
                        proc.url + path, bodies[mode], clients, plan.seconds, cpu=CLIENT_CPU
                    )
                    used = cpu_seconds(proc.pid) - cpu0
                    per = 1e6 * used / res.requests if res.requests else None
                    measured.append(report.Measured(name, mode, clients, res, per))
                    _say(
                        f"run {run_no + 1}/{plan.runs} {mode:6} c={clients:<3} {name:18} "
                        f"{res.rps:9,.0f} req/s  p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms"
                        + (f"  errors {res.errors}" if res.errors else "")
                    )
    return measured


def _ttft(plan: Plan, procs: dict[str, Proc], bodies: Path) -> dict[str, list[ttft.TTFTResult]]:
    payloads = [line.encode() for line in bodies.read_text().splitlines() if line]
    out: dict[str, list[ttft.TTFTResult]] = {}
    per = max(1, plan.ttft_streams)
    for name, proc in procs.items():
        out[name] = [
            ttft.measure(
                proc.url + PATHS[plan.api], payloads, concurrency=c, per_client=per, pace=plan.pace
            )
            for c in (1, 4)
        ]
        _say(f"ttft {name:18} p50 {out[name][0].first_p50:.2f} ms (1 client)")
    return out


def _annotation(proc: Proc, plan: Plan, stream: bool) -> str:
    """The x-guardrail-* headers of one response: shows what the proxy inspects today."""
    body = next(request_bodies(plan.api, stream=stream))
    with httpx.Client(timeout=10) as client:
        r = client.post(
            proc.url + PATHS[plan.api], content=body, headers={"content-type": "application/json"}
        )
    if r.status_code != 200:
        raise SystemExit(f"{proc.name}: sanity request answered {r.status_code}: {r.text[:200]}")
    marks = [f"{k}={v}" for k, v in r.headers.items() if k.startswith("x-guardrail-")]
    return f"{r.status_code} " + (" ".join(marks) or "(no x-guardrail headers)")


def run(plan: Plan) -> dict[str, object]:
    """Run the plan and return everything measured (also printed as Markdown on stdout)."""
    if not available():
        raise SystemExit("wrk not found: apt-get install -y wrk")
    info = machine(plan.python)
    started = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        bodies = _bodies(plan, Path(tmp))
        procs = _start_all(plan, stack)
        marks = {
            f"{name} {mode}": _annotation(proc, plan, mode == "stream")
            for name, proc in procs.items() if name != report.DIRECT
            for mode in plan.modes if name in plan.targets or mode == "stream"
        }  # fmt: skip
        measured = _load(plan, procs, bodies)
        times = _ttft(plan, procs, bodies["stream"]) if "stream" in plan.modes else {}
    info["load after"] = machine(plan.python)["load"]
    info["wall time"] = f"{time.monotonic() - started:.0f} s"
    cells = report.medians(measured)
    proxies = [t for t in plan.targets if t not in (report.DIRECT, report.BARE)]
    none = plan.ttft_targets[0] if plan.ttft_targets else None
    targets = report.check_targets(cells, times, proxies[0], none) if proxies else {}
    bare = {
        f"{mode} ({proxy})": report.against_bare(cells, proxy, mode)
        for proxy in proxies[:1] + [t for t in proxies if t == BASELINE]
        for mode in plan.modes
        if report.BARE in plan.targets
    }
    result: dict[str, object] = {
        "machine": info,
        "plan": {k: str(v) for k, v in asdict(plan).items()},
        "inspection": marks,
        "cells": [asdict(c) for c in cells.values()],
        "ttft": {k: [asdict(r) for r in v] for k, v in times.items()},
        "targets": targets,
        "against_bare": bare,
    }
    _print(plan, info, marks, cells, times, targets, bare)
    return result


def _print(
    plan: Plan,
    info: dict[str, str],
    marks: dict[str, str],
    cells: dict[tuple[str, str, int], report.Cell],
    times: dict[str, list[ttft.TTFTResult]],
    targets: dict[str, float],
    bare: dict[str, dict[str, float]],
) -> None:
    out: list[str] = [report.machine_table(info), ""]
    out.append(
        f"Placement: proxy on core(s) {plan.proxy_cpus}; mock upstream and wrk (1 thread) on core "
        f"{CLIENT_CPU}. API {plan.api}, replies of ~{plan.reply_bytes} B, streams of "
        f"{plan.chunks} text chunks, {plan.runs} run(s) x {plan.seconds:g} s per cell, medians."
    )
    out += ["", "What the proxy did with one request of each mode:"]
    out += [f"- {k}: {v}" for k, v in marks.items()]
    for mode in plan.modes:
        title = "non-streamed" if mode == "whole" else f"streamed ({plan.chunks} chunks, unpaced)"
        out += ["", f"### {title}", ""]
        out.append(report.side_by_side(cells, mode, plan.targets, plan.clients))
    if times:
        out += [
            "",
            f"### time to first token (streams paced {plan.pace} ms: first token, per chunk)",
            "",
        ]
        out.append(report.ttft_table(times))
    proxy = next((t for t in plan.targets if t not in (report.DIRECT, report.BARE)), None)
    if targets:
        out += ["", f"### issue 6 targets ({proxy})", "", report.targets_table(targets)]
    if any(bare.values()) and proxy:
        reply = "cycling replies" if plan.script is None else f"reply script {plan.script}"
        out += ["", f"### against the bare pass-through (issue 12; {reply})", ""]
        out.append(report.bare_table(bare))
    print("\n".join(out), flush=True)


def _plan(argv: Sequence[str] | None) -> tuple[Plan, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="1 run x 2 s per cell, fewer streams (about 1 minute)")
    add("--runs", type=int)
    add("--seconds", type=float)
    add("--warmup", type=float, help="seconds of warm-up per target and mode (default 1)")
    add("--clients", default="1,16,64")
    add("--modes", default="whole,stream")
    add("--targets", default="direct,bare,guardrail")
    add("--variant", action="append", default=[], metavar="NAME=ARGS")
    add("--ttft-streams", type=int, help="streams per client for time to first token")
    add(
        "--ttft-targets",
        default=NONE_TARGET,
        help="proxies timed for time to first token only (comma-separated; '' for none)",
    )
    add("--pace", default="20,5", help="TTFT streams: ms to the first token, ms per chunk")
    add("--proxy-cpus", default=PROXY_CPU, help="taskset CPU list for the proxies (default 0)")
    add(
        "--proxy-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the proxies, e.g. GUARDRAIL_LOG_LEVEL=warning",
    )
    add("--api", choices=sorted(PATHS), default="openai")
    add("--reply-bytes", type=int, default=1000)
    add("--script", type=int, help="mock answers every request with texts.REPLIES[N]")
    add(
        "--baseline",
        type=Path,
        help="a folder holding another guardrail/ (e.g. `git archive COMMIT guardrail | tar -x "
        "-C DIR`): served as the guardrail-baseline target, beside this tree's guardrail",
    )
    add("--chunks", type=int, default=32)
    add("--python", default=sys.executable, help="interpreter for mock and proxies")
    add("--logs", type=Path, help="folder for the servers' output (default: discarded)")
    add("--json", type=Path, help="also write the results here")
    a = parser.parse_args(argv)
    variants = tuple((name, args) for name, _, args in (v.partition("=") for v in a.variant))
    targets = [t for t in a.targets.split(",") if t] + [name for name, _ in variants]
    if a.baseline:
        targets.append(BASELINE)
    if report.DIRECT not in targets:
        targets.insert(0, report.DIRECT)
    if a.logs:
        a.logs.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        targets=tuple(dict.fromkeys(targets)),
        variants=variants,
        modes=tuple(m for m in a.modes.split(",") if m),
        clients=tuple(int(c) for c in a.clients.split(",")),
        runs=a.runs or (1 if a.quick else 3),
        seconds=a.seconds or (2.0 if a.quick else 8.0),
        warmup_s=1.0 if a.warmup is None else a.warmup,
        ttft_streams=a.ttft_streams or (5 if a.quick else 30),
        api=a.api,
        reply_bytes=a.reply_bytes,
        chunks=a.chunks,
        python=a.python,
        logs=a.logs,
        pace=a.pace,
        proxy_cpus=a.proxy_cpus,
        ttft_targets=tuple(t for t in a.ttft_targets.split(",") if t),
        proxy_env=tuple((k, v) for k, _, v in (e.partition("=") for e in a.proxy_env)),
        script=a.script,
        baseline=a.baseline.resolve() if a.baseline else None,
    )
    return plan, a.json


def main(argv: Sequence[str] | None = None) -> int:
    plan, json_path = _plan(argv)
    exit_on_signals()
    result = run(plan)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
