"""A crisis prepend whose ``unless`` reads the reply's opening, in ``sentence`` mode: the guard
waits for the opening (two sentences), then leads with the line only if the reply does not."""

from __future__ import annotations

from typing import Any

import pytest

from guardrail import TextGuard, check
from guardrail.policy import Conversation, Message

from tests.kit.policysets import PACK

CRISIS = Conversation((Message("user", "I can't do this anymore, I want to kill myself tonight."),))
OPENS_WITH_LINE = (
    "If you are in danger right now, please call 988 or 911. I'm here with you and I'm listening. "
    "Can you tell me where you are?"
)
OPENS_WITHOUT = "That sounds unbearably heavy. Thank you for telling me. What is tonight like?"


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def stream(reply: str, **kwargs: Any) -> tuple[list[str], str]:
    guard = TextGuard(PACK, CRISIS, locale="en-US", holdback="sentence", **kwargs)
    outs = [guard.feed(piece) for piece in words(reply)]
    result = guard.finish()
    return outs, "".join(outs) + result.tail + result.append


def test_a_reply_that_opens_with_the_line_is_not_led_with_it_again() -> None:
    verdict = check(PACK, CRISIS, OPENS_WITH_LINE, locale="en-US")
    assert [h.policy for h in verdict.hits] == ["referral.crisis"]
    _, text = stream(OPENS_WITH_LINE)
    assert text == verdict.reply == OPENS_WITH_LINE  # once, as the reply said it


def test_a_reply_that_does_not_is_led_with_it() -> None:
    verdict = check(PACK, CRISIS, OPENS_WITHOUT, locale="en-US")
    outs, text = stream(OPENS_WITHOUT)
    assert text == verdict.reply
    assert "988" in text.split("\n\n", 1)[0]  # the crisis line comes first
    first = next(o for o in outs if o)
    assert first.startswith(text.split("\n\n", 1)[0])  # nothing of the reply before it


def test_nothing_is_released_before_the_opening_is_known() -> None:
    outs, _ = stream(OPENS_WITH_LINE)
    second_end = len(words("If you are in danger right now, please call 988 or 911. I'm here "
                           "with you and I'm listening."))  # fmt: skip
    assert "".join(outs[: second_end]) == ""  # two sentences: the opening the unless reads
    assert any(outs[second_end:])  # then released at once, the third sentence held as usual


def test_a_one_sentence_reply_is_decided_at_its_end() -> None:
    reply = "Please call 988 right now, they are there for you."
    verdict = check(PACK, CRISIS, reply, locale="en-US")
    outs, text = stream(reply)
    assert all(o == "" for o in outs) and text == verdict.reply


def test_an_engine_failure_while_waiting_keeps_the_line_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = TextGuard(PACK, CRISIS, locale="en-US", holdback="sentence")
    assert guard._scan is not None

    def broken(sentence: str) -> str:
        raise RuntimeError("engine down")

    monkeypatch.setattr(guard._scan, "feed_sentence", broken)
    out = "".join(guard.feed(piece) for piece in words(OPENS_WITH_LINE))
    result = guard.finish()
    text = out + result.tail + result.append
    assert result.error == "RuntimeError" and result.verdict is None
    assert text.endswith(OPENS_WITH_LINE)  # the reply, whole and unchanged
    assert text != OPENS_WITH_LINE and "988" in text.split("\n\n", 1)[0]  # the line still leads


def test_segments_release_what_was_held() -> None:
    """``release()`` (a content block ends) decides with what there is: nothing stays held."""
    guard = TextGuard(PACK, CRISIS, locale="en-US", holdback="sentence")
    assert guard.feed("That is so much to carry.") == ""
    out = guard.release()
    assert "988" in out.split("\n\n", 1)[0] and out.endswith("That is so much to carry.")
