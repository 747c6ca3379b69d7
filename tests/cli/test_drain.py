"""SIGTERM drains (issue 13, items 3 and 4): a real ``guardrail serve --demo`` process, a stream in
flight from its demo upstream, then SIGTERM. The proxy stops accepting, ``/-/ready`` answers 503
``draining`` while the stream finishes, and the process exits 0; past ``drain_timeout`` what is
left is cut and the process still exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.kit.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

WORDS = 120  # the demo sends one word every 30 ms: a stream of about 3.6 s
LONG_REPLY = " ".join(f"word{i}" for i in range(WORDS))


@contextmanager
def serving(drain_timeout: float) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    port, admin = free_port(), free_port()
    env = {**os.environ, "GUARDRAIL_DRAIN_TIMEOUT": str(drain_timeout), "GUARDRAIL_AUDIT_SINK": "off"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "guardrail", "serve", "--demo", "--port", str(port),
         "--admin-port", str(admin), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    proxy, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{admin_url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.05)
        yield proc, proxy, admin_url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _stream(proxy: str, started: threading.Event, out: dict[str, object]) -> None:
    body = {"model": "guardrail-demo", "stream": True,
            "messages": [{"role": "user", "content": "Hello"}]}  # fmt: skip
    text, done = "", False
    try:
        with httpx.stream("POST", f"{proxy}/v1/chat/completions", json=body, timeout=30,
                          headers={"x-demo-reply": LONG_REPLY}) as response:  # fmt: skip
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
                    started.set()
    except httpx.HTTPError as exc:
        out["error"] = type(exc).__name__
    out["text"], out["done"] = text, done
    started.set()


def test_sigterm_drains_a_stream_in_flight_then_exits_0() -> None:
    """A kubelet's SIGTERM while a person's reply is streaming: the reply finishes whole, the
    probe says draining meanwhile, no new connection is taken, and the exit status is 0."""
    with serving(drain_timeout=25) as (proc, proxy, admin):
        started, out = threading.Event(), {}
        client = threading.Thread(target=_stream, args=(proxy, started, out))
        client.start()
        assert started.wait(10)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(f"{admin}/-/ready", timeout=2)
        assert (ready.status_code, ready.json()["status"]) == (503, "draining")
        with pytest.raises(httpx.ConnectError):  # the proxy listener takes no new connection
            httpx.get(f"{proxy}/v1/models", timeout=2)
        client.join(30)
        assert proc.wait(30) == 0
    assert out.get("done") is True, out.get("error")
    assert all(f"word{i}" in str(out["text"]) for i in range(WORDS))


def test_past_drain_timeout_what_is_left_is_cut_and_the_exit_is_still_0() -> None:
    """A stream longer than the grace period is cut when it ends; the process does not hang."""
    with serving(drain_timeout=0.5) as (proc, proxy, _admin):
        started, out = threading.Event(), {}
        client = threading.Thread(target=_stream, args=(proxy, started, out))
        client.start()
        assert started.wait(10)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        stopped = time.monotonic() - signalled
        client.join(10)
    assert out.get("done") is not True  # cut before its end
    assert stopped < WORDS * 0.03  # it did not wait for the whole stream (3.6 s)
