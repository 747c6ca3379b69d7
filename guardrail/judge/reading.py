"""What text a judge is shown: no more than its rubric needs.

A judge declares what it ``reads``, and this module cuts the exchange down to that, before
anything leaves the process:

* ``last_user``: the content of the last user message, and nothing else: no system prompt, no
  earlier turn, no reply. Asked as soon as the request arrives.
* ``conversation``: the user and assistant turns, oldest first, each labelled ``User:`` or
  ``Assistant:``; system and tool messages are left out (a system prompt is the operator's, not
  the person's, and often confidential). Asked as soon as the request arrives.
* ``reply``: the reply under inspection, and nothing else. Asked once the reply is complete.

Every text is then cut to the endpoint's ``max_chars``, keeping its end (the most recent words
count most): a conversation keeps its latest turns whole and as much of the end of the turn
before them as fits. An empty text means there is nothing to judge; the runner asks nothing.
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["CONVERSATION_ROLES", "READS", "REPLY_READS", "MessageLike", "shown_text"]

READS = ("last_user", "conversation", "reply")
"""What a judge may read; the first two read only the request, ``reply`` the reply."""
REPLY_READS = frozenset({"reply"})
CONVERSATION_ROLES = {"user": "User", "assistant": "Assistant"}
"""Roles a ``conversation`` judge sees, and the label each turn gets."""
_SEPARATOR = "\n\n"


class MessageLike(Protocol):
    """A message of the conversation (``guardrail.policy.model.Message`` is one)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def shown_text(
    reads: str, messages: Sequence[MessageLike], reply: str | None, max_chars: int
) -> str:
    """The text a judge that ``reads`` this is shown, at most ``max_chars`` characters long."""
    if reads == "last_user":
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return _tail(last, max_chars)
    if reads == "conversation":
        return _conversation(messages, max_chars)
    if reads == "reply":
        return _tail(reply or "", max_chars)
    raise ValueError(f"reads must be one of {', '.join(READS)}, got {reads!r}")


def _tail(text: str, max_chars: int) -> str:
    text = text.strip()
    return text[len(text) - max_chars :].lstrip() if len(text) > max_chars else text


def _conversation(messages: Sequence[MessageLike], max_chars: int) -> str:
    turns: list[str] = []
    room = max_chars
    for message in reversed(messages):
        label = CONVERSATION_ROLES.get(message.role)
        content = message.content.strip()
        if label is None or not content:
            continue
        head = f"{label}: "
        cost = len(head) + len(content) + (len(_SEPARATOR) if turns else 0)
        if cost <= room:
            turns.append(head + content)
            room -= cost
            continue
        left = room - len(head) - (len(_SEPARATOR) if turns else 0)
        if left > 0:  # the oldest turn shown keeps its label and the end of its text
            turns.append(head + _tail(content, left))
        break
    return _SEPARATOR.join(reversed(turns))
