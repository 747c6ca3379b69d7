"""The load-time plan of a policy set: everything the engine works out once from its detectors
and policies, before any reply is judged.

``plan(...)`` builds a ``Plan`` in named steps, each deriving one part from what came before:

1. ``_order``: the policies sorted by (severity desc, id), which fixes the action order.
2. ``_detectors``: every detector by name (leaves, composites in dependency order, facts).
3. ``_context_plan``: the context leaves, how far back each role is read, their defaults.
4. ``_literal_plans``: per kind of text, the literal scanner and the ``LeafIndex``.
5. ``_sentence_plan``: the sentence leaves and policies, and the composites those read.
6. ``_counting``: the composites that count matches, and how many of each leaf's matter.
7. conditions and resolvers compiled to functions; constructs per detector.
8. ``_fact_plan``: which policies read state, which facts and judges are needed at all.

Guarantees: a ``Plan`` is never changed after ``plan`` returns it (its only state is bounded
memories of answers already worked out: ``evaluated``, and each ``LeafIndex``'s choices), it
holds no text of any request, and it imports neither the engine nor the scan, so both read it
without a cycle. The per-process memories of what context detectors found live beside it, in
``context.ContextMemory``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from guardrail.policy.conditions import Resolvers, compile_condition, compile_expression, resolve
from guardrail.policy.detectors import CONTEXT_SCOPES, DIRECT_LITERALS, Composite, Leaf
from guardrail.policy.facts import (
    FactLeaf,
    Facts,
    FactValues,
    JudgeSpec,
    fact_values,
    is_state_fact,
)
from guardrail.policy.leafindex import LeafIndex
from guardrail.policy.model import Evidence, Policy
from guardrail.policy.prefilter import LiteralScanner
from guardrail.policy.resources import Resources

__all__ = ["ContextPlan", "Evaluated", "FactPlan", "Plan", "SentencePlan", "Skipped", "plan"]

Detector = Leaf | Composite | FactLeaf
Condition = Callable[[Mapping[str, bool]], bool]
Skipped = tuple[tuple[str, str], ...]
"""(policy id, reason) of the policies a verdict did not evaluate."""
Evaluated = tuple[tuple[Policy, ...], tuple[Policy, ...], Skipped]
"""The policies to evaluate, the sentence-level ones among them, and the skipped ones."""

ROLES = ("user", "assistant", "system")
GROUPS = (*ROLES, "reply")
"""The kinds of text: a message of each role, and the reply."""
_GROUP = {
    "last_user": "user",
    "user_turns": "user",
    "assistant_turns": "assistant",
    "system": "system",
    "reply": "reply",
    "sentence": "reply",
}
_SKIP_MEMORY = 64
"""Distinct sets of missing state facts whose evaluated policies are remembered."""


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """The context leaves (those reading the conversation) and what scanning it needs."""

    leaves: tuple[Leaf, ...]
    depth: Mapping[str, int]
    """Per role with context leaves, how many of its latest messages any of them reads."""
    reach: Mapping[str, int]
    scope: Mapping[str, str]
    min_matches: Mapping[str, int]
    defaults: Mapping[str, bool]
    """Every context leaf, false: a leaf that matched nothing."""


@dataclass(frozen=True, slots=True)
class SentencePlan:
    """What sentence-level policies (remove/replace) need, checked on every sentence."""

    leaves: tuple[str, ...]
    """The names of the leaves whose scope is one sentence."""
    policies: tuple[Policy, ...]
    locators: frozenset[str]
    """The detectors that place a sentence policy's action on a sentence."""
    composites: tuple[Composite, ...]
    """The composites the sentence policies read, in dependency order."""
    resolvers: Resolvers


@dataclass(frozen=True, slots=True)
class FactPlan:
    """What the fact and judge detectors need, worked out once."""

    state_leaves: Mapping[str, frozenset[str]]
    """Policy id -> the state fact detectors its condition reads (state-based policies only)."""
    read_leaves: tuple[FactLeaf, ...]
    """The fact detectors some policy reads, the only ones evaluated per request."""
    state_facts_needed: frozenset[str]
    """Every state fact some policy reads: empty, the flow need not load any state."""
    judges: tuple[JudgeSpec, ...]
    """The judges some policy reads, for the runtime to ask (fact ``judge.<id>``)."""
    defaults: Mapping[str, bool]
    readers: frozenset[str]
    """The policies whose condition reads a fact detector."""
    no_facts: FactValues
    """The fact signals of a request that brings no facts."""

    def read(self, facts: Facts | None) -> FactValues:
        """The fact detectors' signals for ``facts`` (those no policy reads: false)."""
        if facts is None:
            return self.no_facts
        return _read_facts(self.read_leaves, self.defaults, facts)


@dataclass(frozen=True, slots=True)
class Plan:
    """A policy set's load-time plan; see the module docstring. Build it with ``plan``."""

    policies: tuple[Policy, ...]
    """Sorted by (severity desc, id)."""
    by_id: Mapping[str, Policy]
    leaves: tuple[Leaf, ...]
    composites: tuple[Composite, ...]
    """In dependency order."""
    fact_leaves: tuple[FactLeaf, ...]
    detectors: Mapping[str, Detector]
    published: tuple[str, ...]
    """The detectors whose signals a verdict shows (all but the internal ones)."""
    resources: Resources
    context: ContextPlan
    scanners: Mapping[str, LiteralScanner | None]
    """One literal scanner per kind of text, over the literals of the leaves reading it; None
    where so few literals are wanted that direct substring tests are cheaper."""
    indexes: Mapping[str, LeafIndex]
    reply_defaults: Mapping[str, bool]
    """Every reply leaf, false: their values before the first sentence."""
    sentence: SentencePlan
    counting: tuple[Composite, ...]
    """Composites that count matches (``min_matches``); the scan computes their values."""
    counted: Mapping[str, int]
    """Leaf -> how many distinct matches of it are worth keeping (for counting composites)."""
    policy_leaves: Mapping[str, frozenset[str]]
    conditions: dict[str, Condition]
    """Each policy's condition as one function (``conditions.compile_condition``)."""
    resolvers: Resolvers
    constructs: Mapping[str, str]
    """Leaf -> its clinical construct: its own ``construct``, else that of the innermost
    composite naming it directly (leaves with neither are absent); a fact or judge detector's
    own."""
    facts: FactPlan
    _by_skip: dict[frozenset[str], Evaluated] = field(default_factory=dict, repr=False)

    def evaluated(self, missing: frozenset[str]) -> Evaluated:
        """The policies to evaluate when the state fact detectors ``missing`` have no value
        (all of them, then the sentence-level ones), and the skipped ones with their reason;
        remembered per distinct ``missing``."""
        if not missing:
            return self.policies, self.sentence.policies, ()
        known = self._by_skip.get(missing)
        if known is None:
            needs = self.facts.state_leaves
            skipped = {pid for pid, leaves in needs.items() if leaves & missing}
            known = (
                tuple(p for p in self.policies if p.id not in skipped),
                tuple(p for p in self.sentence.policies if p.id not in skipped),
                tuple((p.id, "no_state") for p in self.policies if p.id in skipped),
            )
            if len(self._by_skip) < _SKIP_MEMORY:
                self._by_skip[missing] = known
        return known

    def leaves_of(self, name: str) -> frozenset[str]:
        """The leaf detectors behind ``name`` (itself if it is a leaf)."""
        return _leaves_of(self.detectors, (name,))

    def support_leaves(self, names: Iterable[str], signals: Mapping[str, bool]) -> set[str]:
        """The true leaves behind true ``names``: through ``any_of`` its true parts, through
        ``all_of`` all of them; a ``none_of`` holds by absence and contributes none."""
        out: set[str] = set()
        stack = [n for n in names if signals.get(n)]
        while stack:
            name = stack.pop()
            det = self.detectors[name]
            if not isinstance(det, Composite):
                out.add(name)
            elif det.mode != "none":  # a counting composite: every part may have counted
                stack.extend(
                    p for p in det.parts if (det.min_matches or signals.get(p)) and p not in out
                )
        return out

    def constructs_of(self, evidence: Iterable[Evidence]) -> tuple[str, ...]:
        """The constructs behind ``evidence``, each once, in evidence order."""
        names = (self.constructs.get(ev.detector) for ev in evidence)
        return tuple(dict.fromkeys(n for n in names if n))

    def resolve_signals(
        self, values: Mapping[str, bool], composites: Sequence[Composite] | None = None
    ) -> dict[str, bool]:
        """Leaf values plus every composite (or only ``composites``, in dependency order); a
        composite over a failed detector stays absent."""
        return resolve(values, self.resolvers if composites is None else _resolvers(composites))


def plan(
    *,
    policies: Iterable[Policy],
    leaves: Sequence[Leaf],
    composites: Sequence[Composite],
    facts: Sequence[FactLeaf],
    resources: Resources,
) -> Plan:
    """Work out everything evaluating replies against these detectors and policies needs."""
    ordered = _order(policies)
    leaves, composites, fact_leaves = tuple(leaves), tuple(composites), tuple(facts)
    detectors = _detectors(leaves, composites, fact_leaves)
    policy_leaves = {p.id: _leaves_of(detectors, p.condition.names()) for p in ordered}
    scanners, indexes = _literal_plans(leaves)
    counting, counted = _counting(composites)
    return Plan(
        policies=ordered,
        by_id={p.id: p for p in ordered},
        leaves=leaves,
        composites=composites,
        fact_leaves=fact_leaves,
        detectors=detectors,
        published=tuple(n for n, d in detectors.items() if not d.internal),
        resources=resources,
        context=_context_plan(leaves),
        scanners=scanners,
        indexes=indexes,
        reply_defaults=dict.fromkeys((d.name for d in leaves if d.reads_reply), False),
        sentence=_sentence_plan(ordered, leaves, composites, detectors),
        counting=counting,
        counted=counted,
        policy_leaves=policy_leaves,
        conditions={p.id: compile_condition(p.condition) for p in ordered},
        resolvers=_resolvers(composites),
        constructs=_constructs(leaves, composites, fact_leaves),
        facts=_fact_plan(ordered, fact_leaves, policy_leaves),
    )


# ------------------------------------------------------------------ the steps
def _order(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(sorted(policies, key=lambda p: (-p.severity_rank, p.id)))


def _detectors(
    leaves: Sequence[Leaf], composites: Sequence[Composite], facts: Sequence[FactLeaf]
) -> dict[str, Detector]:
    found: dict[str, Detector] = {d.name: d for d in leaves}
    found.update((d.name, d) for d in composites)
    found.update((d.name, d) for d in facts)
    return found


def _context_plan(leaves: Sequence[Leaf]) -> ContextPlan:
    context = tuple(d for d in leaves if d.scope in CONTEXT_SCOPES)
    by_role = {role: [d for d in context if _GROUP[d.scope] == role] for role in ROLES}
    return ContextPlan(
        leaves=context,
        depth={role: max(d.reach for d in of) for role, of in by_role.items() if of},
        reach={d.name: d.reach for d in context},
        scope={d.name: d.scope for d in context},
        min_matches={d.name: d.min_matches for d in context},
        defaults=dict.fromkeys((d.name for d in context), False),
    )


def _literal_plans(
    leaves: Sequence[Leaf],
) -> tuple[dict[str, LiteralScanner | None], dict[str, LeafIndex]]:
    """Per kind of text, the scanner of its leaves' literals and their ``LeafIndex``."""
    grouped = {group: [d for d in leaves if _GROUP[d.scope] == group] for group in GROUPS}
    scanners = {group: _scanner(of) for group, of in grouped.items()}
    return scanners, {group: LeafIndex(of) for group, of in grouped.items()}


def _scanner(leaves: Iterable[Leaf]) -> LiteralScanner | None:
    literals = frozenset().union(*(leaf.literals for leaf in leaves))
    return LiteralScanner(literals) if len(literals) > DIRECT_LITERALS else None


def _sentence_plan(
    policies: Sequence[Policy],
    leaves: Sequence[Leaf],
    composites: Sequence[Composite],
    detectors: Mapping[str, Detector],
) -> SentencePlan:
    chosen = tuple(p for p in policies if p.sentence_level)
    needed = _composites_behind(
        detectors, frozenset().union(*(p.condition.names() for p in chosen))
    )
    read = tuple(c for c in composites if c.name in needed)
    return SentencePlan(
        leaves=tuple(d.name for d in leaves if d.scope == "sentence"),
        policies=chosen,
        locators=frozenset().union(*(p.locators for p in chosen)),
        composites=read,
        resolvers=_resolvers(read),
    )


def _counting(composites: Sequence[Composite]) -> tuple[tuple[Composite, ...], dict[str, int]]:
    """The composites that count matches, and per leaf the most distinct matches any needs."""
    counting = tuple(c for c in composites if c.min_matches)
    counted: dict[str, int] = {}
    for comp in counting:
        for part in comp.parts:
            counted[part] = max(counted.get(part, 0), comp.min_matches)
    return counting, counted


def _resolvers(composites: Iterable[Composite]) -> Resolvers:
    """Each composite's value as one function; counting composites are left out (the scan,
    which keeps the counts, puts their values in)."""
    return tuple(
        (c.name, compile_expression(c.python(), c.value)) for c in composites if not c.min_matches
    )


def _constructs(
    leaves: Sequence[Leaf], composites: Sequence[Composite], facts: Sequence[FactLeaf] = ()
) -> dict[str, str]:
    out = {leaf.name: leaf.construct for leaf in leaves if leaf.construct}
    out.update((fact.name, fact.construct) for fact in facts if fact.construct)
    leaf_names = {leaf.name for leaf in leaves}
    for comp in composites:  # dependency order: inner composites first
        if comp.construct:
            for part in comp.parts:
                if part in leaf_names:
                    out.setdefault(part, comp.construct)
    return out


def _fact_plan(
    policies: Sequence[Policy],
    fact_leaves: Sequence[FactLeaf],
    policy_leaves: Mapping[str, frozenset[str]],
) -> FactPlan:
    by_name = {leaf.name: leaf for leaf in fact_leaves}
    read = {p.id: [by_name[n] for n in policy_leaves[p.id] if n in by_name] for p in policies}
    used = {leaf.name for leaves in read.values() for leaf in leaves}
    read_leaves = tuple(leaf for leaf in fact_leaves if leaf.name in used)
    defaults = dict.fromkeys((leaf.name for leaf in fact_leaves), False)
    return FactPlan(
        state_leaves={
            pid: frozenset(leaf.name for leaf in leaves if leaf.state)
            for pid, leaves in read.items()
            if any(leaf.state for leaf in leaves)
        },
        read_leaves=read_leaves,
        state_facts_needed=frozenset(
            leaf.fact for leaf in read_leaves if is_state_fact(leaf.fact)
        ),
        judges=tuple(leaf.judge for leaf in read_leaves if leaf.judge is not None),
        defaults=defaults,
        readers=frozenset(pid for pid, leaves in read.items() if leaves),
        no_facts=_read_facts(read_leaves, defaults, None),
    )


def _read_facts(
    read_leaves: Sequence[FactLeaf], defaults: Mapping[str, bool], facts: Facts | None
) -> FactValues:
    got = fact_values(read_leaves, facts)
    values = {**defaults, **got.values}
    for name in got.missing:
        values.pop(name, None)
    return FactValues(values, got.missing, got.unanswered)


# ------------------------------------------------------------------ the detectors' graph
def _leaves_of(detectors: Mapping[str, Detector], names: Iterable[str]) -> frozenset[str]:
    """The leaf detectors behind ``names`` (a leaf stands for itself)."""
    out: set[str] = set()
    for name in names:
        det = detectors[name]
        if isinstance(det, Composite):
            out |= _leaves_of(detectors, det.parts)
        else:
            out.add(name)
    return frozenset(out)


def _composites_behind(detectors: Mapping[str, Detector], names: Iterable[str]) -> set[str]:
    """The composites among ``names`` and behind them."""
    out: set[str] = set()
    stack = list(names)
    while stack:
        det = detectors[stack.pop()]
        if isinstance(det, Composite) and det.name not in out:
            out.add(det.name)
            stack.extend(det.parts)
    return out
