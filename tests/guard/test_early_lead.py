"""A crisis line decided by the conversation leads a streamed reply at once (``guard/lead.py``)."""

from __future__ import annotations

from guardrail import TextGuard, check
from guardrail.policy import Conversation, Message

from tests.kit.policysets import PACK

CRISIS = Conversation((Message("user", "I can't do this anymore, I want to kill myself tonight."),))
OPENS_WITH_LINE = (
    "If you are in danger right now, please call 988 or 911. I'm here with you and I'm listening. "
    "Can you tell me where you are?"
)


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def test_the_line_comes_with_the_first_piece_before_any_sentence_is_complete() -> None:
    guard = TextGuard(PACK, CRISIS, locale="en-US", holdback="sentence")
    first = guard.feed("That")
    assert "988" in first and "That" not in first  # the line; the reply's word still held


def test_a_reply_that_opens_with_its_own_line_gets_ours_too_when_streamed() -> None:
    """The documented price of never waiting: the whole reply drops our line (its ``unless``),
    the sentence-mode stream, which sent it before the reply was known, shows both."""
    whole = check(PACK, CRISIS, OPENS_WITH_LINE, locale="en-US")
    assert whole.reply == OPENS_WITH_LINE
    guard = TextGuard(PACK, CRISIS, locale="en-US", holdback="sentence")
    out = "".join(guard.feed(p) for p in words(OPENS_WITH_LINE))
    result = guard.finish()
    text = out + result.tail + result.append
    lead, _, rest = text.partition("\n\n")
    assert "988" in lead and rest == OPENS_WITH_LINE
    full = TextGuard(PACK, CRISIS, locale="en-US", holdback="full")
    for piece in words(OPENS_WITH_LINE):
        assert full.feed(piece) == ""
    assert full.finish().tail == whole.reply  # held whole: the line once, as the reply has it
