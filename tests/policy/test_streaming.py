"""Streamed and whole replies give identical verdicts (engine.py + text.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.policy import Conversation, PolicySet, SentenceSplitter, Verdict, load_policies
from guardrail.policy.text import split_sentences

from tests.kit.paths import POLICY_FIXTURES


from .conftest import user

ACTIONS = load_policies(POLICY_FIXTURES / "actions")
BASIC = load_policies(POLICY_FIXTURES / "basic")


def _stream(ps: PolicySet, conv: Conversation, reply: str, cuts: list[int]) -> tuple[str, Verdict]:
    scan = ps.start(conv)
    splitter = SentenceSplitter()
    released: list[str] = []
    last = 0
    for cut in sorted(c % (len(reply) + 1) for c in cuts) + [len(reply)]:
        for sentence in splitter.feed(reply[last:cut]):
            released.append(scan.feed_sentence(sentence))
        last = cut
    rest = splitter.flush()
    if rest:
        released.append(scan.feed_sentence(rest))
    return "".join(released), scan.finish()


def test_feeding_sentences_equals_evaluate() -> None:
    conv = user("I feel hopeless")
    reply = "I will always be here. You're absolutely right!\nTalk soon."
    scan = BASIC.start(conv)
    released = [scan.feed_sentence(s) for s in split_sentences(reply)]
    streamed = scan.finish()
    assert streamed == BASIC.evaluate(conv, reply)
    assert released[0] == "I'm here for this conversation. "
    assert released[1:] == ["You're absolutely right!\n", "Talk soon."]


def test_released_text_equals_reply_when_nothing_changes() -> None:
    reply = "One.  Two?\n\nThree... and four!  "
    joined, verdict = _stream(BASIC, user("hi"), reply, [3, 7, 11])
    assert joined == reply == verdict.reply


_WORDS = [
    "badword",
    "worseword",
    "stopword",
    "hello",
    "fragile",
    "fine",
    "I",
    "will",
    "always",
    "be",
    "here",
    "you're",
    "absolutely",
    "right",
    "but",
    "not",
    "988",
    "sad",
    '"',
    ".",
    "!",
    "?",
    " ",
    "  ",
    "\n",
    ",",
    "Dr.",
    "e.g.",
    "3.5",
    "\u2019",
    "\u201c",
    "\u201d",
]

_replies = st.lists(st.sampled_from(_WORDS), max_size=60).map(
    lambda ws: "".join(
        w if w in '.!?,\n \u2019\u201c\u201d"' or w.startswith(" ") else " " + w for w in ws
    )
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=_replies,
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=10),
    sad=st.booleans(),
)
def test_random_chunking_gives_the_same_verdict(reply: str, cuts: list[int], sad: bool) -> None:
    conv = user("I am sad" if sad else "I feel hopeless" if len(reply) % 2 else "all good")
    for ps in (ACTIONS, BASIC):
        whole = ps.evaluate(conv, reply)
        joined, streamed = _stream(ps, conv, reply, cuts)
        assert streamed == whole
        if not whole.blocked and not any(
            ps.policy(h.policy).action(k) is not None
            for h in whole.hits
            if h.mode == "enforce"
            for k in ("append", "prepend")
        ):
            assert joined == whole.reply
