"""Processes of a benchmark run: start them pinned to cores, wait until they listen, stop them.

Placement on the 2-core machine (see README.md): the proxy alone on core 0; the mock upstream
and the load client share core 1. On machines with more cores the same two core numbers are
used and the rest stay idle, so figures stay comparable. ``taskset`` execs the command, so the
pid we hold is the server's own (for RSS and py-spy).
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLIENT_CPU",
    "PROXY_CPU",
    "REPO",
    "Proc",
    "cpu_seconds",
    "exit_on_signals",
    "free_port",
    "machine",
    "pinned",
    "proxy_command",
    "rss_kib",
    "start",
]

REPO = Path(__file__).resolve().parent.parent
PROXY_CPU = "0"
CLIENT_CPU = "1" if (os.cpu_count() or 1) > 1 else "0"


def pinned(cmd: Sequence[str], cpu: str | None) -> list[str]:
    """``cmd`` prefixed with ``taskset -c cpu`` when taskset exists and a cpu is given."""
    if cpu is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", cpu, *cmd]


def proxy_command(python: str, target: str, upstream: str, port: int) -> list[str]:
    """The command for a proxy under test.

    ``guardrail``: ``python -m guardrail serve``, exactly as shipped. ``bare``: the bare
    pass-through of :mod:`bench.bare`. Anything else is a string
    of :mod:`bench.proxy_variant` arguments (``"--transport aiohttp --http httptools"``).
    """
    if target == "bare":  # the bare pass-through of issue 12 (bench/bare.py)
        return [python, "-m", "bench.bare", "--upstream", upstream, "--port", str(port)]
    if target == "guardrail":  # the admin listener on a free port, so several can run
        serve = [python, "-m", "guardrail", "serve", "--upstream", upstream, "--port", str(port)]
        return [*serve, "--admin-port", "0"]
    base = [python, "-m", "bench.proxy_variant", "--upstream", upstream, "--port", str(port)]
    return base + shlex.split(target)


def exit_on_signals() -> None:
    """SIGTERM and SIGINT raise SystemExit, so ``with`` blocks stop the servers we started.

    (A background job started by a non-interactive shell ignores SIGINT; this restores it.)
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A started server process and the port it listens on."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to its process group (forked workers too), then SIGKILL after ``timeout``."""
        if self.popen.poll() is not None:
            return
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()


def start(
    name: str,
    cmd: Sequence[str],
    port: int,
    *,
    cpu: str | None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 20.0,
    cwd: Path = REPO,
) -> Proc:
    """Start ``cmd`` pinned to ``cpu`` and return once ``port`` answers HTTP requests.

    Output goes to ``log`` (or is discarded); ``cwd`` is the working directory (the checkout
    whose modules ``python -m`` finds first). Raises RuntimeError if the process exits or does
    not listen within ``timeout`` seconds.
    """
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    merged = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    popen = subprocess.Popen(
        pinned(cmd, cpu), stdout=out, stderr=out, env=merged, cwd=cwd, start_new_session=True
    )
    proc = Proc(name, popen, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            why = _tail(log) if log else _rerun(cmd, merged)
            raise RuntimeError(f"{name} exited with {popen.returncode}: {why}")
        if _answers(port):
            return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s (log: {log})")


def _answers(port: int) -> bool:
    """Whether an HTTP request to ``port`` gets a status line (listening is not enough: a
    server may accept connections before its app has finished loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-800:].strip()


def _rerun(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """Output of a failed start-up, run again to capture it (servers' output is discarded)."""
    try:
        done = subprocess.run(
            cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return "(no error on a second try)"
    return (done.stderr or done.stdout)[-800:].strip()


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process ``pid`` has used so far, in seconds (Linux
    ``/proc``). Read around a load run, it gives the server's own CPU per request, which
    other processes on the machine disturb far less than its wall-clock figures."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine(python: str = sys.executable) -> dict[str, str]:
    """The machine's details printed with every result: cores, CPU, versions, load."""
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": _version([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "wrk": _version(["wrk", "--version"]),
        "load": " ".join(f"{x:.2f}" for x in load),
    }
