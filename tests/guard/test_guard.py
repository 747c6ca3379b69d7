"""TextGuard, the incremental text guard (guardrail/guard/text.py), in each holdback mode."""

from __future__ import annotations

import re

import dataclasses
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.guard import GuardResult, TextGuard
from guardrail.policy import Conversation, Verdict
from guardrail.policy.scan import Scan


from .guardkit import (
    CALM,
    CRISIS,
    CRISIS_LINE,
    DISTRESS,
    PIECES,
    POLICIES,
    REFERRAL,
    REPLY,
    replies,
)

REMOVED = "I will always be here for you, no matter what."


def run(
    pieces: Sequence[str], conv: Conversation = DISTRESS, **options: object
) -> tuple[list[str], GuardResult]:
    guard = TextGuard(POLICIES, conv, **options)  # type: ignore[arg-type]
    released = [guard.feed(p) for p in pieces]
    return released, guard.finish()


def final(released: Sequence[str], result: GuardResult) -> str:
    return "".join(released) + result.tail + result.append


def same_verdict(a: Verdict | None, b: Verdict) -> None:
    """The same verdict, but for ``reply``: a streamed scan keeps no reply text."""
    assert a is not None
    assert dataclasses.replace(a, reply=b.reply) == b


# --------------------------------------------------------------------------- sentence mode


def test_sentence_mode_releases_sentence_by_sentence_and_never_the_removed_one() -> None:
    released, result = run(PIECES)
    whole = POLICIES.evaluate(DISTRESS, REPLY)
    assert released[0] == ""  # the first sentence is not complete yet
    assert released[1] == "That sounds really hard."  # replaced, released before the reply ends
    assert all(REMOVED not in r and "always" not in r for r in released)
    assert "always" not in result.tail
    assert result.append == "\n\n" + REFERRAL
    assert final(released, result) == whole.reply
    same_verdict(result.verdict, whole)
    assert result.prepend == ""


def test_sentence_mode_keeps_an_unchanged_reply_byte_for_byte() -> None:
    reply = "  Tea is nice.\n\nGreen tea, e.g. sencha, is 3.5 times... nicer?  "
    released, result = run([reply[i : i + 3] for i in range(0, len(reply), 3)], CALM)
    assert final(released, result) == reply == POLICIES.evaluate(CALM, reply).reply
    assert result.append == ""


def test_early_prepend_leads_before_the_first_word() -> None:
    guard = TextGuard(POLICIES, CRISIS)
    assert guard.feed("You") == CRISIS_LINE  # decided by the conversation alone: no wait
    rest = [guard.feed(p) for p in [" are not alone. ", "I am here. ", "Breathe"]]
    result = guard.finish()
    whole = POLICIES.evaluate(CRISIS, "You are not alone. I am here. Breathe")
    assert CRISIS_LINE + "".join(rest) + result.tail + result.append == whole.reply
    assert result.prepend == ""
    same_verdict(result.verdict, whole)


def test_prepend_that_needs_the_reply_is_appended_first_among_end_texts() -> None:
    reply = "Hello there. Here is a prependword. Bye."
    released, result = run([reply], DISTRESS)
    assert result.prepend == "LATE-PREPEND"
    assert result.append == "\n\nLATE-PREPEND\n\n" + REFERRAL
    assert final(released, result).startswith("Hello there.")
    assert POLICIES.evaluate(DISTRESS, reply).reply.startswith("LATE-PREPEND")


def test_block_that_needs_the_reply_suppresses_the_held_tail() -> None:
    guard = TextGuard(POLICIES, CALM)
    first = guard.feed("Tea is nice. Here comes a forbiddenword")
    assert first == "Tea is nice."
    assert guard.feed(" and more") == ""
    result = guard.finish()
    assert result.tail == ""
    assert result.append == "\n\nBLOCKED-REPLY"
    assert result.verdict is not None and result.verdict.blocked
    assert "forbiddenword" not in first + result.tail + result.append


def test_block_of_a_reply_held_whole_is_the_block_text_alone() -> None:
    """Nothing was released before the held tail: no blank line before the block text."""
    guard = TextGuard(POLICIES, CALM)
    assert guard.feed("A forbiddenword") + guard.feed(" here.") == ""
    result = guard.finish()
    assert (result.tail, result.append) == ("", "BLOCKED-REPLY")
    assert result.tail + result.append == POLICIES.evaluate(CALM, "A forbiddenword here.").reply


def test_block_decided_by_the_conversation_releases_nothing_of_the_reply() -> None:
    conv = Conversation.of(("user", "blockword please"))
    released, result = run(["Anything ", "at all. ", "More."], conv)
    assert released == ["BLOCKED-CONTEXT", "", ""]
    assert (result.tail, result.append) == ("", "")
    assert final(released, result) == POLICIES.evaluate(conv, "Anything at all. More.").reply
    assert result.verdict is not None and result.verdict.blocked


def test_block_decided_by_the_conversation_without_any_text() -> None:
    result = TextGuard(POLICIES, Conversation.of(("user", "blockword"))).finish()
    assert result.tail == "BLOCKED-CONTEXT"


def test_finish_without_text_gives_the_end_texts() -> None:
    result = TextGuard(POLICIES, CRISIS).finish()
    assert result.tail + result.append == POLICIES.evaluate(CRISIS, "").reply
    assert result.tail.startswith(CRISIS_LINE)


def test_release_ends_a_segment() -> None:
    guard = TextGuard(POLICIES, CALM)
    assert guard.feed("Tea is nice and") == ""
    assert guard.release() == "Tea is nice and"
    assert guard.feed(" warm.") == ""
    assert guard.finish().tail == " warm."


def test_cap_bounds_the_held_text_and_cuts_at_a_space() -> None:
    words = ["word"] * 400  # 2,000 characters without a sentence boundary
    guard = TextGuard(POLICIES, CALM, max_holdback_chars=100)
    released = [guard.feed(w + " ") for w in words]
    assert max(len("".join(released[:k])) for k in range(len(words))) > 0
    held = [5 * (k + 1) - len("".join(released[: k + 1])) for k in range(len(words))]
    assert max(held) <= 100 + 5
    assert all(r == "" or r.endswith("word") for r in released)  # cut between words
    result = guard.finish()
    assert "".join(released) + result.tail == "word " * 400


def test_cap_applies_to_a_single_huge_piece() -> None:
    guard = TextGuard(POLICIES, CALM, max_holdback_chars=50)
    text = "x" * 1234
    assert guard.feed(text) == text[:1200]
    assert guard.finish().tail == text[1200:]


# --------------------------------------------------------------------------- full and none


def test_full_mode_equals_evaluate() -> None:
    for conv in (DISTRESS, CRISIS, CALM, Conversation.of(("user", "blockword"))):
        released, result = run(PIECES, conv, holdback="full")
        whole = POLICIES.evaluate(conv, REPLY)
        assert released == [""] * len(PIECES)
        assert result.tail == whole.reply and result.append == ""
        assert result.verdict == whole


def test_none_mode_releases_every_piece_at_once() -> None:
    released, result = run(PIECES, CRISIS, holdback="none")
    assert released == PIECES
    whole = POLICIES.evaluate(CRISIS, REPLY)
    same_verdict(result.verdict, whole)
    assert result.prepend == CRISIS_LINE  # would be prepended: appended in none mode
    assert result.append == "\n\n" + CRISIS_LINE + "\n\n" + REFERRAL


def test_none_mode_appends_a_block_text() -> None:
    released, result = run(["Tea is a forbiddenword."], CALM, holdback="none")
    assert released == ["Tea is a forbiddenword."]
    assert result.append == "\n\nBLOCKED-REPLY"


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="holdback"):
        TextGuard(POLICIES, CALM, holdback="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_holdback_chars"):
        TextGuard(POLICIES, CALM, max_holdback_chars=0)
    guard = TextGuard(POLICIES, CALM)
    guard.finish()
    with pytest.raises(RuntimeError):
        guard.feed("more")


# --------------------------------------------------------------------------- engine failure


def test_engine_exception_passes_the_rest_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = Scan.feed_sentence

    def flaky(self: Scan, sentence: str) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("engine bug")
        return original(self, sentence)

    monkeypatch.setattr(Scan, "feed_sentence", flaky)
    released, result = run(PIECES)
    text = final(released, result)
    assert (
        text
        == "That sounds really hard. " + REPLY[len("You are absolutely right to feel that way. ") :]
    )
    assert result.verdict is None and result.error == "RuntimeError"
    calls["n"] = 0
    released, result = run(PIECES, holdback="none")
    assert final(released, result) == REPLY and result.error == "RuntimeError"


# --------------------------------------------------------------------------- property


def _cut(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in pairwise(bounds)]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=replies,
    cuts=st.lists(st.integers(0, 400), max_size=12),
    who=st.sampled_from([DISTRESS, CRISIS, CALM]),
)
def test_random_pieces_give_the_same_text_as_evaluate(
    reply: str, cuts: list[int], who: Conversation
) -> None:
    pieces = _cut(reply, cuts)
    whole = POLICIES.evaluate(who, reply)
    released, result = run(pieces, who)
    same_verdict(result.verdict, whole)
    text = final(released, result)
    late = "prependword" in reply or "forbiddenword" in reply
    if not late:  # no reply-dependent prepend or block: the same text
        if reply[:1].isspace() and result.append:
            assert text.lstrip() == whole.reply.lstrip()
        else:
            assert text == whole.reply
    # the same pieces in the other modes
    released, result = run(pieces, who, holdback="full")
    assert result.tail == whole.reply and result.verdict == whole
    released, result = run(pieces, who, holdback="none")
    assert released == pieces
    same_verdict(result.verdict, whole)


@settings(max_examples=100, deadline=None)
@given(reply=replies, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_released_text_never_holds_a_removed_sentence(reply: str, cuts: list[int]) -> None:
    """However the reply is cut and wrapped, a removed sentence never goes out: a line break
    inside it included ("always be\nhere"). A blank line is a paragraph break, which ends a
    sentence by design, so the words on either side of one are not one sentence."""
    released, result = run(_cut(reply, cuts), CALM)

    def flat(text: str) -> str:
        return " ".join(re.sub(r"\n[ \t]*\n", " \u00b6 ", text).split())

    for sentence in ("always be here", "the only one who"):
        if sentence in flat(reply):
            assert sentence not in flat(final(released, result))
