"""The built wheel works on its own: installed into a fresh venv outside the repository and run
from another working directory, it has the default pack (issue 13, item 1).

Before, the wheel shipped no policy files and the code looked for them one folder above the
installed package, so ``guardrail serve --demo``, ``guardrail test`` and ``guardrail check``
failed with ``.../site-packages/policies: no such policy file or folder``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the bin folder of a fresh venv it is installed into)."""
    where = tmp_path_factory.mktemp("wheel")
    source = where / "source"  # a clean copy: setuptools would reuse a stale build/ in the tree
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(source)],
        check=True, cwd=where, capture_output=True,
    )  # fmt: skip
    [wheel] = where.glob("guardrail-*.whl")
    env_dir = where / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True, cwd=where, capture_output=True,
    )  # fmt: skip
    yield wheel, bin_dir


def test_every_package_of_the_source_tree_is_in_the_wheel(built: tuple[Path, Path]) -> None:
    """pyproject.toml lists the packages by hand (the pack maps policies/ to guardrail.pack): a
    package added to the source tree and not to that list would be missing from the wheel."""
    wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "guardrail").rglob("__init__.py")}
    shipped = {name.rsplit("/", 1)[0] for name in names if name.endswith("/__init__.py")}
    assert packages <= shipped, packages - shipped
    pack = {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert pack and pack <= {Path(n).name for n in names if n.startswith("guardrail/pack/")}


def test_the_installed_wheel_tests_and_checks_with_its_bundled_pack(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """From a folder with no policies/ in sight, ``guardrail test`` passes the bundled pack and
    ``guardrail check`` puts the crisis line first."""
    _, bin_dir = built
    tested = subprocess.run(
        [str(bin_dir / "guardrail"), "test"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " 0 failed" in tested.stdout
    case = {"id": "1", "messages": [{"role": "user", "content": "I want to die."}], "reply": "Ok."}
    checked = subprocess.run(
        [str(bin_dir / "guardrail"), "check", "--jsonl", "-"],
        cwd=tmp_path, input=json.dumps(case) + "\n", capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert [h["policy"] for h in result["hits"]] == ["referral.crisis"]
    assert result["reply"].index("988") < result["reply"].index("Ok.")


def test_the_installed_wheel_serves_the_demo(built: tuple[Path, Path], tmp_path: Path) -> None:
    """``guardrail serve --demo`` from the wheel answers a chat request, guarded by the pack."""
    _, bin_dir = built
    proc = subprocess.Popen(
        [str(bin_dir / "guardrail"), "serve", "--demo", "--port", "0", "--admin-port", "0",
         "--log-format", "json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        listen = _listen_address(proc)
        body = {"model": "guardrail-demo",
                "messages": [{"role": "user", "content": "You are the only one I can talk to."}]}
        reply = httpx.post(f"http://{listen}/v1/chat/completions", json=body, timeout=10)
        assert reply.status_code == 200
        note = reply.json()["guardrail"]
        assert note["inspected"] is True and note["hits"], note
    finally:
        proc.terminate()
        proc.wait(10)


def _listen_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if '"serving"' in line:
            return str(json.loads(line)["listen"])
    raise AssertionError("guardrail serve --demo did not start")


def test_the_installed_wheel_composes_default_with_a_folder_of_ones_own(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """``policies: [default, ./mine]`` from outside the repository: the folder uses the bundled
    pack's signal and resources and turns one of its policies off (issue 13, item 2)."""
    _, bin_dir = built
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.yaml").write_text(
        "policies:\n"
        "  - id: mine.line\n"
        "    category: mine\n"
        "    description: a distressed person gets the crisis line from us too\n"
        "    condition: user.distress\n"
        "    actions: [{append: {text: 'MINE: {crisis_line}'}}]\n"
        "overrides:\n"
        "  policies:\n"
        "    referral.distress: {enabled: false}\n"
    )
    tested = subprocess.run(
        [str(bin_dir / "guardrail"), "test", "default", "./mine"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SKIP referral.distress" in tested.stdout and " 0 failed" in tested.stdout
    case = {"id": "1", "messages": [{"role": "user", "content": "I feel so hopeless."}],
            "reply": "Ok."}
    checked = subprocess.run(
        [str(bin_dir / "guardrail"), "check", "--jsonl", "-", "--policies", "default,./mine"],
        cwd=tmp_path, input=json.dumps(case) + "\n", capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert [h["policy"] for h in result["hits"]] == ["mine.line"]
    assert result["reply"] == "Ok.\n\nMINE: the 988 Suicide & Crisis Lifeline"
