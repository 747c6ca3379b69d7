"""Engine features for position, composition, nudges and second attempts: ``none_of``,
``at_least``, ``first_sentences``, per-branch prefilters, one append per category, ``unless``
on end texts, ``regenerate`` requests, variant choice, and evidence that names its cause."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail.policy import Conversation, PolicySet, SentenceSplitter, load_policies
from guardrail.policy.detectors import Leaf
from guardrail.policy.regexshape import first_char_hint, split_branches
from guardrail.policy.rewrite import choose_variant

from .conftest import user

RESOURCES = """\
resources:
  default_locale: en-US
  locales:
    en-US: {crisis_line: Lifeline, crisis_contact: call 988, source: "https://988lifeline.org/"}
    en-GB: {crisis_line: Samaritans, crisis_contact: call 116 123, source: "https://samaritans.org/"}
"""


def _load(write: Callable[..., Path], text: str) -> PolicySet:
    return load_policies(write(textwrap.dedent(text) + RESOURCES))


# ------------------------------------------------------------------ composites


def test_none_of_and_at_least(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.tired: {scope: last_user, phrases: [tired]}
          user.alone: {scope: last_user, phrases: [alone]}
          user.crying: {scope: last_user, phrases: [crying]}
          user.two_of: {any_of: [user.tired, user.alone, user.crying], at_least: 2}
          user.calm: {none_of: [user.tired, user.alone, user.crying]}
        """,
    )

    def signals(text: str) -> tuple[bool, bool]:
        v = ps.evaluate(user(text), "ok")
        return v.signals["user.two_of"], v.signals["user.calm"]

    assert signals("a sunny day") == (False, True)
    assert signals("so tired") == (False, False)
    assert signals("tired and alone") == (True, False)
    assert signals("tired, alone and crying") == (True, False)


# ------------------------------------------------------------------ position


def test_first_sentences_limits_a_reply_detector(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          reply.line_first:
            scope: reply
            first_sentences: 2
            phrases: [lifeline]
          reply.line_anywhere: {scope: reply, phrases: [lifeline]}
        """,
    )
    early = "\n\nPlease call the Lifeline. I'm here. More text."
    late = "I hear you. That is a lot. Please call the Lifeline."
    v = ps.evaluate(user("x"), early)
    assert v.signals["reply.line_first"] and v.signals["reply.line_anywhere"]
    v = ps.evaluate(user("x"), late)
    assert not v.signals["reply.line_first"] and v.signals["reply.line_anywhere"]
    # the same verdict when the text arrives in pieces
    scan = ps.start(user("x"))
    splitter = SentenceSplitter()
    for piece in (late[:5], late[5:21], late[21:]):
        for sentence in splitter.feed(piece):
            scan.feed_sentence(sentence)
    scan.feed_sentence(splitter.flush())
    assert scan.finish().signals == v.signals


def test_unless_drops_a_prepend_the_reply_already_leads_with(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.risk: {scope: last_user, phrases: [hopeless]}
          reply.leads: {scope: reply, first_sentences: 1, phrases: [lifeline]}
        policies:
          - id: crisis
            category: referral
            description: leads with the crisis line
            severity: critical
            condition: user.risk
            actions:
              - prepend: {text: "Call {crisis_line}: {crisis_contact}.", unless: reply.leads}
        """,
    )
    (policy,) = ps.policies
    assert not policy.needs_reply  # a stream guard can still decide it before the reply
    v = ps.evaluate(user("hopeless"), "I hear you.")
    assert v.reply == "Call Lifeline: call 988.\n\nI hear you."
    v = ps.evaluate(user("hopeless"), "Please call the Lifeline now. I hear you.")
    assert v.reply == "Please call the Lifeline now. I hear you." and not v.changed
    assert [h.policy for h in v.hits] == ["crisis"]  # still a hit, only the text is dropped
    v = ps.evaluate(user("hopeless"), "I hear you. Please call the Lifeline now.")
    assert v.reply.startswith("Call Lifeline")


# ------------------------------------------------------------------ prefilters


def test_split_branches_respects_groups_classes_and_escapes() -> None:
    assert split_branches(r"ab|c(d|e)") == ["ab", "c(d|e)"]
    assert split_branches(r"[|x]y|\|z") == ["[|x]y", r"\|z"]
    assert split_branches(r"(?i)one|two") == ["(?i)one", "(?i)two"]
    assert split_branches("plain") == ["plain"]


def test_top_level_alternation_gets_a_prefilter_per_branch(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          reply.either:
            scope: reply
            regex: ['\\bsunrise\\b|\\bmoonlight\\b|\\b[a-z]{12,}\\b']
          reply.counted:
            scope: reply
            min_matches: 2
            regex: ['\\bsunrise\\b|\\bmoonlight\\b|\\b[a-z]{12,}\\b']
        """,
    )
    either = ps.detectors["reply.either"]
    counted = ps.detectors["reply.counted"]
    assert isinstance(either, Leaf) and isinstance(counted, Leaf)
    # the whole has no literal every match needs (the last branch has none); split, the first
    # two branches each get one and only the last runs on every text
    assert len(either.patterns) == 3 and counted.prefilters == (None,)
    assert either.prefilters[0] == ("sunrise",) and either.prefilters[1] == ("moonlight",)
    assert either.prefilters[2] is None
    assert len(counted.patterns) == 1  # min_matches counts matches of the whole regex
    assert ps.evaluate(user("x"), "by moonlight").signals["reply.either"]
    assert ps.evaluate(user("x"), "extraordinarily").signals["reply.either"]
    assert ps.evaluate(user("x"), "sunrise then moonlight").signals["reply.counted"]


def test_long_phrase_lists_are_split_into_tries_that_keep_a_prefilter(
    write: Callable[..., Path],
) -> None:
    words = [f"zq{i:03d}word" for i in range(300)] + ["panic attack", "panic attacks"]
    ps = _load(
        write,
        "detectors:\n  user.many:\n    scope: last_user\n    phrases: [" + ", ".join(words) + "]\n",
    )
    leaf = ps.detectors["user.many"]
    assert isinstance(leaf, Leaf) and len(leaf.patterns) == 3 and all(leaf.prefilters)
    assert ps.evaluate(user("then zq299word came"), "ok").signals["user.many"]
    v = ps.evaluate(user("more panic attacks lately"), "ok")
    assert v.signals["user.many"]
    (hit_span,) = [
        e.span for e in ps.start(user("more panic attacks lately"))._context_evidence["user.many"]
    ]
    assert hit_span == (5, 18)  # the longest phrase wins


# ------------------------------------------------------------------ nudges do not stack

NUDGES = """\
detectors:
  user.sad: {scope: last_user, phrases: [sad]}
  user.lonely: {scope: last_user, phrases: [lonely]}
policies:
  - id: nudge.a
    category: dependency
    description: a nudge
    severity: high
    condition: user.sad
    actions: [{append: {text: "Nudge A."}}]
  - id: nudge.b
    category: dependency
    description: another nudge of the same kind
    severity: medium
    condition: user.sad or user.lonely
    actions: [{append: {text: "Nudge B."}}]
  - id: check.c
    category: validation
    description: a different kind of addition
    severity: low
    condition: user.sad
    actions: [{append: {text: "Check C."}}]
"""


def test_at_most_one_append_per_category(write: Callable[..., Path]) -> None:
    ps = _load(write, NUDGES)
    v = ps.evaluate(user("sad"), "Hello.")
    assert [h.policy for h in v.hits] == ["nudge.a", "nudge.b", "check.c"]
    assert v.reply == "Hello.\n\nNudge A.\n\nCheck C."
    scan = ps.start(user("sad"), keep_text=False)
    scan.feed_sentence("Hello.")
    scan.finish()
    assert scan.end_texts.appends == ("Nudge A.", "Check C.")
    # the less severe nudge speaks when it is the only one of its kind
    assert ps.evaluate(user("lonely"), "Hello.").reply == "Hello.\n\nNudge B."


# ------------------------------------------------------------------ regenerate

REGEN = """\
detectors:
  reply.praise: {scope: sentence, phrases: [brilliant]}
  user.crisis: {scope: last_user, phrases: [end it all]}
policies:
  - id: v.pure
    category: validation
    description: praise only
    severity: medium
    condition: reply.praise
    actions: [annotate, {append: {text: "What matters most to you here?"}}]
    regenerate:
      instruction: >
        Reflect back what you heard in your own words,
        and ask whether you understood.
  - id: r.crisis
    category: referral
    description: crisis
    severity: critical
    condition: user.crisis
    actions: [{prepend: {text: "{crisis_line}: {crisis_contact}."}}]
    regenerate:
      instruction: "Begin with {crisis_line} ({crisis_contact}), then respond with care."
      fallback: prepend
  - id: v.shadow
    category: validation
    description: shadow mode never asks for anything
    severity: low
    mode: shadow
    condition: reply.praise
    regenerate: {instruction: "never sent"}
"""


def test_regenerate_requests_are_exposed_with_their_fallback(write: Callable[..., Path]) -> None:
    ps = _load(write, REGEN)
    assert ps.policy("v.pure").fallback == "append"  # default: its strongest action
    v = ps.evaluate(user("I want to end it all"), "What a brilliant plan.", locale="en-GB")
    assert [(r.policy, r.fallback) for r in v.regenerate] == [
        ("r.crisis", "prepend"),
        ("v.pure", "append"),
    ]
    assert v.regenerate[0].instruction == (
        "Begin with Samaritans (call 116 123), then respond with care."
    )
    assert v.regenerate[1].instruction == (
        "Reflect back what you heard in your own words, and ask whether you understood."
    )
    assert v.regenerate_instruction().startswith("Begin with Samaritans")
    assert v.regenerate_instruction().count("\n\n") == 1
    # the reply already holds the fallback: the template actions applied
    assert v.reply == (
        "Samaritans: call 116 123.\n\nWhat a brilliant plan.\n\nWhat matters most to you here?"
    )
    assert v.regenerate[1].to_dict() == {
        "policy": "v.pure",
        "instruction": v.regenerate[1].instruction,
        "fallback": "append",
    }


def test_regenerate_in_streams_and_absent_without_hits(write: Callable[..., Path]) -> None:
    ps = _load(write, REGEN)
    assert ps.evaluate(user("hello"), "Fine.").regenerate == ()
    scan = ps.start(user("hello"), keep_text=False)
    scan.feed_sentence("A brilliant idea.")
    v = scan.finish()
    assert (
        [r.policy for r in scan.end_texts.regenerate]
        == ["v.pure"]
        == [r.policy for r in v.regenerate]
    )


def test_a_second_reply_is_judged_by_the_same_policies(write: Callable[..., Path]) -> None:
    """The contract the proxy follows: accept the second reply when no requesting policy hits
    it again, else send the first verdict's reply (the fallback)."""
    ps = _load(write, REGEN)
    conv = user("Here is my plan.")
    first = ps.evaluate(conv, "A brilliant plan.")
    wanted = {r.policy for r in first.regenerate}
    good = ps.evaluate(conv, "You want to start next week. Did I get that right?")
    bad = ps.evaluate(conv, "Truly brilliant.")
    assert not wanted & {h.policy for h in good.hits}
    assert wanted & {h.policy for h in bad.hits}


# ------------------------------------------------------------------ variants


def test_variant_choice_varies_with_the_latest_message_and_skips_used_ones() -> None:
    variants = ["One.", "Two.", "Three.", "Four."]
    picks = {choose_variant(variants, "p", 3, [], salt=f"message {i}") for i in range(12)}
    assert len(picks) >= 3  # not fixed by the conversation length alone
    same = choose_variant(variants, "p", 3, [], salt="same")
    assert choose_variant(variants, "p", 3, [], salt="same") == same  # deterministic
    earlier = [v.lower() for v in variants if v != "Three."]
    assert choose_variant(variants, "p", 3, earlier, salt="anything") == "Three."
    assert choose_variant(variants, "p", 3, [v.lower() for v in variants], salt="x") in variants


def test_engine_skips_a_variant_said_in_an_earlier_turn(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.sad: {scope: last_user, phrases: [sad]}
        policies:
          - id: n
            category: referral
            description: nudge
            severity: low
            condition: user.sad
            actions: [{append: {text: ["First nudge.", "Second nudge."]}}]
        """,
    )
    conv = Conversation.of(("user", "sad"))
    said = ps.evaluate(conv, "Hi.").reply.split("\n\n")[1]
    later = Conversation.of(("user", "sad"), ("assistant", "Hi.\n\n" + said), ("user", "sad"))
    other = ps.evaluate(later, "Hi.").reply.split("\n\n")[1]
    assert {said, other} == {"First nudge.", "Second nudge."}


# ------------------------------------------------------------------ evidence


def test_evidence_names_only_what_made_the_condition_true(write: Callable[..., Path]) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.sad: {scope: last_user, phrases: [sad]}
          user.tired: {scope: last_user, phrases: [tired]}
          reply.help: {scope: reply, phrases: [counsellor]}
          reply.none: {none_of: [reply.help]}
          reply.praise: {scope: sentence, phrases: [brilliant]}
          user.low: {any_of: [user.sad, user.tired]}
        policies:
          - id: refer
            category: referral
            description: refer when low
            severity: high
            condition: user.low and reply.none
            actions: [annotate]
          - id: swap
            category: validation
            description: replace praise
            severity: low
            condition: reply.praise and not user.tired
            actions: [{replace: {text: "Say more?"}}]
        """,
    )
    conv = user("so sad today")
    reply = "Brilliant. Have you tried tea? Brilliant again."
    v = ps.evaluate(conv, reply)
    refer = next(h for h in v.hits if h.policy == "refer")
    assert [(e.detector, e.scope, e.turn, e.span) for e in refer.evidence] == [
        ("user.sad", "last_user", 0, (3, 6))
    ]
    swap = next(h for h in v.hits if h.policy == "swap")
    assert [(e.detector, e.sentence) for e in swap.evidence] == [
        ("reply.praise", 0),
        ("reply.praise", 2),
    ]
    for e in swap.evidence:
        assert reply[e.span[0] : e.span[1]].lower() == "brilliant"


@pytest.mark.parametrize("holds", [True, False])
def test_none_of_supports_no_evidence(write: Callable[..., Path], holds: bool) -> None:
    ps = _load(
        write,
        """\
        detectors:
          reply.help: {scope: reply, phrases: [counsellor]}
          reply.none: {none_of: [reply.help]}
        policies:
          - id: p
            category: referral
            description: fires when the reply has no help
            severity: low
            condition: reply.none
        """,
    )
    v = ps.evaluate(user("x"), "hello" if holds else "see a counsellor")
    assert [h.evidence for h in v.hits] == ([()] if holds else [])


# ------------------------------------------------------------------ regex reshaping

HINTED = [
    r"\b(?:sad|upset|low)\b",
    r"(?<!\w)(?:a(?:buse|lone)|broke)(?!\w)",
    r"\bi (?:\w+ )?(?:overdosed|od'd)\b",
    r"(?i)\bx+y|zz",
    r"\b(?:no |zero )?(?:motivation|energy)\b",
    r"\bwhy (?:am i|do i) (?:so |always )?\w+",
]


@pytest.mark.parametrize("pattern", HINTED)
@given(text=st.text(alphabet="abcdeilnorstuxyz' !?.", max_size=60))
def test_first_char_hint_changes_no_match(pattern: str, text: str) -> None:
    plain = re.compile(pattern, re.IGNORECASE)
    hinted = re.compile(first_char_hint(pattern, re.IGNORECASE), re.IGNORECASE)
    assert [m.span() for m in plain.finditer(text)] == [m.span() for m in hinted.finditer(text)]


def test_first_char_hint_shapes() -> None:
    assert first_char_hint(r"\b(?:sad|upset)\b", 0) == r"(?=[su])(?:\b(?:sad|upset)\b)"
    assert first_char_hint(r"(?i)\bx|y", 0) == r"(?i)(?=[xy])(?:\bx|y)"
    assert first_char_hint(r".*\?", 0) == r".*\?"  # any first character: no hint
    assert first_char_hint(r"\b(?:\w+ )?foo", 0) == r"\b(?:\w+ )?foo"


# ------------------------------------------------------------------ message memo


def test_a_message_seen_again_is_not_scanned_again(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.sad: {scope: user_turns, turns: 3, phrases: [sad]}
        """,
    )
    calls: list[str] = []
    original = Leaf.find

    def counting(self: Leaf, view: object, *chosen: object) -> list[tuple[int, int, str]]:
        calls.append(self.name)
        return original(self, view, *chosen)  # type: ignore[arg-type]

    monkeypatch.setattr(Leaf, "find", counting)
    first = Conversation.of(("user", "so sad today"))
    v1 = ps.evaluate(first, "ok")
    later = Conversation.of(("user", "so sad today"), ("assistant", "ok"), ("user", "hello"))
    v2 = ps.evaluate(later, "ok")
    assert v1.signals["user.sad"] and v2.signals["user.sad"]
    assert calls == ["user.sad", "user.sad"]  # the first turn once, "hello" once
    (hit,) = ps.start(later)._context_evidence["user.sad"]
    assert (hit.turn, hit.span) == (0, (3, 6))
    for key, found in ps.memo._entries.items():  # digests and spans only, never text
        assert key[1] not in ("so sad today", "hello")
        assert all(m[2] != "sad" for matches in found.values() for m in matches)


def test_the_memo_is_bounded_and_keeps_no_text() -> None:
    from guardrail.policy.context import MessageMemo

    memo = MessageMemo(size=2)
    for n in range(3):
        memo.put(("user", f"digest{n}"), {"leaf": ((0, 3, "d"),)})
    assert memo.get(("user", "digest0")) is None and memo.get(("user", "digest2")) is not None


def test_a_conversation_still_alive_is_scanned_once(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardrail.policy import context

    ps = _load(
        write,
        """\
        detectors:
          user.sad: {scope: user_turns, turns: 3, phrases: [sad]}
        """,
    )
    looked_up: list[tuple[str, str]] = []
    original = context.MessageMemo.get

    def get(self: context.MessageMemo, key: tuple[str, str]) -> object:
        looked_up.append(key)
        return original(self, key)

    monkeypatch.setattr(context.MessageMemo, "get", get)
    conv = Conversation.of(("user", "so sad today"), ("assistant", "ok"), ("user", "still sad"))
    first = ps.evaluate(conv, "one reply")
    assert len(looked_up) == 2  # both user turns, then the result is remembered
    again = ps.evaluate(conv, "another reply")  # the same conversation object: nothing re-read
    stream = ps.start(conv, keep_text=False)
    assert len(looked_up) == 2
    assert again.signals == first.signals and stream.finish().signals == first.signals
    equal = Conversation.of(*((m.role, m.content) for m in conv.messages))
    assert ps.evaluate(equal, "one reply") == first  # a new object is looked up afresh
    assert len(looked_up) == 4


@pytest.mark.slow
def test_the_conversation_memo_keeps_nothing_alive_and_is_bounded() -> None:
    import gc
    import weakref

    from guardrail.policy.context import ContextResult, ConversationMemo

    memo = ConversationMemo(size=2)
    kept = [Conversation.of(("user", f"text {n}")) for n in range(3)]
    for conv in kept:
        memo.put(conv, ContextResult())
    assert memo.get(kept[0]) is None and memo.get(kept[2]) is not None  # bounded
    gone = Conversation.of(("user", "short-lived"))
    memo.put(gone, ContextResult())
    ref = weakref.ref(gone)
    del gone
    gc.collect()
    assert ref() is None  # the memo did not keep it alive
    later = [Conversation.of(("user", "short-lived")) for _ in range(50)]  # ids get reused
    assert all(memo.get(conv) is None for conv in later)


def test_a_context_detector_that_raises_is_not_remembered(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = _load(
        write,
        """\
        detectors:
          user.sad: {scope: last_user, phrases: [sad]}
        """,
    )
    original = Leaf.find

    def failing(self: Leaf, view: object, *chosen: object) -> list[tuple[int, int, str]]:
        raise RuntimeError("boom")

    monkeypatch.setattr(Leaf, "find", failing)
    conv = user("so sad")
    assert not ps.evaluate(conv, "ok").signals["user.sad"]  # absent, published as false
    assert ps.conversations.get(conv) is None and ps.start(conv)._failed == {
        "user.sad": "RuntimeError"
    }
    monkeypatch.setattr(Leaf, "find", original)
    assert ps.evaluate(conv, "ok").signals["user.sad"]  # scanned again once it works


@given(
    turns=st.lists(st.sampled_from(["One.", "two  ONE.", "Three\nfour", "x", " ", ""]), max_size=4),
    variant=st.sampled_from(["One.", "Two ONE.", "three four", "Four.", "one. two", ""]),
)
def test_earlier_turns_say_what_the_collapsed_texts_say(turns: list[str], variant: str) -> None:
    from guardrail.policy.rewrite import EarlierTurns
    from guardrail.policy.text import normalise

    key = " ".join(normalise(variant).split())
    collapsed = [" ".join(normalise(t).split()) for t in turns]
    assert EarlierTurns(turns).said(key) == any(key in turn for turn in collapsed)
