"""Memory per stream is flat: a multi-megabyte streamed reply through a real ``guardrail serve``.

The proxy runs as its own process (so its resident set is its own), in front of the mock upstream
on loopback; the reply is generated lazily by the mock and read and dropped by the client. The
bound is on the proxy's peak resident set (``VmHWM``): an 8 MB stream may not raise it by more
than a fraction of its size over what a 1 MB stream already reached. A bound, not a timing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.paths import STACK_FIXTURES
from tests.kit.servers import Background, free_port
from tests.kit.upstreams import MockAPI, quoted


MB = 1 << 20
SENTENCES = (
    "You are absolutely right about that. Tea is warm and the evening is quiet, caf\u00e9 "
    "\U0001f375. I will always be here for you. A long day ends, and that is fine."
)

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
    pytest.mark.slow,
    pytest.mark.subprocess,
]


def peak_rss(pid: int) -> int:
    """Peak resident set of process ``pid`` in bytes (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def serve(tmp_path: Path, upstream: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    config = tmp_path / "guardrail.yaml"
    config.write_text(
        f"upstream: {upstream}\nport: {port}\nadmin_port: 0\npolicies: {STACK_FIXTURES / 'policies'}\n"
        "audit: {sink: 'off'}\nlog_level: warning\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "guardrail", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.05)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stream(proxy: str, size: int) -> int:
    """Stream a reply of about ``size`` bytes through the proxy; the bytes received."""
    headers = {"x-mock-reply": quoted(SENTENCES), "x-mock-size": str(size), "x-mock-piece": "400"}
    body = {"model": "m", "stream": True,
            "messages": [{"role": "user", "content": "I feel hopeless"}]}
    received, tail = 0, b""
    with httpx.Client(timeout=120) as client, client.stream(
        "POST", proxy + "/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["x-guardrail-inspected"] == "true"
        for chunk in response.iter_raw():
            received += len(chunk)
            tail = (tail + chunk)[-64:]
    assert tail.endswith(b"data: [DONE]\n\n")
    return received


def test_a_multi_megabyte_stream_keeps_the_proxy_memory_flat(tmp_path: Path) -> None:
    background = Background()
    try:
        upstream = background.serve_asgi(MockAPI())
        with serve(tmp_path, upstream) as (proc, proxy):
            stream(proxy, 256 * 1024)  # warm-up: imports, caches, first allocations
            warm = peak_rss(proc.pid)
            stream(proxy, 1 * MB)
            small = peak_rss(proc.pid)
            out = stream(proxy, 8 * MB)
            large = peak_rss(proc.pid)
    finally:
        background.close()
    print(f"\nproxy peak RSS: warm {warm / MB:.1f} MiB, after 1 MB {small / MB:.1f} MiB, "
          f"after 8 MB {large / MB:.1f} MiB ({out / MB:.1f} MiB sent to the client)")
    assert out > 6 * MB  # about half the sentences are removed or replaced, markup added
    assert large - small < 2 * MB  # an 8 MB reply buffered would add at least 8 MB
