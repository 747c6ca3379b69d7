"""Does one huge request degrade the other clients? (issue 11, item 3)

    python -m bench.isolation [--mb 16] [--turn-kb 256] [--small 100] [--no-pin] [--no-limit]

Starts the mock upstream and ``guardrail serve`` (``max_request_bytes`` raised to 64 MiB), then
runs two clients at once: the *big* one sends a chat request whose conversation is ``--mb`` MB
of distress-laden user turns of ``--turn-kb`` KB each (with short assistant turns between),
again and again; the *small* one sends ``--small`` ordinary chat requests one after another
over one keep-alive connection and times each. The same small run
with no big client first gives the baseline. Prints the small client's p50/p99/max both ways,
how long each big request took, and the proxy's peak resident memory (``VmHWM``).

Processes are pinned as in ``bench.run`` (proxy on core 0, mock and clients on core 1) unless
``--no-pin``. The big client writes from a thread with the body prebuilt, so it costs the
small client's process next to nothing.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.procs import CLIENT_CPU, PROXY_CPU, Proc, free_port, start

__all__ = ["Result", "distress_conversation", "measure", "serve_pair"]

TURN = (
    "I feel so alone and hopeless tonight, I can't cope anymore and nobody would care if I "
    "was gone. Everything is falling apart and I don't know how to keep going. "
)
SMALL = {"model": "m", "messages": [{"role": "user", "content": "How do I boil an egg?"}]}


def distress_conversation(size: int, turn_bytes: int = 4096) -> bytes:
    """A Chat Completions request body of about ``size`` bytes: alternating distress-laden user
    turns of about ``turn_bytes`` and short assistant turns, ending on a user turn."""
    turn = TURN * max(1, turn_bytes // len(TURN))
    messages: list[dict[str, str]] = []
    total = 0
    while total < size:
        messages.append({"role": "assistant", "content": "I hear you. Tell me more."})
        messages.append({"role": "user", "content": turn})
        total += len(turn) + 80
    return json.dumps({"model": "m", "messages": messages[1:]}).encode()


@dataclass
class Result:
    """Latencies of the small client (seconds), the big requests' durations and statuses, and
    the proxy's peak resident memory in KiB."""

    small: list[float] = field(default_factory=list)
    big: list[float] = field(default_factory=list)
    big_status: list[int] = field(default_factory=list)
    peak_rss_kib: int = 0

    def p(self, q: float) -> float:
        ordered = sorted(self.small)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _post_raw(url: str, body: bytes) -> int:
    """One POST of ``body`` over a fresh socket (sendall releases the GIL); the status."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json"
        f"\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def measure(proxy: Proc, body: bytes | None, small: int) -> Result:
    """Run the small client (and, with ``body``, the big one at the same time)."""
    result = Result()
    done = threading.Event()

    def big() -> None:
        while not done.is_set():
            started = time.perf_counter()
            result.big_status.append(_post_raw(proxy.url, body or b""))
            result.big.append(time.perf_counter() - started)

    sender = threading.Thread(target=big, daemon=True) if body is not None else None
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        client.post("/v1/chat/completions", json=SMALL)  # connect and warm up
        if sender is not None:
            sender.start()
            time.sleep(0.3)  # the big body is on its way
        for _ in range(small):
            started = time.perf_counter()
            response = client.post("/v1/chat/completions", json=SMALL)
            result.small.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            time.sleep(0.02)
    done.set()
    if sender is not None:
        sender.join(300)
    result.peak_rss_kib = _peak_rss(proxy.pid)
    return result


@contextmanager
def serve_pair(pin: bool = True, log: Path | None = None, limit: bool = True) -> Iterator[Proc]:
    """The mock upstream and ``guardrail serve`` in front of it (64 MiB request limit; without
    ``limit``, the setting is left out, for builds that predate it)."""
    mock_port, proxy_port = free_port(), free_port()
    mock_cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)]
    mock = start("mock", mock_cmd, mock_port, cpu=CLIENT_CPU if pin else None)
    serve = [sys.executable, "-m", "guardrail", "serve", "--upstream", mock.url]
    serve += ["--port", str(proxy_port), "--admin-port", "0", "--log-level", "warning"]
    env = {"GUARDRAIL_AUDIT_SINK": "off"}
    if limit:
        env["GUARDRAIL_MAX_REQUEST_BYTES"] = "64MiB"
    try:
        proxy = start("guardrail", serve, proxy_port, cpu=PROXY_CPU if pin else None, env=env,
                      log=log)
    except BaseException:
        mock.stop()
        raise
    try:
        yield proxy
    finally:
        proxy.stop()
        mock.stop()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=16.0, help="size of the big conversation")
    parser.add_argument("--small", type=int, default=100, help="small requests per run")
    parser.add_argument("--turn-kb", type=float, default=256.0, help="size of each user turn")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--no-limit", action="store_true", help="build without max_request_bytes")
    args = parser.parse_args(argv)
    body = distress_conversation(int(args.mb * 2**20), int(args.turn_kb * 1024))
    with serve_pair(pin=not args.no_pin, limit=not args.no_limit) as proxy:
        alone = measure(proxy, None, args.small)
        loaded = measure(proxy, body, args.small)
    turns = body.count(b'"role"')
    print(f"big conversation: {len(body) / 2**20:.1f} MiB, {turns} turns")
    for name, run in (("alone", alone), ("with big client", loaded)):
        print(
            f"small client {name}: p50 {_ms(run.p(0.5))}  p99 {_ms(run.p(0.99))}  "
            f"max {_ms(max(run.small))}"
        )
    if loaded.big:
        print(
            f"big requests: {len(loaded.big)}, statuses {sorted(set(loaded.big_status))}, "
            f"median {_ms(statistics.median(loaded.big))}"
        )
    print(f"proxy peak RSS: {loaded.peak_rss_kib / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
