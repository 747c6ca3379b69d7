"""The Dockerfile's build stage, run here on what its COPY lines send (no base image here).

The build stage's COPY sources are copied as .dockerignore lets them into the build context,
its RUN line is run with /opt/guardrail and /wheels moved into a temporary folder, and the
image's CMD is then run from that venv: a wheel built from the context alone, installed (not
editable), serves the probes and the proxy with the pack inside it.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .deploykit import ROOT
from .test_container_command import serve
from .test_dockerfile import instructions


def build_stage() -> list[dict[str, str]]:
    found = instructions()
    starts = [i for i, ins in enumerate(found) if ins["instruction"] == "FROM"]
    return found[starts[0] + 1 : starts[1]]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` lets a path back in."""
    verdict = False
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.removeprefix("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = relative.split("/")
        hit = any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(part, pattern)
            for i, part in enumerate(parts)
        )
        if hit:
            verdict = not negate
    return verdict


def copy_context(source: str, destination: Path) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    origin = ROOT / source
    files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
    sent = [path for path in files if not ignored(path.relative_to(ROOT).as_posix(), patterns)]
    assert sent, f"COPY {source}: nothing in the build context (.dockerignore); docker fails"
    for path in sent:
        target = destination / path.relative_to(origin) if origin.is_dir() else destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("image")
    workdir = where / "src"
    run = []
    for ins in build_stage():
        if ins["instruction"] == "WORKDIR":
            assert ins["value"] == "/src"
        elif ins["instruction"] == "COPY":
            *sources, destination = ins["value"].split()
            for source in sources:
                into = workdir / destination
                copy_context(
                    source, into / Path(source).name if destination.endswith("/") else into
                )
        elif ins["instruction"] == "RUN":
            run.append(ins["value"])
    (script,) = run
    script = script.replace("/opt/guardrail", str(where / "opt")).replace(
        "/wheels", str(where / "wheels")
    )
    script = script.replace("python -m venv", f"{sys.executable} -m venv", 1)
    result = subprocess.run(
        ["sh", "-c", script], check=False, cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 failed" in result.stdout  # the stage ran the bundled pack's own tests
    yield where / "opt" / "bin"


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_build_stage_builds_from_the_context_alone(image_venv: Path) -> None:
    assert not list(image_venv.parent.rglob("*.egg-link")), "an editable install"
    assert list(image_venv.parent.glob("lib/python3*/site-packages/guardrail/pack/*.yaml"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_image_venv_serves_the_container_command(image_venv: Path, tmp_path: Path) -> None:
    with serve(tmp_path, bin_dir=image_venv) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        assert httpx.get(admin + "/-/healthy", timeout=5).status_code == 200
        reply = httpx.post(
            f"http://127.0.0.1:{running.port}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "I feel so alone"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    assert running.process.returncode == 0, running.log.read_text()


def test_dockerignore_rules_as_docker_reads_them() -> None:
    """The helper above follows Docker's last-match-wins rule (or the build test proves little)."""
    patterns = ["*", "!guardrail/", "**/__pycache__"]
    assert ignored("tests/x.py", patterns)
    assert not ignored("guardrail/proxy/app.py", patterns)
    assert ignored("guardrail/__pycache__/app.cpython-311.pyc", patterns)
