"""The policy engine: YAML policies in, verdicts on assistant replies out.

    ps = load_policies("policies/")            # load time: everything checked and compiled
    verdict = ps.evaluate(conversation, reply) # request time: pure, no I/O, no logging

Streaming: ``scan = ps.start(conversation)``, ``scan.feed_sentence(s)`` for each sentence of
``SentenceSplitter``, then ``scan.finish()``; this gives the same verdict as ``evaluate``.
The engine imports nothing of HTTP.
"""

from __future__ import annotations

from guardrail.policy.engine import PolicySet, Scan
from guardrail.policy.loader import load_policies
from guardrail.policy.model import (
    Action,
    Case,
    Conversation,
    Evidence,
    Hit,
    Message,
    Policy,
    Verdict,
)
from guardrail.policy.text import SentenceSplitter, normalise, split_sentences

__all__ = [
    "Action",
    "Case",
    "Conversation",
    "Evidence",
    "Hit",
    "Message",
    "Policy",
    "PolicySet",
    "Scan",
    "SentenceSplitter",
    "Verdict",
    "load_policies",
    "normalise",
    "split_sentences",
]
