from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from guardrail.policy import Conversation, PolicySet, load_policies

from tests.kit.paths import POLICY_FIXTURES


@pytest.fixture(scope="session")
def basic() -> PolicySet:
    return load_policies(POLICY_FIXTURES / "basic")


@pytest.fixture(scope="session")
def actions() -> PolicySet:
    return load_policies(POLICY_FIXTURES / "actions")


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write dedented YAML to tmp_path/<name> and return the folder."""

    def _write(text: str, name: str = "policy.yaml") -> Path:
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return tmp_path

    return _write


def user(*texts: str) -> Conversation:
    """A conversation of user turns (with short assistant turns between them)."""
    pairs: list[tuple[str, str]] = []
    for i, text in enumerate(texts):
        if i:
            pairs.append(("assistant", "ok"))
        pairs.append(("user", text))
    return Conversation.of(*pairs)
