"""``guardrail serve`` as a real process, for the tests whose subject is the process (listeners,
signals, reload, drain, what it writes): free loopback ports for the proxy and the admin
listener, output captured to files, stopped (and reaped) at the end of the block.

Also the writable policy folder such tests reload, and a policy file that fails to load.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardrail.config.settings import DEFAULT_POLICIES

from .paths import OPS_POLICIES
from .servers import ThreadedServer
from .upstreams import Recorder

SENTINEL = "SENTINEL-OPS-5c1e77"
BROKEN_POLICY = f"""
policies:
  - id: ops.broken
    category: referral
    description: refers to a detector that does not exist
    severity: low
    condition: reply.nowhere
    tests:
      hit:
        - user: "{SENTINEL} pasted from a real conversation"
          reply: "{SENTINEL}"
"""
"""A policy file that fails to load at line 7 (policy 'ops.broken'); its test case text holds
the sentinel, as if pasted from a real conversation."""


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``GUARDRAIL_*`` variable, plus ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    return {**clean, **(extra or {})}


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate ``proc`` and reap it (killed if it does not exit within ``timeout``)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_guardrail(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m guardrail ARGS`` run to its end, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "guardrail", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
    )


def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the ops policy folder."""
    target = tmp_path / "policies"
    shutil.copytree(OPS_POLICIES, target)
    return target


@dataclass
class Served:
    """A ``guardrail serve`` process: its URLs and everything it wrote."""

    proc: subprocess.Popen[bytes]
    proxy: str
    admin: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def audit(self) -> list[dict[str, Any]]:
        lines = self.stdout.read_text(errors="replace").splitlines()
        return [json.loads(x) for x in lines if x.startswith('{"schema":"guardrail.audit/1"')]


@contextlib.contextmanager
def guardrail_serve(
    tmp_path: Path, upstream: str, policies: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """Run ``guardrail serve`` on free loopback ports (proxy and admin) until the block ends."""
    out, err = tmp_path / "serve.stdout", tmp_path / "serve.stderr"
    command = [
        sys.executable,
        "-m",
        "guardrail",
        "serve",
        "--upstream",
        upstream,
        "--port",
        "0",
        "--admin-port",
        "0",
        "--policies",
        str(policies),
        "--log-format",
        "json",
        *args,
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=clean_env(env))
    try:
        deadline = time.monotonic() + 30
        served = Served(proc, "", "", out, err)
        while not served.events("serving"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"guardrail serve did not start: {served.output()}")
            time.sleep(0.05)
        line = served.events("serving")[0]
        served.proxy, served.admin = f"http://{line['listen']}", f"http://{line['admin']}"
        yield served
    finally:
        stop(proc)


@contextlib.contextmanager
def served(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Served, Recorder]]:
    """``guardrail serve`` (default pack) in front of a :class:`Recorder` upstream."""
    recorder = Recorder()
    with ThreadedServer(recorder) as upstream:
        with guardrail_serve(tmp_path, upstream.url, DEFAULT_POLICIES, env=env) as proc:
            yield proc, recorder
