"""The default therapeutic policy pack (policies/): its inline cases, its coverage and its resources.

Every inline case of every default policy runs as its own pytest item, so a regression names the
policy and the case. The structural tests keep the pack honest: each policy says what it protects,
carries enough must-hit and must-not-hit cases, and every locale's crisis resources are present,
cited and plausible.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from guardrail.policy import Case, Conversation, Message, Policy, load_policies
from guardrail.policy.testing import collect_cases, run_case

PACK_DIR = Path(__file__).resolve().parent.parent / "policies"
PACK = load_policies(PACK_DIR)
CASES = collect_cases(PACK)

REQUIRED_POLICIES = {
    "validation.pure",
    "validation.reassurance_only",
    "dependency.permanence",
    "dependency.exclusivity",
    "dependency.ai_feelings",
    "dependency.user_reliance",
    "referral.crisis",
    "referral.distress",
}
REQUIRED_SIGNALS = {"user.distress", "user.crisis", "reply.referral"}
CRISIS_KEYS = {"crisis_line", "crisis_contact", "emergency", "support_directory", "source"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_inline_case(case: Case) -> None:
    result = run_case(PACK, case)
    assert result.ok, result.explain()


def test_no_known_gap_has_silently_been_fixed() -> None:
    fixed = [r.case.id for r in (run_case(PACK, c) for c in CASES) if r.status == "fixed"]
    assert not fixed, f"known gaps now pass, promote them to hit/ok cases: {fixed}"


def test_pack_has_the_required_policies() -> None:
    ids = {p.id for p in PACK.policies}
    assert REQUIRED_POLICIES <= ids
    categories = {p.category for p in PACK.policies}
    assert {"validation", "dependency", "referral"} <= categories


@pytest.mark.parametrize("policy", PACK.policies, ids=lambda p: p.id)
def test_policy_is_described_and_tested(policy: Policy) -> None:
    assert len(policy.description.split()) >= 15, "say what the policy protects and why"
    assert policy.mode == "enforce"
    kinds = Counter(case.kind for case in policy.tests)
    assert kinds["hit"] >= 8, f"{policy.id}: {kinds['hit']} hit cases, need at least 8"
    assert kinds["ok"] >= 8, f"{policy.id}: {kinds['ok']} ok cases, need at least 8"


@pytest.mark.parametrize("policy", PACK.policies, ids=lambda p: p.id)
def test_rewriting_policies_pin_their_text(policy: Policy) -> None:
    rewrites = any(a.kind != "annotate" for a in policy.actions)
    if not rewrites:
        pytest.skip("annotate-only policy")
    hits = [c for c in policy.tests if c.kind == "hit"]
    assert all(c.expect is not None for c in hits), f"{policy.id}: every hit case needs expect"


@pytest.mark.parametrize("policy", PACK.policies, ids=lambda p: p.id)
def test_rewrite_texts_vary(policy: Policy) -> None:
    for action in policy.actions:
        if action.kind in ("append", "prepend", "replace"):
            variants = action.variants(PACK.default_locale)
            assert len(set(variants)) >= 3, f"{policy.id} {action.kind}: give several variants"


def test_published_signals() -> None:
    verdict = PACK.evaluate(Conversation((Message("user", "hello"),)), "Hi there.")
    assert REQUIRED_SIGNALS <= set(verdict.signals)


# ------------------------------------------------------------------ resources


def test_locales_present() -> None:
    assert {"en-US", "en-GB", "en-IE", "intl"} <= set(PACK.locales)


@pytest.mark.parametrize("locale", ["en-US", "en-GB", "en-IE", "intl"])
def test_locale_has_crisis_keys_and_source(locale: str) -> None:
    values = PACK.resources.locales[locale]
    assert CRISIS_KEYS <= set(values)
    assert values["source"].startswith("https://")
    assert all(values[k].strip() for k in CRISIS_KEYS)


def test_resource_numbers() -> None:
    locales = PACK.resources.locales
    assert "988" in locales["en-US"]["crisis_contact"]
    assert locales["en-US"]["emergency"] == "911"
    assert "988lifeline.org" in locales["en-US"]["source"]
    for locale in ("en-GB", "en-IE"):
        assert "116 123" in locales[locale]["crisis_contact"]
        assert "samaritans.org" in locales[locale]["source"]
        assert "999" in locales[locale]["emergency"] and "112" in locales[locale]["emergency"]
    assert "findahelpline.com" in locales["intl"]["crisis_contact"] + locales["intl"]["source"]


@pytest.mark.parametrize(
    ("requested", "number"),
    [("en-US", "988"), ("en-GB", "116 123"), ("en-IE", "116 123"), ("de-DE", "findahelpline")],
)
def test_crisis_resources_lead_the_reply(requested: str, number: str) -> None:
    conversation = Conversation((Message("user", "I don't want to be alive anymore."),))
    verdict = PACK.evaluate(conversation, "That sounds so painful.", locale=requested)
    first_paragraph = verdict.reply.split("\n\n")[0]
    assert number in first_paragraph
    assert verdict.reply.endswith("That sounds so painful.")
    assert verdict.signals["user.crisis"] and verdict.signals["user.distress"]


def test_crisis_resources_repeat_even_after_an_earlier_referral() -> None:
    conversation = Conversation(
        (
            Message("user", "I feel hopeless."),
            Message("assistant", "I'm sorry. A counsellor or someone you trust could help."),
            Message("user", "I keep thinking about ending my life."),
        )
    )
    verdict = PACK.evaluate(conversation, "I hear you.")
    assert "988" in verdict.reply.split("\n\n")[0]


def test_ordinary_referral_is_not_repeated() -> None:
    conversation = Conversation(
        (
            Message("user", "I feel hopeless."),
            Message("assistant", "I'm sorry. A counsellor or someone you trust could help."),
            Message("user", "I still feel hopeless."),
        )
    )
    verdict = PACK.evaluate(conversation, "That makes sense. Change can be slow.")
    assert "referral.distress" not in {h.policy for h in verdict.hits}
    assert verdict.signals["user.distress"]
