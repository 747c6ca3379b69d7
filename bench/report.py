"""Turn benchmark measurements into the side-by-side tables and the targets of issue 6.

Pure functions over measurements: medians across runs, added latency and ratios against the
``direct`` target, Markdown tables. The targets live here (and in README.md), never in tests.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.ttft import TTFTResult
from bench.wrkdriver import WrkResult

__all__ = [
    "BARE",
    "BARE_BOUNDS",
    "DIRECT",
    "TARGETS",
    "Cell",
    "Measured",
    "Target",
    "against_bare",
    "bare_table",
    "check_targets",
    "machine_table",
    "medians",
    "side_by_side",
    "targets_table",
    "ttft_table",
]

DIRECT = "direct"
BARE = "bare"


@dataclass(frozen=True)
class Measured:
    """One wrk run of one target, mode (``whole`` or ``stream``) and connection count."""

    target: str
    mode: str
    connections: int
    result: WrkResult
    cpu_us: float | None = None  # the server's CPU time per request (µs), when read


@dataclass(frozen=True)
class Cell:
    """Medians over the runs of one (target, mode, connections)."""

    target: str
    mode: str
    connections: int
    runs: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rps_runs: tuple[float, ...]
    cpu_us: float | None = None


def medians(measured: Iterable[Measured]) -> dict[tuple[str, str, int], Cell]:
    """Median req/s, p50 and p99 per (target, mode, connections); errors summed."""
    groups: dict[tuple[str, str, int], list[WrkResult]] = defaultdict(list)
    cpu: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for m in measured:
        groups[(m.target, m.mode, m.connections)].append(m.result)
        if m.cpu_us is not None:
            cpu[(m.target, m.mode, m.connections)].append(m.cpu_us)
    return {
        key: Cell(
            target=key[0],
            mode=key[1],
            connections=key[2],
            runs=len(rs),
            rps=statistics.median(r.rps for r in rs),
            p50_ms=statistics.median(r.p50_ms for r in rs),
            p99_ms=statistics.median(r.p99_ms for r in rs),
            errors=sum(r.errors for r in rs),
            rps_runs=tuple(round(r.rps) for r in rs),
            cpu_us=statistics.median(cpu[key]) if cpu.get(key) else None,
        )
        for key, rs in groups.items()
    }


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def side_by_side(
    cells: Mapping[tuple[str, str, int], Cell],
    mode: str,
    targets: Sequence[str],
    conns: Sequence[int],
) -> str:
    """Markdown table: each connection count, each target; added latency and ratio vs direct."""
    header = [
        "clients", "target", "req/s", "p50 ms", "p99 ms",
        "added p50 ms", "added p99 ms", "req/s vs direct", "p99 vs direct", "errors", "req/s per run",
        "server CPU µs/req",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for c in conns:
        direct = cells.get((DIRECT, mode, c))
        for t in targets:
            cell = cells.get((t, mode, c))
            if cell is None:
                continue
            if direct is None or t == DIRECT:
                added50 = added99 = ratio = p99ratio = "-"
            else:
                added50 = f"{cell.p50_ms - direct.p50_ms:+.2f}"
                added99 = f"{cell.p99_ms - direct.p99_ms:+.2f}"
                ratio = f"{cell.rps / direct.rps:.3f}" if direct.rps else "-"
                p99ratio = f"{cell.p99_ms / direct.p99_ms:.1f}x" if direct.p99_ms else "-"
            rows.append([
                c, t, f"{cell.rps:,.0f}", f"{cell.p50_ms:.2f}", f"{cell.p99_ms:.2f}",
                added50, added99, ratio, p99ratio, cell.errors,
                " / ".join(f"{x:,}" for x in cell.rps_runs),
                "-" if cell.cpu_us is None else f"{cell.cpu_us:,.0f}",
            ])  # fmt: skip
    return _table(header, rows)


def ttft_table(results: Mapping[str, Sequence[TTFTResult]]) -> str:
    """Markdown table of time to first token per target and concurrency, added vs direct."""
    direct = {r.concurrency: r for r in results.get(DIRECT, ())}
    header = [
        "clients", "target", "streams", "TTFT p50 ms", "TTFT p90 ms", "added TTFT p50 ms",
        "first sentence p50 ms", "one sentence (direct) ms", "stream end p50 ms",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for target, rs in results.items():
        for r in rs:
            d = direct.get(r.concurrency)
            added = "-" if d is None or target == DIRECT else f"{r.first_p50 - d.first_p50:+.2f}"
            one = "-" if d is None else f"{d.sentence_p50 - d.first_p50:.2f}"
            rows.append([
                r.concurrency, target, r.n, f"{r.first_p50:.2f}", f"{r.first_p90:.2f}", added,
                f"{r.sentence_p50:.2f}", one, f"{r.end_p50:.2f}",
            ])  # fmt: skip
    rows.sort(key=lambda row: (int(str(row[0])), str(row[1]) != DIRECT))
    return _table(header, rows)


def machine_table(info: Mapping[str, str]) -> str:
    """The machine's details as a two-column Markdown table."""
    return _table(["machine", ""], info.items())


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One target of issue 6: a measured value, the bound, and whether lower is better."""

    name: str
    limit: float
    unit: str
    lower_is_better: bool


TARGETS = {
    "added_p50_1": Target("added median latency, 1 client (whole)", 0.5, "ms", True),
    "rps_16": Target("throughput, 16 clients (whole)", 2500, "req/s", False),
    "p99_16": Target("p99, 16 clients (whole)", 15.0, "ms", True),
    "stream_rps_16": Target("streamed throughput, 16 clients, 32-chunk replies", 1000, "streams/s", False),
    "added_ttft_none": Target("added time to first token, 1 client, holdback none", 1.0, "ms", True),
    "added_ttft_sentence": Target(
        "added time to first token, 1 client, holdback sentence, in direct sentence times",
        1.0, "sentences", True,
    ),
}  # fmt: skip


def check_targets(
    cells: Mapping[tuple[str, str, int], Cell],
    ttft: Mapping[str, Sequence[TTFTResult]],
    target: str,
    none_target: str | None = None,
) -> dict[str, float]:
    """The measured value behind each of :data:`TARGETS` (those measured) for ``target``
    (served with the default holdback, ``sentence``) and ``none_target`` (holdback ``none``)."""
    out: dict[str, float] = {}
    got = cells.get
    direct1, proxy1 = got((DIRECT, "whole", 1)), got((target, "whole", 1))
    if direct1 and proxy1:
        out["added_p50_1"] = proxy1.p50_ms - direct1.p50_ms
    if cell := got((target, "whole", 16)):
        out["rps_16"], out["p99_16"] = cell.rps, cell.p99_ms
    if cell := got((target, "stream", 16)):
        out["stream_rps_16"] = cell.rps
    d = {r.concurrency: r for r in ttft.get(DIRECT, ())}.get(1)
    none = {r.concurrency: r for r in ttft.get(none_target or "", ())}.get(1)
    sentence = {r.concurrency: r for r in ttft.get(target, ())}.get(1)
    if d and none:
        out["added_ttft_none"] = none.first_p50 - d.first_p50
    if d and sentence and d.sentence_p50 > d.first_p50:
        one = d.sentence_p50 - d.first_p50
        out["added_ttft_sentence"] = (sentence.first_p50 - d.first_p50) / one
    return out


def targets_table(values: Mapping[str, float]) -> str:
    """Markdown table: each measured target, met or not, and by how much."""
    rows: list[list[object]] = []
    for key, value in values.items():
        t = TARGETS[key]
        met = value <= t.limit if t.lower_is_better else value >= t.limit
        bound = f"{'<=' if t.lower_is_better else '>='} {t.limit:,g} {t.unit}"
        margin = f"{value / t.limit:.2f}"
        rows.append([t.name, bound, f"{value:,.2f} {t.unit}", "met" if met else "NOT met", margin])
    return _table(["target", "bound", "measured (median)", "status", "measured / bound"], rows)


# ------------------------------------------------------------------------- against the bare target

BARE_BOUNDS = {"rps_ratio_16": (0.5, False), "added_ratio_1": (2.0, True)}
"""Issue 12's bounds on guardrail against the bare pass-through: (bound, lower is better)."""


def against_bare(
    cells: Mapping[tuple[str, str, int], Cell], target: str, mode: str
) -> dict[str, float]:
    """``target`` as ratios of the bare pass-through, from cells of one run (issue 12):
    req/s at 16 clients (``rps_ratio_16`` = target / bare) and the added median latency at one
    client (``added_ratio_1`` = (target - direct) / (bare - direct)); the inputs are kept. When
    the servers' CPU time per request was read, ``cpu_ratio_16`` = bare's / target's: what the
    throughput ratio would be if each server had its core to itself, which a loaded machine's
    wall-clock figures only approach."""
    out: dict[str, float] = {}
    got = cells.get
    proxy16, bare16 = got((target, mode, 16)), got((BARE, mode, 16))
    if proxy16 and bare16 and bare16.rps:
        out |= {"rps_16": proxy16.rps, "bare_rps_16": bare16.rps}
        out["rps_ratio_16"] = proxy16.rps / bare16.rps
        if proxy16.cpu_us and bare16.cpu_us:  # a load-robust view of the same ratio
            out |= {"cpu_us_16": proxy16.cpu_us, "bare_cpu_us_16": bare16.cpu_us}
            out["cpu_ratio_16"] = bare16.cpu_us / proxy16.cpu_us
    direct1, proxy1, bare1 = got((DIRECT, mode, 1)), got((target, mode, 1)), got((BARE, mode, 1))
    if direct1 and proxy1 and bare1:
        out |= {"direct_p50_1": direct1.p50_ms, "bare_p50_1": bare1.p50_ms, "p50_1": proxy1.p50_ms}
        bare_added = bare1.p50_ms - direct1.p50_ms
        if bare_added > 0:
            out["added_ratio_1"] = (proxy1.p50_ms - direct1.p50_ms) / bare_added
    return out


def bare_table(values: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of :func:`against_bare` per ``"mode (proxy)"`` key, with issue 12's
    bounds."""
    rows: list[list[object]] = []
    for mode, v in values.items():
        if "rps_ratio_16" in v:
            bound, _ = BARE_BOUNDS["rps_ratio_16"]
            rows.append([
                mode, "req/s at 16 clients", f"{v['bare_rps_16']:,.0f}", f"{v['rps_16']:,.0f}",
                f"{v['rps_ratio_16']:.2f} (proxy / bare)", f">= {bound}",
                "met" if v["rps_ratio_16"] >= bound else "NOT met",
            ])  # fmt: skip
        if "cpu_ratio_16" in v:
            rows.append([
                mode, "server CPU per request at 16 clients", f"{v['bare_cpu_us_16']:,.0f} µs",
                f"{v['cpu_us_16']:,.0f} µs", f"{v['cpu_ratio_16']:.2f} (bare / proxy)",
                "(the req/s ratio, read from CPU time)", "",
            ])  # fmt: skip
        if "added_ratio_1" in v:
            bound, _ = BARE_BOUNDS["added_ratio_1"]
            rows.append([
                mode, f"p50 at 1 client (direct {v['direct_p50_1']:.3f} ms)",
                f"{v['bare_p50_1']:.3f} ms (+{v['bare_p50_1'] - v['direct_p50_1']:.3f})",
                f"{v['p50_1']:.3f} ms (+{v['p50_1'] - v['direct_p50_1']:.3f})",
                f"{v['added_ratio_1']:.2f}x (added, proxy / bare)", f"<= {bound}x",
                "met" if v["added_ratio_1"] <= bound else "NOT met",
            ])  # fmt: skip
    header = ["mode (proxy)", "measure", "bare", "proxy", "ratio", "bound (issue 12)", "status"]
    return _table(header, rows)
