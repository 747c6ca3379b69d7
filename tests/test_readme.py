"""The README stays true: its opening commands, and every setting documented."""

from __future__ import annotations

import re

import pytest

from guardrail.config.settings import ENV_PREFIX, KEYS

from tests.kit.paths import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", script, re.MULTILINE)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.name)
def test_every_setting_is_documented(key: object) -> None:
    name = key.name  # type: ignore[attr-defined]
    env = ENV_PREFIX + name.upper().replace(".", "_")
    assert f"`{name}`" in README, f"config key {name} missing from README"
    assert f"`{env}`" in README, f"environment variable {env} missing from README"
    flag = key.flag  # type: ignore[attr-defined]
    if flag:
        assert f"`{flag}`" in README, f"flag {flag} missing from README"
