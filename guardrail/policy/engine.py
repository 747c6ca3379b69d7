"""The engine: a loaded, immutable ``PolicySet``; ``evaluate`` and ``start`` run it.

Stages of one evaluation (the stages themselves live in ``scan.Scan``):

0. at load, ``plan.plan`` works out everything evaluation needs (``plan.Plan``, frozen).
1. ``PolicySet.start(conversation, locale)`` -> ``Scan``: context detectors run once.
2. ``Scan.feed_sentence(sentence)`` -> the text to release for that sentence.
3. ``Scan.finish()`` -> ``Verdict``.

``PolicySet.evaluate`` runs exactly these stages over the sentences of ``text.SentenceSplitter``,
so a stream guard feeding the same text in any pieces reaches the same verdict. Both take the
FACTS the request flow gathered (``facts``: time, history, judge answers); without them
everything behaves as before, and a policy reading a state fact that is missing is skipped
(``Verdict.skipped``). The engine does no I/O and logs nothing; all per-reply state lives in the
``Scan``. What a ``PolicySet`` keeps between evaluations holds no text: what its context
detectors found in recent messages and conversations (``context.ContextMemory``) and which
leaves go with which literals (``leafindex.LeafIndex``, in the plan), all bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from guardrail.policy.context import ContextMemory, ConversationMemo, MessageMemo
from guardrail.policy.detectors import Composite, Leaf
from guardrail.policy.facts import FactLeaf, Facts, FactValues, JudgeSpec
from guardrail.policy.leafindex import LeafIndex
from guardrail.policy.model import Composition, Conversation, Evidence, Policy, Verdict
from guardrail.policy.plan import Condition, Evaluated, Plan, plan
from guardrail.policy.reading import prepare as prepare_reading
from guardrail.policy.resources import Resources
from guardrail.policy.scan import Scan
from guardrail.policy.text import SentenceSplitter

__all__ = ["DEFAULT_MAX_USER_CHARS", "LeafIndex", "PolicySet", "Scan"]

DEFAULT_MAX_USER_CHARS = 16_384
"""Characters of each user message the context detectors read by default, its last ones: about
3,000 words, several screens of text, far more than any one turn a person types in a chat (a
crisis told at the end of a long paste is read); and a bound (a few ms of detector time) on
what one multi-megabyte message can cost every other client (issue 11)."""


class PolicySet:
    """An immutable, loaded set of detectors and policies (build it with ``load_policies``).

    Policies are kept sorted by (severity desc, id), which fixes the action order whatever the
    file order was. Safe to share between concurrent requests: all state lives in ``Scan``.
    What evaluation needs is worked out once, at construction, into ``plan`` (``plan.Plan``);
    the attributes below read it.
    """

    def __init__(
        self,
        *,
        policies: Iterable[Policy],
        leaves: Sequence[Leaf],
        composites: Sequence[Composite],
        resources: Resources,
        source: str = "",
        digest: str = "",
        lists: Mapping[str, tuple[str, ...]] | None = None,
        composition: Composition | None = None,
        facts: Sequence[FactLeaf] = (),
    ) -> None:
        prepare_reading()  # the tables for non-ASCII text, once per process, not on a request
        self.plan: Plan = plan(
            policies=policies,
            leaves=leaves,
            composites=composites,
            facts=facts,
            resources=resources,
        )
        """Everything evaluation needs, worked out once (``plan.Plan``, frozen)."""
        self.resources = resources
        self.source = source
        self.digest = digest
        self.lists: Mapping[str, tuple[str, ...]] = dict(lists or {})
        self.composition = composition or Composition(sources=(source,) if source else ())
        """Sources, turned-off policies and overrides, for reports (never for evaluation)."""
        self.context_memory = ContextMemory(DEFAULT_MAX_USER_CHARS)
        """What the context leaves found in recent messages and conversations (no text)."""

    # -------------------------------------------------------------- what the plan worked out
    @property
    def policies(self) -> tuple[Policy, ...]:
        return self.plan.policies

    @property
    def detectors(self) -> Mapping[str, Leaf | Composite | FactLeaf]:
        return self.plan.detectors

    @property
    def fact_leaves(self) -> tuple[FactLeaf, ...]:
        return self.plan.fact_leaves

    @property
    def conditions(self) -> dict[str, Condition]:
        """Each policy's condition as one function (``conditions.compile_condition``)."""
        return self.plan.conditions

    @property
    def constructs(self) -> Mapping[str, str]:
        """Leaf -> its clinical construct (see ``plan.Plan.constructs``)."""
        return self.plan.constructs

    @property
    def state_leaves(self) -> Mapping[str, frozenset[str]]:
        """Policy id -> the state fact detectors its condition reads (state-based policies only)."""
        return self.plan.facts.state_leaves

    @property
    def state_facts_needed(self) -> frozenset[str]:
        """Every state fact some policy reads: empty, the flow need not load any state."""
        return self.plan.facts.state_facts_needed

    @property
    def judges(self) -> tuple[JudgeSpec, ...]:
        """The judges some policy reads, for the runtime to ask (fact ``judge.<id>``)."""
        return self.plan.facts.judges

    def read_facts(self, facts: Facts | None) -> FactValues:
        """The fact detectors' signals for ``facts`` (those no policy reads: false)."""
        return self.plan.facts.read(facts)

    def evaluated(self, missing: frozenset[str]) -> Evaluated:
        """The policies to evaluate when the state fact detectors ``missing`` have no value,
        the sentence-level ones among them, and the skipped ones (``plan.Plan.evaluated``)."""
        return self.plan.evaluated(missing)

    def constructs_of(self, evidence: Iterable[Evidence]) -> tuple[str, ...]:
        """The constructs behind ``evidence``, each once, in evidence order."""
        return self.plan.constructs_of(evidence)

    # -------------------------------------------------------------- limits and memories
    @property
    def max_user_chars(self) -> int:
        """The most characters of each user message the context detectors read: its last ones
        (the most recent text is what counts). Bounds the work a huge message can cause;
        ``DEFAULT_MAX_USER_CHARS`` unless set (the proxy's ``max_user_text_chars``)."""
        return self.context_memory.max_user_chars

    @max_user_chars.setter
    def max_user_chars(self, value: int) -> None:
        self.context_memory.max_user_chars = value

    @property
    def memo(self) -> MessageMemo:
        """What the context leaves found in recent messages (digests and spans, no text)."""
        return self.context_memory.messages

    @property
    def conversations(self) -> ConversationMemo:
        """What the context leaves found in conversations judged recently and still alive."""
        return self.context_memory.conversations

    # -------------------------------------------------------------- introspection
    @property
    def locales(self) -> tuple[str, ...]:
        return tuple(self.resources.locales)

    @property
    def default_locale(self) -> str:
        return self.resources.default_locale

    def policy(self, policy_id: str) -> Policy:
        return self.plan.by_id[policy_id]

    def leaves_of(self, name: str) -> frozenset[str]:
        """The leaf detectors behind ``name`` (itself if it is a leaf)."""
        return self.plan.leaves_of(name)

    def support_leaves(self, names: Iterable[str], signals: Mapping[str, bool]) -> set[str]:
        """The true leaves behind true ``names`` (``plan.Plan.support_leaves``)."""
        return self.plan.support_leaves(names, signals)

    def resolve_signals(
        self, values: Mapping[str, bool], composites: Sequence[Composite] | None = None
    ) -> dict[str, bool]:
        """Leaf values plus every composite (or only ``composites``, in dependency order); a
        composite over a failed detector stays absent."""
        return self.plan.resolve_signals(values, composites)

    # -------------------------------------------------------------- evaluation
    def start(
        self,
        conversation: Conversation,
        locale: str | None = None,
        *,
        keep_text: bool = True,
        facts: Facts | None = None,
    ) -> Scan:
        """Begin evaluating a reply to ``conversation`` (context detectors run now).

        ``keep_text=False``: the scan keeps no reply text (bounded memory for streams); the
        verdict's ``reply`` then holds only the end-of-reply texts (see ``Scan``). ``facts``:
        what the request flow gathered (``facts.FACTS``, ``judge.<id>``); None: none.
        """
        return Scan(
            self.plan, self.context_memory, conversation, locale, keep_text=keep_text, facts=facts
        )

    def evaluate(
        self,
        conversation: Conversation,
        reply: str,
        *,
        locale: str | None = None,
        facts: Facts | None = None,
    ) -> Verdict:
        """Evaluate a whole reply: the incremental scan over its sentences."""
        scan = Scan(
            self.plan, self.context_memory, conversation, locale, whole_reply=reply, facts=facts
        )
        splitter = SentenceSplitter()
        for sentence in splitter.feed(reply):
            scan.feed_sentence(sentence)
        rest = splitter.flush()
        if rest:
            scan.feed_sentence(rest)
        return scan.finish()
