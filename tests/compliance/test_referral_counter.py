"""``guardrail_crisis_referrals_total`` as the recorder counts it: delivered referrals only, by
locale and kind, labels bounded (the rule is ``guardrail.observe.referrals``)."""

from __future__ import annotations

from guardrail.observe.logs import Exchange
from guardrail.observe.record import Recorder, referral_kinds
from guardrail.policy import Conversation, load_policies
from guardrail.config.settings import DEFAULT_POLICIES
from tests.kit.paths import OPS_POLICIES
from tests.kit.metrics import value

OPS = load_policies(OPS_POLICIES)
CRISIS = Conversation.of(("user", "I want to end it all"))


def referrals(locale: str, kind: str) -> float:
    return value("guardrail_crisis_referrals_total", locale=locale, kind=kind)


def judge(recorder: Recorder, reply: str, locale: str | None = None) -> None:
    verdict = OPS.evaluate(CRISIS, reply, locale=locale)
    ex = Exchange("r", "POST", "/v1/chat/completions", route="/", api="openai.chat")
    recorder.evaluated(ex, OPS, CRISIS, [verdict, None])


def test_kinds_of_the_bundled_pack_and_of_a_custom_crisis_policy() -> None:
    assert referral_kinds(load_policies(DEFAULT_POLICIES)) == {
        "referral.crisis": "suicide_self_harm",
        "referral.acute.medical": "medical",
        "referral.acute.harm_others": "harm_others",
        "referral.crisis.child": "child",
        "referral.crisis.domestic_abuse": "domestic_abuse",
        "referral.crisis.sexual_violence": "sexual_violence",
        "referral.crisis_recent": "crisis_followup",
    }
    assert referral_kinds(OPS) == {"ops.crisis": "other"}  # its prepend carries {crisis_line}


def test_a_delivered_referral_counts_a_blocked_or_shadow_one_does_not() -> None:
    recorder = Recorder([("/", "openai.chat")])
    recorder.install(OPS)
    before = referrals("en-US", "other"), referrals("en-GB", "other")
    judge(recorder, "Thanks for telling me.")
    judge(recorder, "Thanks for telling me.", locale="en-GB")
    judge(recorder, "Here is a forbidden marker.")  # ops.block withholds the whole reply
    assert referrals("en-US", "other") == before[0] + 1
    assert referrals("en-GB", "other") == before[1] + 1
    intl = referrals("intl", "other")
    judge(recorder, "Fine.", locale="de-DE")  # an unknown locale resolves to intl
    assert referrals("intl", "other") == intl + 1
    assert value("guardrail_crisis_referrals_total", locale="de-DE", kind="other") == 0
