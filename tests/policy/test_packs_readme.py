"""The README's worked example of composing policies with the default pack runs as written.

The subsection's YAML blocks are written to files (each block's first line, ``# path``, names
its file), its sh block runs under ``bash -e`` with this environment's ``guardrail`` first on the
PATH, and every fragment of its ``# `` output lines (split at ``...``) must appear in the output,
in order. The config file is then served over HTTP into the app.
"""

from __future__ import annotations

import pytest

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import httpx

from guardrail.proxy.app import build_app
from guardrail.policy import load_policies
from guardrail.config.loading import load_settings

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Compose your own policies with the default pack"
_BLOCK = re.compile(r"^```(yaml|sh)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def subsection(markdown: str, heading: str = SECTION) -> str:
    """The text under ``heading`` up to the next heading of its level or above ("" if none)."""
    start = markdown.find(f"\n{heading}\n")
    if start < 0:
        return ""
    out: list[str] = []
    fenced = False
    for line in markdown[start + len(heading) + 2 :].splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,3} ", line):  # a comment in a block is no heading
            break
        out.append(line)
    return "".join(out)


def example(text: str) -> tuple[dict[str, str], list[str]]:
    """The files (path -> YAML text) and the sh blocks of a subsection."""
    files: dict[str, str] = {}
    scripts: list[str] = []
    for kind, body in _BLOCK.findall(text):
        if kind == "yaml":
            first = body.splitlines()[0]
            assert first.startswith("# "), f"a YAML block must open with '# <path>': {first!r}"
            files[first[2:].strip()] = body
        else:
            scripts.append(body)
    return files, scripts


def fragments(script: str) -> list[str]:
    """The output a script's ``# `` lines promise, as fragments in order."""
    out: list[str] = []
    for line in script.splitlines():
        if line.startswith("#"):
            out.extend(f.strip() for f in line[1:].split("...") if f.strip())
    return out


def missing(output: str, wanted: list[str]) -> list[str]:
    """The fragments of ``wanted`` not found in ``output`` in that order (from the first miss)."""
    at = 0
    for index, fragment in enumerate(wanted):
        found = output.find(fragment, at)
        if found < 0:
            return wanted[index:]
        at = found + len(fragment)
    return []


def run_example(text: str, where: Path) -> None:
    files, scripts = example(text)
    assert "guardrail.yaml" in files and scripts, "the example needs its config and its commands"
    for name, body in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for script in scripts:
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=where, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert not missing(done.stdout, fragments(script)), missing(done.stdout, fragments(script))


def test_the_helpers_find_blocks_and_fragments_in_order() -> None:
    text = (
        "intro\n\n```yaml\n# a/b.yaml\nx: 1\n```\n\n```sh\necho one two three\n"
        "# one ... three\n```\n"
    )
    assert subsection("# t\n\n### Another\n" + text) == ""
    files, scripts = example(subsection(f"# t\n\n{SECTION}\n{text}### Next\n```sh\nno\n```\n"))
    assert files == {"a/b.yaml": "# a/b.yaml\nx: 1\n"}
    assert scripts == ["echo one two three\n# one ... three\n"]
    assert fragments(scripts[0]) == ["one", "three"]
    assert missing("one two three", ["one", "three"]) == []
    assert missing("three two one", ["one", "three"]) == ["three"]  # order counts


README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.subprocess
def test_the_readme_example_runs_and_serves(tmp_path: Path) -> None:
    assert SECTION in README, "the README lost its 'Compose your own policies' subsection"
    run_example(subsection(README), tmp_path)
    serve_example(tmp_path)


def serve_example(where: Path) -> None:
    """The example's config, served: a distressed person in the UK gets the clinic's line."""
    settings = load_settings(env={}, config=where / "guardrail.yaml")
    answer = json.dumps({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Our clinic hours are 9 to 5, Monday to Friday."}}],
    }).encode()  # fmt: skip
    upstream = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(answer)
        )
    )
    app = build_app(settings, load_policies(settings.policies), transport=upstream)
    body = {"model": "m", "messages": [{"role": "user", "content": "I'm running on fumes."}]}

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as c:
            return await c.post("/v1/chat/completions", json=body,
                                headers={"x-guardrail-locale": "en-GB"})

    res = anyio.run(post)
    assert res.status_code == 200, res.text
    assert res.json()["choices"][0]["message"]["content"].endswith(
        "Until we open, Shout is there: text SHOUT to 85258."
    )
