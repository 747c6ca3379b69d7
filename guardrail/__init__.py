"""guardrail: a conversation-guardrail middleware for supportive chatbots.

The public API (everything in ``__all__``; the rest of the package is internal)::

    import guardrail

    policies = guardrail.load_policies("policies/")        # raises guardrail.PolicyError
    policies = guardrail.load_policies(["default", "mine/"])   # the bundled pack, then yours
    verdict = guardrail.check(policies, messages, reply)   # hits, signals, rewritten reply
    g = guardrail.TextGuard(policies, guardrail.conversation(messages))   # a streamed reply
    app.add_middleware(guardrail.GuardrailMiddleware, policies=policies)   # Starlette/FastAPI

Importing ``guardrail`` loads the engine only; the ASGI middleware (and with it Starlette and the
metrics) is imported on first use of ``guardrail.GuardrailMiddleware``.
"""

from __future__ import annotations

from guardrail.version import __version__

import typing

from guardrail.errors import GuardrailError, PolicyError
from guardrail.guard import GuardResult, Holdback, TextGuard
from guardrail.library import ConversationLike, check, conversation
from guardrail.policy import (
    Conversation,
    Hit,
    Message,
    PolicySet,
    Verdict,
    load_policies,
)

if typing.TYPE_CHECKING:
    from guardrail.middleware import GuardrailMiddleware

__all__ = [
    "Conversation",
    "ConversationLike",
    "GuardResult",
    "GuardrailError",
    "GuardrailMiddleware",
    "Hit",
    "Holdback",
    "Message",
    "PolicyError",
    "PolicySet",
    "TextGuard",
    "Verdict",
    "__version__",
    "check",
    "conversation",
    "load_policies",
]


def __getattr__(name: str) -> object:
    """Import the middleware on first use, so ``import guardrail`` stays light."""
    if name == "GuardrailMiddleware":
        from guardrail.middleware import GuardrailMiddleware

        return GuardrailMiddleware
    raise AttributeError(f"module 'guardrail' has no attribute {name!r}")
