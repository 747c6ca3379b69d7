"""What a semantic judge costs the request path, measured against a judge on loopback.

    .venv/bin/python -m bench.judge_bench [--questions 400] [--judge-ms 150] [--upstream-ms 300]

Three figures, all in one process on one event loop, the judge a minimal HTTP/1.1 server on
loopback that answers ``no`` after ``--judge-ms``:

1. the runner's own cost per question: a question through :class:`JudgeRunner` against the same
   request made with a bare ``httpx.AsyncClient`` (judge delay 0), median of ``--questions``;
2. a cached question (the same turn asked again): median;
3. latency added to an exchange whose upstream takes ``--upstream-ms``: the judge asked first
   and the upstream after (sequential), against :meth:`JudgeRunner.prefetch` beside the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from guardrail.judge.endpoints import JudgeEndpoint
from guardrail.judge.runner import JudgeRunner
from guardrail.policy.model import Message

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "no"}}]}).encode()


@dataclass(frozen=True)
class Spec:
    id: str
    rubric: str
    reads: str
    endpoint: str


class Judge:
    """A minimal HTTP/1.1 judge: reads a request, waits ``delay``, answers ``no`` in one write.

    (A uvicorn app here measured 44 ms a question on this machine, the same with a bare client:
    its response head and body go out in two writes, and the second waits for a delayed ACK.
    Real judge servers do not measure that way, so the bench does not either.)"""

    def __init__(self) -> None:
        self.delay = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                await reader.readexactly(length)
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
                    + ANSWER
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


async def _median_ms(runs: int, make: Any) -> float:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        await make(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main(questions: int, judge_ms: float, upstream_ms: float) -> None:
    app = Judge()
    server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    endpoint = JudgeEndpoint(name="b", url=url, model="m", calls_per_minute=None, timeout=10)
    spec = [Spec("bench.judge", "Is the person in crisis?", "last_user", "b")]
    try:
        async with JudgeRunner({"b": endpoint}) as runner, httpx.AsyncClient() as bare:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            bare_ms = await _median_ms(
                questions, lambda i: bare.post(url + "/chat/completions", json=body)
            )
            runner_ms = await _median_ms(
                questions, lambda i: runner.ask(spec, [Message("user", f"turn {i}")])
            )
            cached_ms = await _median_ms(
                questions, lambda i: runner.ask(spec, [Message("user", "turn 0")])
            )
            print(f"question, bare httpx:       {bare_ms:7.3f} ms (median of {questions})")
            print(f"question, JudgeRunner:      {runner_ms:7.3f} ms  (+{runner_ms - bare_ms:.3f})")
            print(f"question, cached:           {cached_ms:7.3f} ms")

            app.delay = judge_ms / 1000

            async def sequential(i: int) -> None:
                await runner.ask(spec, [Message("user", f"seq {i}")])
                await asyncio.sleep(upstream_ms / 1000)

            async def beside(i: int) -> None:
                pending = runner.prefetch(spec, [Message("user", f"par {i}")])
                await asyncio.sleep(upstream_ms / 1000)  # the upstream call
                await pending.result("the reply")

            runs = 10
            seq_ms = await _median_ms(runs, sequential)
            par_ms = await _median_ms(runs, beside)
            print(f"exchange, upstream {upstream_ms:.0f} ms + judge {judge_ms:.0f} ms:")
            print(f"  judge then upstream:      {seq_ms:7.1f} ms (median of {runs})")
            print(f"  judge beside upstream:    {par_ms:7.1f} ms")
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--judge-ms", type=float, default=150)
    parser.add_argument("--upstream-ms", type=float, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.questions, args.judge_ms, args.upstream_ms))
