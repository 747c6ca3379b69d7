"""The container's exact command line, run here as a process (no image can be built here).

`guardrail serve --config deploy/docker/guardrail.yaml` with a compose replica's environment,
from a folder outside the repository: the probes and /metrics answer on the ports the
Dockerfile, compose file and manifests name, the Dockerfile's own HEALTHCHECK command passes
against it (and fails once it is gone), and the idle process fits the pod's memory request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .deploykit import CONTAINER_CONFIG, container_settings, manifest
from .test_compose import replica_env
from .test_dockerfile import final_stage, one

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

MEBI = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    admin_port: int
    log: Path


def environment() -> tuple[dict[str, str], int, int]:
    """The replica's environment; the manifests' ports when free here, else free ones (said so)."""
    settings = container_settings(replica_env())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    env |= replica_env() | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    port, admin = settings.port, settings.admin_port
    if not all(free(p) for p in (port, admin, settings.demo_port)):
        port, admin = any_free_port(), any_free_port()
        env |= {
            "GUARDRAIL_PORT": str(port),
            "GUARDRAIL_ADMIN_PORT": str(admin),
            "GUARDRAIL_DEMO_PORT": str(any_free_port()),
        }
    return env, port, admin


READ_ONLY = (
    'for m in $(cut -d" " -f2 /proc/self/mounts | sort -u); do '
    'mount -o remount,bind,ro "$m" 2>/dev/null; done; '
    'if touch /tmp/.guardrail-rw-probe 2>/dev/null; then echo "/tmp still writable"; exit 97; fi; '
    'exec "$@"'
)
"""Run a command with every mount of the file system read-only, as a container's
readOnlyRootFilesystem (in a user and mount namespace: no privileges needed)."""


def read_only_wrapper() -> list[str]:
    wrapper = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, "sh"]
    probe = subprocess.run([*wrapper, "true"], check=False, capture_output=True, timeout=10)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("no user namespaces here: cannot make the file system read-only")
    return wrapper


@contextlib.contextmanager
def serve(
    cwd: Path,
    wrapper: list[str] | None = None,
    bin_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Running]:
    """The image's CMD with ``bin_dir``'s guardrail (default: this venv's)."""
    env, port, admin = environment()
    env |= extra_env or {}
    command = ["guardrail", *json.loads(one(final_stage(), "CMD"))]
    command[command.index("--config") + 1] = str(CONTAINER_CONFIG)
    command[0] = str((bin_dir or Path(sys.executable).parent) / "guardrail")
    log = cwd / "guardrail.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*(wrapper or []), *command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{admin}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("guardrail did not become ready in 60 s:\n" + log.read_text())
        yield Running(process, env, port, admin, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def healthcheck(env: dict[str, str]) -> int:
    """Run the Dockerfile's HEALTHCHECK command as Docker would, with the container's env."""
    command = json.loads(one(final_stage(), "HEALTHCHECK").split("CMD", 1)[1])
    command[0] = sys.executable if command[0] == "python" else command[0]
    return subprocess.run(command, check=False, env=env, capture_output=True, timeout=10).returncode


def memory_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, quantity
    return int(match.group(1)) * MEBI[match.group(2)]


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found, status
    return int(found.group(1)) * 1024


def test_the_container_command_serves_probes_metrics_and_the_proxy(tmp_path: Path) -> None:
    deployment = manifest("Deployment", "guardrail")["spec"]["template"]["spec"]["containers"][0]
    with serve(tmp_path) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            path = deployment[probe]["httpGet"]["path"]
            assert httpx.get(admin + path, timeout=5).status_code == 200, probe
        metrics = httpx.get(admin + "/metrics", timeout=5)
        assert metrics.status_code == 200 and "guardrail_build_info" in metrics.text
        reply = httpx.post(
            f"http://127.0.0.1:{running.port}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hello"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert healthcheck(running.env) == 0
        rss = rss_bytes(running.process.pid)
        assert rss < memory_bytes(deployment["resources"]["requests"]["memory"]), rss
        events = [
            json.loads(line)
            for line in running.log.read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(e.get("event") == "serving" for e in events), "logs are JSON lines (log_format)"
    assert running.process.returncode == 0, running.log.read_text()  # SIGTERM: a clean exit
    assert healthcheck(running.env) != 0  # the HEALTHCHECK fails once nothing answers


def test_the_command_refuses_to_start_without_an_upstream(tmp_path: Path) -> None:
    """Without GUARDRAIL_DEMO or GUARDRAIL_UPSTREAM the container stops with a clear error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    command = [
        str(Path(sys.executable).with_name("guardrail")),
        "serve",
        "--config",
        str(CONTAINER_CONFIG),
    ]
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "upstream" in result.stderr and "GUARDRAIL_UPSTREAM" in result.stderr


def test_the_container_command_runs_on_a_read_only_file_system(tmp_path: Path) -> None:
    """readOnlyRootFilesystem / `read_only: true`: guardrail writes nothing to start and serve.
    Every mount is made read-only (the log goes to an open file, like a container's stdout)."""
    with serve(tmp_path, read_only_wrapper()) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        assert httpx.get(admin + "/-/ready", timeout=5).status_code == 200
        reply = httpx.post(
            f"http://127.0.0.1:{running.port}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "I feel so alone"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        reload = httpx.post(admin + "/-/reload", timeout=30)  # a policy reload writes nothing
        assert reload.status_code == 200, reload.text
        assert healthcheck(running.env) == 0
    assert running.process.returncode == 0, running.log.read_text()
    assert "Read-only file system" not in running.log.read_text()
