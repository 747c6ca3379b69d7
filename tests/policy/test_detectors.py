"""Detectors: phrases, filters (negation, hedging, quotes), scopes and turns (detectors.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.policy.detectors import Leaf, TextView
from guardrail.policy.prefilter import LiteralScanner

from .conftest import user


def _signal(ps: PolicySet, name: str, reply: str = "", conv: Conversation | None = None) -> bool:
    return ps.evaluate(conv or Conversation(), reply).signals[name]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("I will always be here.", True),
        ("I won't always be here, and that's ok.", False),
        ("I will not always be here.", False),
        ("I'm never going to always be here.", False),
        ("I don't know, I will always be here.", True),  # a comma ends the clause
        ("No. I will always be here.", True),  # the negator is in another sentence
        ("I am no longer going to always be here.", False),
        ("Nothing changes: I will always be here.", True),
    ],
)
def test_negation_window(basic: PolicySet, reply: str, expected: bool) -> None:
    assert _signal(basic, "reply.always_here", reply) is expected


def test_negation_drops_you_dont_need(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          reply.need_me: {scope: reply, phrases: [need me], unless_negated: true}
        """)
    )
    assert _signal(ps, "reply.need_me", "You need me to get through this.")
    assert not _signal(ps, "reply.need_me", "You don't need me to get through this.")
    assert not _signal(ps, "reply.need_me", "You don\u2019t need me to get through this.")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("You're absolutely right!", True),
        ("You're absolutely right, but the evidence says otherwise.", False),
        ("That's a great point; however, consider this.", False),
        ("That's a great point though.", False),
        ("You're absolutely right. But that is another matter.", True),  # other sentence
    ],
)
def test_hedging(basic: PolicySet, reply: str, expected: bool) -> None:
    assert _signal(basic, "reply.praise", reply) is expected


def test_hedging_in_context_scope_stays_in_the_sentence(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          user.sad: {scope: last_user, phrases: [sad], unless_hedged: true}
        """)
    )
    assert not _signal(ps, "user.sad", conv=user("I was sad but now I'm fine"))
    assert _signal(ps, "user.sad", conv=user("I am sad. But whatever."))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('You said "you\'re absolutely right" to me.', False),
        ("You said \u201cyou\u2019re absolutely right\u201d to me.", False),
        ("The phrase 'you're absolutely right' is overused.", False),
        ("I'm sure you're absolutely right, it's true.", True),
        ('"Hi," I said. You\'re absolutely right.', True),
    ],
)
def test_quoted_matches_are_dropped(basic: PolicySet, reply: str, expected: bool) -> None:
    assert _signal(basic, "reply.praise", reply) is expected


def test_quoting_the_user_back(basic: PolicySet) -> None:
    conv = user("you're the only one who understands me")
    reply = 'When you say "the only one who understands you", that sounds lonely.'
    assert not _signal(basic, "reply.always_here", reply, conv)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I feel hopeless", True),
        ("I feel HOPELESS today", True),
        ("hopelessly romantic", False),  # whole words only
        ("I can\u2019t cope", True),  # curly apostrophe
        ("I CAN'T\n   cope", True),  # case and flexible whitespace
        ("I cant cope", False),
        ("I can't coping", False),
    ],
)
def test_word_boundaries_apostrophes_whitespace(
    basic: PolicySet, text: str, expected: bool
) -> None:
    assert _signal(basic, "user.distress", conv=user(text)) is expected


def test_hyphenated_phrases_match_spaced_and_joined(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          user.sh: {scope: last_user, phrases: [self-harm]}
        """)
    )
    for text in ("thinking of self-harm", "thinking of self harm", "thinking of selfharm"):
        assert _signal(ps, "user.sh", conv=user(text)), text
    assert not _signal(ps, "user.sh", conv=user("thinking of myself"))


def test_longest_phrase_wins_and_min_matches_counts_distinct(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          reply.two:
            scope: reply
            phrases: [great, great idea, wonderful]
            min_matches: 2
        """)
    )
    assert not _signal(ps, "reply.two", "Great, great, great.")
    assert _signal(ps, "reply.two", "Great idea. Great.")
    assert _signal(ps, "reply.two", "Great. Truly wonderful.")  # across sentences for reply scope


def test_scopes_and_turns(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          last: {scope: last_user, phrases: [apple]}
          recent2: {scope: user_turns, turns: 2, phrases: [apple]}
          assistant3: {scope: assistant_turns, phrases: [pear]}
          assistant1: {scope: assistant_turns, turns: 1, phrases: [pear]}
          sys: {scope: system, phrases: [plum]}
          rep: {scope: reply, phrases: [apple, pear, plum]}
        """)
    )
    conv = Conversation.of(
        ("system", "plum rules"),
        ("user", "apple"),
        ("assistant", "pear"),
        ("user", "banana"),
        ("assistant", "fig"),
        ("user", "cherry"),
    )
    v = ps.evaluate(conv, "nothing here")
    assert v.signals == {
        "last": False,
        "recent2": False,
        "assistant3": True,
        "assistant1": False,
        "sys": True,
        "rep": False,
    }
    v = ps.evaluate(Conversation(conv.messages[:4]), "")
    assert v.signals["recent2"] and not v.signals["last"]


def test_evidence_points_at_turn_and_span(basic: PolicySet) -> None:
    conv = user("all fine", "I feel worthless")
    v = basic.evaluate(conv, "Okay. I will always be here.")
    by_policy = {h.policy: h for h in v.hits}
    (ev,) = by_policy["referral.missing"].evidence
    assert ev.detector == "user.distress" and ev.turn == 2 and ev.sentence is None
    assert conv.messages[2].content[ev.span[0] : ev.span[1]] == "worthless"
    (ev,) = by_policy["dependency.always"].evidence
    assert ev.sentence == 1 and ev.turn is None
    assert "Okay. I will always be here."[ev.span[0] : ev.span[1]] == "always be here"


def test_sentence_scope_does_not_span_sentences(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write("""\
        detectors:
          s: {scope: sentence, phrases: [stay here]}
        """)
    )
    assert _signal(ps, "s", "Please stay here.")
    assert not _signal(ps, "s", "Please stay. Here we go.")


def test_composite_detectors(basic: PolicySet) -> None:
    assert basic.evaluate(user("I want to end it all"), "").signals["user.risk"]
    assert not basic.evaluate(user("lovely day"), "").signals["user.risk"]


def test_prefilter_agrees_with_full_regex(write: Callable[..., Path]) -> None:
    ps = load_policies(
        write(r"""
        detectors:
          user.r:
            scope: last_user
            regex:
              - '\bwant(?:s|ed)? to (?:just )?die\b'
              - '(?<!not )\bsuicid(?:al|e)\b'
              - '\b(?:take|took) (?:all )?(?:my|the) pills\b'
              - '\bi (?:am|feel) (?:so )?(?:sad|low|empty)\b'
        """)
    )
    leaf = ps.detectors["user.r"]
    assert isinstance(leaf, Leaf)
    assert all(p is not None for p in leaf.prefilters)
    texts = [
        "i want to die",
        "she wanted to just die",
        "suicidal",
        "not suicidal",
        "took all the pills",
        "i feel so empty",
        "i am low",
        "nothing here",
        "diet",
        "wanted to dine",
        "pillsbury",
    ]
    for text in texts:
        fast = leaf.find(TextView(text, LiteralScanner(leaf.literals)))
        direct = leaf.find(TextView(text))
        assert fast == direct
        slow = [m.span() for p in leaf.patterns for m in p.finditer(text)]
        assert [(s, e) for s, e, _ in fast] == slow, text


def test_quotation_spanning_sentences(basic: PolicySet) -> None:
    reply = 'You wrote: "I hate it. You\'re absolutely right about me. Ugh." I hear you.'
    assert not _signal(basic, "reply.praise", reply)
    reply = 'You wrote: "I hate it." You\'re absolutely right.'
    assert _signal(basic, "reply.praise", reply)


_LITERALS = frozenset(
    ["ab", "abc", "b", "bc", "c d", "die", "kill myself", "myself", "?", "you're", " you", "988"]
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(["a", "b", "c", " ", "d", "?", "die", "you're", "myself", "9", "8"]),
            st.characters(),  # lone surrogates included
        ),
        max_size=30,
    )
)
def test_automaton_and_regex_scanners_find_the_same_literals(parts: list[str]) -> None:
    text = "".join(parts).lower()
    automaton = LiteralScanner(_LITERALS)
    reference = LiteralScanner(_LITERALS, automaton=False)
    assert automaton._automaton is not None  # pyahocorasick, a declared dependency
    assert automaton.present(text) == reference.present(text)
