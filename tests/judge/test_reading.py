"""What a judge is shown: only what its ``reads`` allows, never more than ``max_chars``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail.judge.reading import READS, shown_text
from guardrail.policy.model import Message

SECRET = "SYSTEM-PROMPT-MARKER"
TOOL = "TOOL-OUTPUT-MARKER"
MESSAGES = (
    Message("system", f"You are Ava. {SECRET}"),
    Message("user", "first user turn"),
    Message("assistant", "first assistant turn"),
    Message("tool", f"{TOOL} result"),
    Message("user", "the last thing I said"),
)


def test_last_user_is_the_last_user_message_alone() -> None:
    assert shown_text("last_user", MESSAGES, "the reply", 1000) == "the last thing I said"


def test_last_user_skips_a_trailing_assistant_or_tool_message() -> None:
    messages = (*MESSAGES, Message("assistant", "an earlier reply"), Message("tool", TOOL))
    assert shown_text("last_user", messages, None, 1000) == "the last thing I said"


def test_conversation_labels_user_and_assistant_turns_and_leaves_out_system_and_tools() -> None:
    text = shown_text("conversation", MESSAGES, "the reply", 1000)
    assert text == (
        "User: first user turn\n\nAssistant: first assistant turn\n\nUser: the last thing I said"
    )


def test_conversation_keeps_the_latest_turns_whole_and_the_end_of_the_one_before() -> None:
    messages = (Message("user", "a" * 50 + " tail-of-old"), Message("user", "newest words"))
    text = shown_text("conversation", messages, None, 40)
    assert len(text) <= 40
    assert text.endswith("User: newest words")
    assert text.startswith("User: ") and "tail-of-old" in text and "a" * 50 not in text


def test_conversation_drops_a_turn_with_no_room_for_its_label() -> None:
    messages = (Message("user", "older"), Message("user", "x" * 20))
    assert shown_text("conversation", messages, None, 28) == "User: " + "x" * 20


def test_reply_is_the_reply_alone() -> None:
    assert shown_text("reply", MESSAGES, "  the reply  ", 1000) == "the reply"
    assert shown_text("reply", MESSAGES, None, 1000) == ""


def test_long_texts_keep_their_end() -> None:
    assert shown_text("last_user", (Message("user", "0123456789"),), None, 4) == "6789"
    assert shown_text("reply", (), "abcdefgh", 3) == "fgh"


def test_nothing_to_read_is_empty() -> None:
    assert shown_text("last_user", (Message("system", SECRET),), None, 100) == ""
    assert shown_text("conversation", (Message("system", SECRET),), None, 100) == ""


def test_unknown_reads_is_refused() -> None:
    with pytest.raises(ValueError, match="reads must be one of"):
        shown_text("everything", MESSAGES, None, 100)


_roles = st.sampled_from(["user", "assistant", "system", "tool"])
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(
    st.lists(st.tuples(_roles, _texts), max_size=8),
    st.sampled_from(READS),
    st.integers(min_value=1, max_value=120),
    _texts,
)
def test_never_more_than_max_chars_and_never_a_system_or_tool_message(
    turns: list[tuple[str, str]], reads: str, max_chars: int, reply: str
) -> None:
    messages = [
        Message(role, f"{SECRET}{text}" if role in ("system", "tool") else text.replace("S", ""))
        for role, text in turns
    ]
    reply = reply.replace("S", "")
    text = shown_text(reads, messages, reply, max_chars)
    assert len(text) <= max_chars
    assert SECRET not in text and TOOL not in text
    if reads == "reply":
        assert text in reply
    if reads == "last_user":
        assert any(text in m.content for m in messages if m.role == "user") or not text
