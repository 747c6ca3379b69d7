"""Check ``regexcost``'s proof by measurement: the worst search it lets run without the clock.

    python -m bench.regex_bound [--policies policies] [--texts 40] [--top 8] [--engine]

For every policy regex of a pack that ``regexcost`` proves on some text length (its
``BoundedPattern.unclocked`` length ``L``, at most 1,024), this times searches without the clock
on hostile texts of exactly ``L`` characters: the probe's own attack texts (each repeat of the
pattern pumped, then a character that makes the match fail) stretched or cut to ``L``; texts made
of the pattern's own words and characters in random order (near-misses that push every
alternation and repeat as far as it goes); runs of one character (``a``, a space, ``'``). Each
search is timed best of 3 with ``time.perf_counter``.

It prints how many patterns are proven at each length, the slowest searches with the bound's
step count, and the worst time per bound step. ``regexcost.STEP_LIMIT`` times that worst figure
is what an unclocked search could cost at most if the engine were always as slow per step as in
its slowest case here; it must stay well inside ``boundedregex.BASE_SECONDS``.

``--engine`` then times what skipping the clock saves: ``PolicySet.evaluate`` on the load bench's
reply (``bench.texts.REPLIES[0]`` padded to 1 KB, the six scripted conversations), CPU time per
reply, seven interleaved loops with every pattern clocked and as shipped, in one process.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.procs import REPO
from bench.texts import REPLIES, pad_reply, request_bodies
from guardrail.policy import Conversation, Message, PolicySet, load_policies
from guardrail.policy.boundedregex import BASE_SECONDS, BoundedPattern
from guardrail.policy.regexcost import N_BUCKETS, STEP_LIMIT, _parsed, steps
from guardrail.policy.regexshape import attack_texts

__all__ = ["hostile_texts", "main"]

_WORD = re.compile(r"[a-z']+")


def _patterns(ps: PolicySet) -> list[BoundedPattern]:
    seen: dict[tuple[str, int], BoundedPattern] = {}
    for det in ps.plan.detectors.values():
        for pattern in getattr(det, "patterns", ()):
            if isinstance(pattern, BoundedPattern):
                seen.setdefault((pattern.pattern, pattern.flags), pattern)
    return list(seen.values())


def _fit(text: str, length: int) -> str:
    if not text:
        return ""
    while len(text) < length:
        text += text
    return text[:length]


def hostile_texts(pattern: str, flags: int, length: int, count: int, seed: int = 0) -> list[str]:
    """Texts of ``length`` characters meant to make ``pattern`` work as hard as it can."""
    rng = random.Random(seed)
    texts = [_fit(t, length) for t in attack_texts(pattern, flags)[:count]]
    words = _WORD.findall(pattern.replace("\\b", " ").replace("\\w", "w").replace("\\s", " "))
    words = [w for w in words if w] or ["a"]
    chars = sorted(set("".join(words))) + [" ", "'", ",", "."]
    for _ in range(count):
        picked = " ".join(rng.choice(words) for _ in range(length))
        texts.append(picked[:length])
        texts.append("".join(rng.choice(chars) for _ in range(length)))
    texts += [ch * length for ch in "a '"]
    return [t for t in dict.fromkeys(texts) if len(t) == length]


def _best(search: object, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        search(text)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.regex_bound", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--policies", type=Path, default=REPO / "policies")
    parser.add_argument("--texts", type=int, default=40, help="random texts of each kind")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--engine", action="store_true", help="also time the engine A/B")
    args = parser.parse_args(argv)
    ps = load_policies(args.policies)
    patterns = _patterns(ps)
    lengths: Counter[int] = Counter()
    rows: list[tuple[float, float, int, int, str]] = []
    for bounded in patterns:
        length = min(bounded.unclocked, N_BUCKETS[-1])
        longest = next((b for b in N_BUCKETS if b >= length), N_BUCKETS[-1])
        lengths[-1 if length < 1 else longest] += 1
        if length < 1:
            continue
        bucket = next(b for b in N_BUCKETS if b >= length)
        work = steps(_parsed(bounded.pattern, bounded.flags), bucket)
        assert work is not None
        compiled = bounded._compiled  # the search exactly as boundedregex runs it unclocked
        for text in hostile_texts(bounded.pattern, bounded.flags, length, args.texts):
            seconds = max(_best(compiled.search, text), _best(lambda t: list(compiled.finditer(t)), text))
            rows.append((seconds, seconds / ((length + 1) * work), length, work, bounded.pattern))
    print(f"{len(patterns)} distinct policy regexes; searched without the clock on texts up to:")
    for key, n in sorted(lengths.items()):
        print(f"  {'never' if key < 0 else f'{key} characters (bucket)'}: {n}")
    rows.sort(reverse=True)
    print(f"\n{len(rows)} unclocked searches on hostile texts. Slowest:\n")
    print("| time (ms) | ns per bound step | text length | bound steps per start | pattern |")
    print("|---|---|---|---|---|")
    for seconds, per, length, work, pattern in rows[: args.top]:
        print(f"| {seconds * 1e3:.3f} | {per * 1e9:.3f} | {length} | {work} | `{pattern[:60]}...` |")
    worst_per = max(r[1] for r in rows)
    print(
        f"\nWorst time per bound step: {worst_per * 1e9:.2f} ns; STEP_LIMIT ({STEP_LIMIT:,}) at that "
        f"rate: {STEP_LIMIT * worst_per * 1e3:.2f} ms, against BASE_SECONDS {BASE_SECONDS * 1e3:.0f} ms. "
        f"Slowest unclocked search seen: {rows[0][0] * 1e3:.3f} ms."
    )
    if args.engine:
        _engine_ab(ps, patterns)
    return 0


def _engine_ab(ps: PolicySet, patterns: list[BoundedPattern]) -> None:
    bodies = [json.loads(b) for b in request_bodies("openai", stream=False)]
    convs = [
        Conversation(tuple(Message(m["role"], m["content"]) for m in b["messages"]))
        for b in bodies
    ]
    reply = pad_reply(REPLIES[0].text, 1000)

    def loop(n: int = 300) -> float:
        start = time.process_time()
        for i in range(n):
            ps.evaluate(convs[i % len(convs)], reply)
        return (time.process_time() - start) / n

    loop(50)  # every pattern's proof worked out
    shipped = {id(p): p.unclocked for p in patterns}
    times: dict[str, list[float]] = {"every search clocked": [], "as shipped": []}
    for _ in range(7):
        for p in patterns:
            p._unclocked = -1
        times["every search clocked"].append(loop())
        for p in patterns:
            p._unclocked = shipped[id(p)]
        times["as shipped"].append(loop())
    print("\n| engine, CPU per reply (1 KB reply) | min µs | median µs |\n|---|---|---|")
    for name, values in times.items():
        values.sort()
        print(f"| {name} | {values[0] * 1e6:.0f} | {values[3] * 1e6:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
