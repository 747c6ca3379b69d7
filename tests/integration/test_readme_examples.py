"""The README's embedding examples run as written (each Python block on its own, from the repo
root, as a reader would paste it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.kit.paths import ROOT


SECTION = "## Embed it in your own app"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def section(markdown: str, heading: str = SECTION) -> str:
    """The text under ``heading`` up to the next heading of the same level."""
    start = markdown.find(f"\n{heading}\n")
    if start < 0 and markdown.startswith(f"{heading}\n"):
        start = 0
    if start < 0:
        return ""
    rest = markdown[start + len(heading) + 2 :]
    end = re.search(r"^## ", rest, re.MULTILINE)
    return rest if end is None else rest[: end.start()]


def python_blocks(markdown: str) -> list[str]:
    return _BLOCK.findall(section(markdown))


def run_block(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def readme_blocks() -> list[str]:
    return python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_the_embedding_examples() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4, f"README.md needs its '{SECTION}' section with the Python examples"
    text = "\n".join(blocks)
    for name in ("guardrail.check", "TextGuard", "add_middleware(GuardrailMiddleware"):
        assert name in text


BLOCKS = readme_blocks()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("code", BLOCKS, ids=[f"example-{i + 1}" for i in range(len(BLOCKS))])
def test_a_readme_example_runs(code: str) -> None:
    done = run_block(code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_examples_are_found_in_a_section() -> None:
    text = f"# t\n\n{SECTION}\n\n```python\nprint(1)\n```\n\n## Next\n\n```python\nx\n```\n"
    assert python_blocks(text) == ["print(1)\n"]
