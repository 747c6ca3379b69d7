"""Profile the proxy under load with py-spy and print its hot spots.

    python -m bench.profile_proxy [--target guardrail|ARGS] [--clients 16] [--seconds 15]
                                  [--mode whole|stream] [--out /tmp/guardrail-profile]
                                  [--script N]

Same placement as ``bench.run`` (proxy alone on core 0; mock and wrk on core 1). While wrk
drives the proxy, ``py-spy record --function --format raw`` samples it (idle time excluded;
frames aggregated per function; blocking mode, since non-blocking sampling of a busy process
returns many truncated stacks); the collapsed stacks are saved (open them with speedscope or flamegraph.pl) and summarised here as the top
functions by own time and by inclusive time, as a share of all busy samples. Needs
``pip install py-spy`` and permission to ptrace (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.procs import CLIENT_CPU, PROXY_CPU, exit_on_signals, free_port, proxy_command, start
from bench.texts import request_bodies
from bench.wrkdriver import run_wrk

__all__ = ["BUCKETS", "buckets", "hot_spots", "main"]


_IDLE = (
    "Condition.wait (",
    "EpollSelector.select (",
    "Event.wait (",
    "Queue.get (",
    "Runner.run (",  # uvloop: the loop's own C code, mostly waiting in epoll
)
"""Leaf frames that are a thread waiting (py-spy's idle detection misses some in blocking mode)."""
_ROOTS = ("guardrail/__main__", "guardrail/cli.py", "guardrail/cli/serve.py", "bench/")


def hot_spots(
    collapsed: str, top: int = 25
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Busy samples, top functions by own samples, top by inclusive samples (idle waits out)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [_short(f) for f in stack.split(";")]
        if frames[-1].startswith(_IDLE):
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(top), inclusive.most_common(top)


BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("policy engine (guardrail/policy)", ("guardrail/policy/",)),
    ("canonical log line (structlog, logging)", ("log_request (", "structlog/", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/", "guardrail/observe/record")),
    ("upstream HTTP client", ("httpx/", "httpcore/", "aiohttp/", "guardrail/transport")),
    ("JSON (json)", ("json/",)),
    ("rest of guardrail (pipeline, formats, app)", ("guardrail/",)),
    ("ASGI server and Starlette", ("uvicorn/", "starlette/")),
)
"""Where a busy sample goes. The first three own everything below them (the log line's JSON
rendering counts for the log line); otherwise the deepest frame that matches decides, so a
socket write made by the HTTP client counts for the client and one made by uvicorn for the
server. Samples matching none are the event loop itself."""
_OWNERS = 3
OTHER = "event loop, other"


def buckets(collapsed: str) -> tuple[int, list[tuple[str, int]]]:
    """Busy samples and their split over :data:`BUCKETS` and :data:`OTHER` (idle left out)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")]
        if not stack or frames[-1].startswith(_IDLE):
            continue
        total += int(count_s)
        counts[_bucket([f for f in frames if not any(r in f for r in _ROOTS)])] += int(count_s)
    return total, [(name, counts[name]) for name in [*(n for n, _ in BUCKETS), OTHER]]


def _bucket(frames: list[str]) -> str:
    for name, markers in BUCKETS[:_OWNERS]:
        if any(m in frame for frame in frames for m in markers):
            return name
    for frame in reversed(frames):
        for name, markers in BUCKETS[_OWNERS:]:
            if any(m in frame for m in markers):
                return name
    return OTHER


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py)`` -> ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "/work/wt/bench/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_proxy")
    parser.add_argument(
        "--target", default="guardrail", help="'guardrail' or bench.proxy_variant ARGS"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--mode", choices=["whole", "stream"], default="whole")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--script", type=int, help="mock answers every request with REPLIES[N]")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "guardrail-profile"
    )
    args = parser.parse_args(argv)
    exit_on_signals()
    spy = str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        spy = shutil.which("py-spy") or "py-spy"
    bodies = Path(tempfile.mkdtemp()) / "bodies.jsonl"
    bodies.write_text("\n".join(request_bodies("openai", stream=args.mode == "stream")) + "\n")
    with ExitStack() as stack:
        mport, pport = free_port(), free_port()
        mock = start(
            "mock",
            [sys.executable, "-m", "bench.mock_upstream", "--port", str(mport)]
            + ([] if args.script is None else ["--script", str(args.script)]),
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
        run_wrk(url, bodies, args.clients, 2, cpu=CLIENT_CPU)  # warm-up
        raw = args.out.with_suffix(".collapsed.txt")
        record = subprocess.Popen(
            [spy, "record", "--pid", str(proxy.pid), "--rate", str(args.rate), "--function",
             "--format", "raw", "--output", str(raw), "--duration", str(args.seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        res = run_wrk(url, bodies, args.clients, args.seconds, cpu=CLIENT_CPU)
        _, err = record.communicate(timeout=args.seconds + 30)
        if record.returncode:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace').strip()}")
    total, own, inclusive = hot_spots(raw.read_text(), args.top)
    print(f"{args.target} {args.mode} c={args.clients}: {res.rps:,.0f} req/s, p50 {res.p50_ms:.2f} ms "
          f"(under py-spy); {total} busy samples; stacks in {raw}")  # fmt: skip
    print("\n| where the busy time goes | % of busy samples |\n| --- | --- |")
    for name, count in buckets(raw.read_text())[1]:
        print(f"| {name} | {100 * count / total:.1f} |")
    for title, rows in (("own time", own), ("inclusive time", inclusive)):
        print(f"\n| {title} | % of busy samples |\n| --- | --- |")
        for frame, count in rows:
            print(f"| `{frame}` | {100 * count / total:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
