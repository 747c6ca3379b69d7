"""The engine's public surface is its ``__all__`` (what other parts of guardrail code against)."""

from __future__ import annotations

import dataclasses

from guardrail import policy
from guardrail.policy import testing


def test_all_names_exist() -> None:
    assert sorted(policy.__all__) == sorted(set(policy.__all__))
    for name in policy.__all__:
        assert hasattr(policy, name), name
    for name in testing.__all__:
        assert hasattr(testing, name), name


def test_spec_interface_is_present() -> None:
    for name in (
        "Message",
        "Conversation",
        "PolicySet",
        "Verdict",
        "Hit",
        "Evidence",
        "load_policies",
    ):
        assert name in policy.__all__
    for cls in (
        policy.Message,
        policy.Conversation,
        policy.Verdict,
        policy.Hit,
        policy.Evidence,
        policy.Policy,
        policy.Case,
    ):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[union-attr]
    assert [f.name for f in dataclasses.fields(policy.Evidence)] == [
        "detector",
        "scope",
        "span",
        "turn",
        "sentence",
    ]
    assert [f.name for f in dataclasses.fields(policy.Hit)] == [
        "policy",
        "category",
        "severity",
        "mode",
        "action",
        "evidence",
        "error",
        "constructs",
        "facts",
    ]
    assert [f.name for f in dataclasses.fields(policy.Verdict)] == [
        "reply",
        "hits",
        "signals",
        "changed",
        "blocked",
        "strongest_action",
        "locale",
        "regenerate",
        "skipped",
        "records",
        "judges_unanswered",
    ]
