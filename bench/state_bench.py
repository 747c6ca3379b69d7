"""What per-user state costs a request: the state link's lookup and write, memory and Redis.

    .venv/bin/python -m bench.state_bench [--requests 2000] [--clients 1,16] [--redis URL]

Per request the proxy does exactly this with state (``guardrail.state.link``): identify the user
(an HMAC), load the user's state and derive the facts, then, after the reply, write one
observation. The bench runs that cycle through :class:`~guardrail.state.link.StateLink`, the
proxy's own code, for ``--requests`` requests spread over N concurrent clients (each its own
user), and prints the time per request at the median and p99, for:

* the memory backend (the default), in this process;
* Redis on loopback (``--redis URL``, or a ``redis-server`` this bench starts itself when the
  binary is installed), one round trip for the load and one Lua script for the write.

Then it shows where the lookup sits: a request whose upstream takes 100 ms and whose store takes
30 ms (an injected delay), with the lookup started before the upstream call as the proxy does
(``proxy/gather.py``) and, for comparison, awaited before it.

Targets (issue 14, item 8): memory adds at most 0.05 ms per request; Redis on loopback at most
0.5 ms per request at 16 clients; the lookup adds nothing when it answers before the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace

from guardrail.state import FakeClock, StateConfig
from guardrail.state.identity import Identity
from guardrail.state.link import StateLink
from guardrail.state.memory import MemoryStore
from guardrail.state.model import Observation, UserState
from guardrail.state.store import StateStore

KEY = b"bench-key-0123456789abcdef"
NEEDED = frozenset({"session.minutes", "disclosure.minutes_since"})


async def _cycle(link: StateLink, user: str, now: float) -> float:
    headers = {"x-guardrail-user": user}
    started = time.perf_counter()
    identity = link.identify(headers, None)
    facts = await link.facts(identity, now, NEEDED)
    assert identity is not None and "session.minutes" in facts
    await link._observe(identity, now, Observation(distress=True))  # what follow() schedules
    return (time.perf_counter() - started) * 1000.0


async def measure(link: StateLink, requests: int, clients: int) -> tuple[list[float], float]:
    per_client = max(1, requests // clients)
    clock = FakeClock()

    async def client(index: int) -> list[float]:
        out = []
        for turn in range(per_client):
            out.append(await _cycle(link, f"user-{index}", clock.now() + turn * 60))
        return out

    for warm in range(50):  # connections and scripts loaded, caches warm
        await _cycle(link, f"warm-{warm}", clock.now())
    started = time.perf_counter()
    results = await asyncio.gather(*(client(i) for i in range(clients)))
    wall = (time.perf_counter() - started) * 1000.0
    times = [ms for per in results for ms in per]
    return times, wall / len(times)


def _summary(name: str, clients: int, measured: tuple[Sequence[float], float]) -> str:
    """``per request``: the wall time of the run over its requests (what state adds to each
    request's share of the process); median and p99: one request's own wait, which at N
    clients includes the other clients' turns on the same loop."""
    times, amortised = measured
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{name:<8} {clients:>3} clients  per request {amortised:.4f} ms  "
            f"(one request's wait: median {statistics.median(ordered):.4f} ms, p99 {p99:.4f} ms;"
            f" {len(ordered)} requests)")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", folder],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


class SlowStore:
    """A store whose calls take ``delay`` seconds (stands for a slow network)."""

    def __init__(self, inner: StateStore, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def load(self, identity: Identity, now: float) -> UserState:
        await asyncio.sleep(self.delay)
        return await self.inner.load(identity, now)

    async def observe(self, identity: Identity, now: float, observation: Observation) -> None:
        await self.inner.observe(identity, now, observation)

    async def erase(self, user: str) -> bool:
        return await self.inner.erase(user)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        await self.inner.aclose()


async def overlap(config: StateConfig, upstream_s: float = 0.1, store_s: float = 0.03) -> str:
    link = StateLink(SlowStore(MemoryStore(config), store_s), config, FakeClock())
    identity = link.identify({"x-guardrail-user": "overlap"}, None)

    async def upstream() -> None:
        await asyncio.sleep(upstream_s)

    rounds = 10
    started = time.perf_counter()
    for _ in range(rounds):  # as the proxy does it: the lookup beside the upstream call
        lookup = asyncio.ensure_future(link.facts(identity, 0.0, NEEDED))
        await upstream()
        await lookup
    beside = (time.perf_counter() - started) * 1000 / rounds
    started = time.perf_counter()
    for _ in range(rounds):  # for comparison: the lookup first, then the upstream
        await link.facts(identity, 0.0, NEEDED)
        await upstream()
    before = (time.perf_counter() - started) * 1000 / rounds
    return (f"overlap  upstream {upstream_s * 1000:.0f} ms, store {store_s * 1000:.0f} ms: "
            f"beside the upstream {beside:.1f} ms per request, before it {before:.1f} ms")  # fmt: skip


async def main_async(args: argparse.Namespace) -> None:
    clients = [int(c) for c in args.clients.split(",")]
    config = StateConfig(key=KEY)
    for n in clients:
        link = StateLink(MemoryStore(config), config, FakeClock())
        print(_summary("memory", n, await measure(link, args.requests, n)), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        started = None if args.redis else _start_redis(folder)
        url = args.redis or (started[1] if started else None)
        if url is None:
            print("redis    (no redis-server installed and no --redis URL: skipped)")
        else:
            from guardrail.state.redisstore import RedisStore

            redis_config = replace(config, backend="redis", url=url, timeout=2.0)
            try:
                for n in clients:
                    store = RedisStore(redis_config)
                    link = StateLink(store, redis_config, FakeClock())
                    print(_summary("redis", n, await measure(link, args.requests, n)), flush=True)
                    await store.aclose()
            finally:
                if started is not None:
                    started[0].kill()
                    started[0].wait()
    print(await overlap(config))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--redis", default=None, help="a Redis URL (default: start one)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
