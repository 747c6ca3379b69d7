"""The policy engine: YAML policies in, verdicts on assistant replies out.

    ps = load_policies("policies/")            # load time: everything checked and compiled
    verdict = ps.evaluate(conversation, reply) # request time: pure, no I/O, no logging

Streaming: ``scan = ps.start(conversation)``, ``scan.feed_sentence(s)`` for each sentence of
``SentenceSplitter``, then ``scan.finish()``; this gives the same verdict as ``evaluate``.
Facts: ``ps.evaluate(conversation, reply, facts={"session.minutes": 200.0, ...})`` (and
``ps.start(..., facts=...)``) lets ``fact`` and ``judge`` detectors read what the request flow
gathered about time and history (``facts``); ``verdict.records`` says what to remember,
``verdict.skipped`` which state-based policies had no state. The engine imports nothing of HTTP.
"""

from __future__ import annotations

from guardrail.policy.engine import PolicySet, Scan
from guardrail.policy.facts import FACTS, RECORDS, FactLeaf, Facts, JudgeSpec
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
    "FACTS",
    "FactLeaf",
    "Facts",
    "Hit",
    "JudgeSpec",
    "Message",
    "Policy",
    "PolicySet",
    "RECORDS",
    "Scan",
    "SentenceSplitter",
    "Verdict",
    "load_policies",
    "normalise",
    "split_sentences",
]
