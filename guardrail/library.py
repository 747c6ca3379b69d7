"""The library facade: friendly constructors and one-call checks over the policy engine.

Everything here is a thin layer over :mod:`guardrail.policy` (the engine): the proxy, the ASGI
middleware and a program calling these functions reach the same
:meth:`~guardrail.policy.PolicySet.evaluate`, so they cannot disagree. Nothing here does I/O
(apart from :func:`~guardrail.policy.load_policies` reading its folder) or logs anything.

    policies = load_policies("policies/")            # PolicyError names file, line, policy id
    policies = load_policies(["default", "mine/"])   # the bundled pack, then your own folder
    verdict = check(policies, [{"role": "user", "content": "..."}], reply)
    verdict.reply, verdict.hits, verdict.signals      # what ``guardrail check`` prints
    text_guard = TextGuard(policies, conversation(messages))   # a reply streamed in pieces
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from guardrail.policy import Conversation, Message, PolicySet, Verdict
from guardrail.formats.openai_chat import content_text
from guardrail.policy.model import ROLES

__all__ = ["ConversationLike", "check", "conversation"]

ConversationLike: TypeAlias = Conversation | Iterable[Mapping[str, Any] | Message]
"""A :class:`~guardrail.policy.Conversation`, or its messages: ``Message`` objects or mappings
with ``role`` and ``content`` (the shape of OpenAI and Anthropic request messages)."""


def _content(value: object, index: int) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if value is None:
        return ""
    if isinstance(value, (str, list)):
        return content_text(value)  # the proxy's own reading: parts joined by line breaks
    raise ValueError(f"messages[{index}].content must be a string or a list of content parts")


def conversation(messages: ConversationLike) -> Conversation:
    """The conversation a reply answers, from a list of ``{"role", "content"}`` mappings.

    The messages are the context BEFORE the reply, oldest first, system messages included.
    ``role`` is one of user, assistant, system, tool; ``content`` a string or a list of content
    parts (the text of its ``text``, ``input_text`` and ``output_text`` parts, joined by line
    breaks, as the proxy reads them). Extra keys are ignored. Raises ValueError for a
    malformed message; the message names the index and the key, never the text.
    """
    if isinstance(messages, Conversation):
        return messages
    out: list[Message] = []
    for index, item in enumerate(messages):
        if isinstance(item, Message):
            out.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ValueError(  # noqa: TRY004 -- one error type for any malformed message
                f"messages[{index}] must be a mapping with role and content"
            )
        role = item.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{index}].role must be one of {', '.join(ROLES)}")
        out.append(Message(str(role), _content(item.get("content"), index)))
    return Conversation(tuple(out))


def check(
    policies: PolicySet,
    messages: ConversationLike,
    reply: str,
    *,
    locale: str | None = None,
) -> Verdict:
    """Check one whole reply against the conversation it answers: the verdict.

    ``verdict.reply`` is the reply after the enforce-mode actions (the input when nothing
    changed), ``verdict.hits`` the policies that hit (severity first), ``verdict.signals`` every
    published signal; this is what ``guardrail check`` prints for the same case. ``locale``
    picks the crisis resources (None: the policy set's default; unknown: the fallback).
    """
    return policies.evaluate(conversation(messages), reply, locale=locale)
