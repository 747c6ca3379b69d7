"""Per-stream cost of the stall timeout, in-process (issue 11, item 6).

    python -m bench.stall_bench [--streams 2000] [--chunks 32]

Pumps Chat Completions streams of ``--chunks`` text events (one upstream read per event, each
read a real suspension of the event loop, as from a socket) through ``StreamGuard.pump`` with
holdback ``sentence`` and the default pack, with ``stall_timeout`` off and at its default
(300 s), alternating, on asyncio with uvloop when installed; prints microseconds per stream
(median of 5 rounds) and the difference per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence

from bench.procs import REPO
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.config.settings import DEFAULT_STALL_TIMEOUT
from guardrail.guard.stream import StreamGuard

__all__ = ["main"]

USER = Conversation.of(("user", "tell me about tea"))
HEAD = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'


def events(chunks: int) -> list[bytes]:
    text = [f"Tea number {i} is warm. ".encode() for i in range(chunks)]
    body = [HEAD + b'[{"index":0,"delta":{"content":"' + t + b'"},"finish_reason":null}]}\n\n'
            for t in text]
    return [*body, HEAD + b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']


async def upstream(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)  # a read that suspends, as a socket read does
        yield part


async def one_round(policies: PolicySet, parts: list[bytes], streams: int,
                    stall: float | None) -> float:
    started = time.perf_counter()
    for _ in range(streams):
        guard = StreamGuard("openai.chat", policies, USER)
        async for _out in guard.pump(upstream(parts), stall_timeout=stall):
            pass
    return (time.perf_counter() - started) / streams * 1e6


async def run(streams: int, chunks: int) -> dict[str, list[float]]:
    policies = load_policies(REPO / "policies")
    parts = events(chunks)
    results: dict[str, list[float]] = {"off": [], "on": []}
    await one_round(policies, parts, 50, None)  # warm up
    for _ in range(5):
        results["off"].append(await one_round(policies, parts, streams, None))
        results["on"].append(await one_round(policies, parts, streams, DEFAULT_STALL_TIMEOUT))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    results = runner(run(args.streams, args.chunks))
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"| stall_timeout | µs per {args.chunks}-chunk stream (median of 5) |\n|---|---|")
    print(f"| off | {off:,.0f} |\n| {DEFAULT_STALL_TIMEOUT:g} s | {on:,.0f} |")
    per_read = (on - off) / (args.chunks + 1)
    print(f"\ndifference: {on - off:+,.0f} µs per stream, {per_read:+.1f} µs per upstream read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
