"""The stream API fed a reply cut at random boundaries gives what the whole reply gives."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail import GuardResult, Holdback, TextGuard, check
from guardrail.policy.model import Case
from guardrail.policy.testing import collect_cases

from tests.kit.policysets import PACK


CASES = collect_cases(PACK)
EARLY_UNLESS = frozenset(
    p.id
    for p in PACK.policies
    if not p.needs_reply and (act := p.action("prepend")) is not None and act.unless is not None
)
"""Prepends decided by the conversation alone but dropped by an ``unless`` that reads the reply."""


def _reads_opening_only(policy_id: str) -> bool:
    action = PACK.policy(policy_id).action("prepend")
    assert action is not None and action.unless is not None
    leaves = {leaf for n in action.unless.names() for leaf in PACK.plan.leaves_of(n)}
    reply = [PACK.plan.detectors[x] for x in leaves if PACK.plan.detectors[x].scope in ("reply", "sentence")]
    return bool(reply) and all(getattr(d, "first_sentences", None) for d in reply)


OPENING_UNLESS = frozenset(p for p in EARLY_UNLESS if _reads_opening_only(p))
"""Of those, the ones whose ``unless`` reads only the reply's opening (``first_sentences``): in
``sentence`` mode the guard waits for that opening, so the stream ends as the whole reply does."""
WHOLE_UNLESS = EARLY_UNLESS - OPENING_UNLESS
"""The ones whose ``unless`` reads the whole reply: in ``sentence`` mode they lead at once (the
documented difference: a reply need not be held whole to decide them)."""


def run(case: Case, pieces: list[str], holdback: Holdback) -> tuple[str, GuardResult]:
    guard = TextGuard(PACK, case.conversation, locale=case.locale, holdback=holdback)
    released = "".join(guard.feed(piece) for piece in pieces)
    result = guard.finish()
    return released + result.tail + result.append, result


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(CASES),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    holdback=st.sampled_from(["sentence", "full", "none"]),
)
def test_random_pieces_give_the_whole_replys_result(
    case: Case, cuts: list[int], holdback: Holdback
) -> None:
    pieces = split(case.reply, cuts)
    assert "".join(pieces) == case.reply
    text, result = run(case, pieces, holdback)
    whole_text, whole = run(case, [case.reply], holdback)
    assert text == whole_text
    assert result.verdict is not None and whole.verdict is not None
    assert result.verdict.hits == whole.verdict.hits
    assert result.verdict.signals == whole.verdict.signals
    verdict = check(PACK, case.conversation, case.reply, locale=case.locale)
    assert [h.policy for h in result.verdict.hits] == [h.policy for h in verdict.hits]
    assert dict(result.verdict.signals) == dict(verdict.signals)
    early_unless = any(h.policy in WHOLE_UNLESS for h in verdict.hits)
    if holdback == "full" or (holdback == "sentence" and not early_unless):
        assert text == verdict.reply  # none releases pieces as they are: annotate and append


@settings(max_examples=100, deadline=None)
@given(
    first=st.sampled_from(CASES),
    second=st.sampled_from(CASES),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_longer_replies_cut_anywhere_match_check(
    first: Case, second: Case, cuts: list[int]
) -> None:
    reply = f"{first.reply} {second.reply}"
    case = Case(first.policy, first.kind, 0, first.conversation, reply, locale=first.locale)
    text, result = run(case, split(reply, cuts), "sentence")
    verdict = check(PACK, first.conversation, reply, locale=first.locale)
    if not any(h.policy in WHOLE_UNLESS for h in verdict.hits):
        assert text == verdict.reply
    assert result.verdict is not None and result.verdict.hits == verdict.hits


def _differing(policies: frozenset[str]) -> list[Case]:
    """The pack's cases that hit one of ``policies`` and end differently streamed (sentence)."""
    out = []
    for case in CASES:
        verdict = check(PACK, case.conversation, case.reply, locale=case.locale)
        ids = {h.policy for h in verdict.hits}
        if ids & policies and run(case, [case.reply], "sentence")[0] != verdict.reply:
            out.append(case)
    return out


def test_the_pack_has_prepends_whose_unless_reads_the_opening() -> None:
    assert {"referral.crisis", "referral.acute.medical"} <= OPENING_UNLESS
    assert "disclosure.asked" in WHOLE_UNLESS


def test_sentence_mode_decides_an_opening_unless_as_the_whole_reply_does() -> None:
    """A crisis line the reply already opens with is not led with again, streamed or not."""
    assert _differing(OPENING_UNLESS - WHOLE_UNLESS) == []


def test_a_whole_reply_unless_leads_at_once_in_sentence_mode() -> None:
    """The documented difference: such a prepend is released before the reply is known."""
    for case in _differing(WHOLE_UNLESS):
        text, result = run(case, [case.reply], "sentence")
        assert result.verdict is not None
        ids = {h.policy for h in result.verdict.hits}
        assert ids & WHOLE_UNLESS, case
        leads = {t for p in ids & WHOLE_UNLESS for ts in _prepends(p) for t in ts}
        assert text.split("\n\n", 1)[0] in leads  # the stream opens with the prepend


def _prepends(policy_id: str) -> list[tuple[str, ...]]:
    action = PACK.policy(policy_id).action("prepend")
    assert action is not None
    return list(action.texts.values())
