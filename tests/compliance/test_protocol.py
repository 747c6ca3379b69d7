"""``guardrail protocol``: the active policy set as a readable protocol (SB 243 asks for a
published one), in Markdown and HTML, described in words, with every locale's crisis lines."""

from __future__ import annotations

import pytest

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import yaml

from guardrail.cli import main
from guardrail.policy import load_policies
from guardrail.config.settings import DEFAULT_POLICIES
from tests.kit.paths import OPS_POLICIES

PACK = load_policies(DEFAULT_POLICIES)


def protocol(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["protocol", *args])
    return status, out.getvalue(), err.getvalue()


def _regexes(folder: Path) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "regex":
                    found.extend(value if isinstance(value, list) else [value])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in sorted(folder.glob("*.yaml")):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


def test_every_policy_every_locale_and_its_sources_in_markdown() -> None:
    status, text, _ = protocol()
    assert status == 0 and text.startswith("# Crisis and safety protocol\n")
    for policy in PACK.policies:
        assert f"`{policy.id}`" in text, policy.id
    for locale, values in PACK.resources.locales.items():
        for key, value in values.items():
            if key.endswith(("_line", "_contact", "source")):
                escaped = re.sub(r"([\\`*_\[\]<>|~&])", r"\\\1", value)
                assert escaped in text, (locale, key)
    crisis = text.index("## When someone may be in crisis")
    other = text.index("## Other support and safety policies")
    assert crisis < text.index("`referral.crisis`") < text.index("`referral.acute.medical`") < other
    assert other < text.index("`dependency.exclusivity`")
    assert "suicidal ideation" in text[crisis:other]  # constructs, in words
    assert "not legal advice" in text and PACK.digest in text


def test_detection_is_described_in_words_never_by_its_patterns() -> None:
    patterns = [p for p in _regexes(DEFAULT_POLICIES) if len(p) >= 12]
    assert len(patterns) > 20
    for fmt in ("markdown", "html"):
        _, text, _ = protocol("--format", fmt)
        for pattern in patterns:
            assert pattern not in text, pattern
        assert "(?:" not in text and "\\b" not in text


def test_reply_texts_follow_the_chosen_locale() -> None:
    _, gb, _ = protocol("--locale", "en-GB")
    _, us, _ = protocol()
    gb_policies = gb.split("## Crisis resources")[0]
    us_policies = us.split("## Crisis resources")[0]
    assert "Samaritans: call 116 123 free" in gb_policies and "988" not in gb_policies
    assert "call or text 988" in us_policies and "116 123" not in us_policies


def test_html_is_a_whole_page_and_escapes_what_policies_say(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    for path in OPS_POLICIES.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        text = text.replace(
            "description: lead with the crisis line when the user is in crisis",
            'description: "lead <script>alert(1)</script> & say it | *now*"',
        )
        (folder / path.name).write_text(text, encoding="utf-8")
    status, page, _ = protocol("--policies", str(folder), "--format", "html")
    assert status == 0 and page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; say" in page
    _, markdown, _ = protocol("--policies", str(folder))
    assert "\\<script\\>" in markdown and "\\| \\*now\\*" in markdown
    # the fixture's own crisis policy adds the crisis line: it is listed as a crisis referral
    crisis = markdown.split("## Other support")[0]
    assert "`ops.crisis`: another crisis" in crisis
    assert "Trial (shadow mode)" in markdown.split("`ops.agree_shadow`")[1]
    assert "held back" not in markdown.split("`ops.dependency`")[1].split("###")[0]


@pytest.mark.subprocess
def test_bad_locale_and_missing_policies_are_clear_errors(tmp_path: Path) -> None:
    status, _, err = protocol("--locale", "xx-XX")
    assert status == 2 and "xx-XX" in err and "en-GB" in err
    done = subprocess.run(
        [sys.executable, "-m", "guardrail", "protocol", "--policies", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "none" in done.stderr and not done.stdout


@pytest.mark.subprocess
def test_a_real_process_writes_html() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "guardrail", "protocol", "--format", "html"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "<h2>When someone may be in crisis</h2>" in done.stdout
    assert "<code>referral.crisis</code>" in done.stdout
