"""The engine: a loaded, immutable ``PolicySet``; ``evaluate`` and ``start`` run it.

Stages of one evaluation (the stages themselves live in ``scan.Scan``):

1. ``PolicySet.start(conversation, locale)`` -> ``Scan``: context detectors run once.
2. ``Scan.feed_sentence(sentence)`` -> the text to release for that sentence.
3. ``Scan.finish()`` -> ``Verdict``.

``PolicySet.evaluate`` runs exactly these stages over the sentences of ``text.SentenceSplitter``,
so a stream guard feeding the same text in any pieces reaches the same verdict. The engine does
no I/O and logs nothing; all per-reply state lives in the ``Scan``. What a ``PolicySet`` keeps
between evaluations holds no text: what its context detectors found in recent messages and
conversations (``context.MessageMemo``, ``context.ConversationMemo``) and which leaves go with
which literals (``LeafIndex``), all bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from guardrail.policy.conditions import Resolvers, compile_condition, compile_expression, resolve
from guardrail.policy.context import ConversationMemo, MessageMemo
from guardrail.policy.detectors import CONTEXT_SCOPES, DIRECT_LITERALS, Composite, Leaf, TextView
from guardrail.policy.model import Composition, Conversation, Evidence, Policy, Verdict
from guardrail.policy.prefilter import LiteralScanner
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


_GROUP = {
    "last_user": "user",
    "user_turns": "user",
    "assistant_turns": "assistant",
    "system": "system",
    "reply": "reply",
    "sentence": "reply",
}


def _scanner(leaves: Iterable[Leaf]) -> LiteralScanner | None:
    literals = frozenset().union(*(leaf.literals for leaf in leaves))
    return LiteralScanner(literals) if len(literals) > DIRECT_LITERALS else None


def _resolvers(composites: Iterable[Composite]) -> Resolvers:
    """Each composite's value as one function; counting composites are left out (the scan,
    which keeps the counts, puts their values in)."""
    return tuple(
        (c.name, compile_expression(c.python(), c.value)) for c in composites if not c.min_matches
    )


class LeafIndex:
    """Which leaves reading one kind of text, and which of their patterns, can match a given
    text, from its literals alone.

    Built once per policy set and kind of text: each pattern of each leaf has a bit; each
    prefilter literal points at the patterns needing it (a bit mask); patterns with no
    prefilter always run. ``chosen(view)`` ORs the masks of the literals present and hands
    back the leaves with a pattern left, in their order, each with those patterns' indices
    (what ``Leaf.find`` would choose itself, worked out once per distinct mask and remembered,
    at most ``_CHOICES``).
    """

    __slots__ = ("_always", "_chosen", "_leaves", "_mask_of", "_owner")

    _CHOICES = 4096

    def __init__(self, leaves: Iterable[Leaf]) -> None:
        self._leaves = tuple(leaves)
        self._always = 0
        self._mask_of: dict[str, int] = {}
        self._owner: list[tuple[int, int]] = []  # per bit: its leaf's index, its pattern's
        bit = 0
        for i, leaf in enumerate(self._leaves):
            for j, needed in enumerate(leaf.prefilters):
                self._owner.append((i, j))
                if needed is None:
                    self._always |= 1 << bit
                for lit in needed or ():
                    self._mask_of[lit] = self._mask_of.get(lit, 0) | 1 << bit
                bit += 1
        self._chosen: dict[int, tuple[tuple[Leaf, tuple[int, ...]], ...]] = {}

    def chosen(self, view: TextView) -> tuple[tuple[Leaf, tuple[int, ...] | None], ...]:
        """The leaves that may match ``view``, in their order, each with the indices of its
        patterns that may (None: no scanner for this text, every leaf chooses for itself)."""
        present = view.present()
        if present is None:
            return tuple((leaf, None) for leaf in self._leaves)
        mask = self._always
        mask_of = self._mask_of
        for lit in present:
            mask |= mask_of.get(lit, 0)
        chosen = self._chosen.get(mask)
        if chosen is None:
            chosen = self._choose(mask)
            if len(self._chosen) < self._CHOICES:
                self._chosen[mask] = chosen
        return chosen

    def _choose(self, mask: int) -> tuple[tuple[Leaf, tuple[int, ...]], ...]:
        """The leaves of the bits set in ``mask`` (bits go in leaf order, then pattern order),
        each with its patterns' indices: one step per bit set, not per leaf."""
        out: list[tuple[Leaf, list[int]]] = []
        owner = self._owner
        current = -1
        while mask:
            low = mask & -mask
            at, j = owner[low.bit_length() - 1]
            if at != current:
                out.append((self._leaves[at], [j]))
                current = at
            else:
                out[-1][1].append(j)
            mask ^= low
        return tuple((leaf, tuple(indices)) for leaf, indices in out)

    def candidates(self, view: TextView) -> tuple[Leaf, ...]:
        """The leaves that may match ``view``, in their order (all of them without a scanner)."""
        return tuple(leaf for leaf, _ in self.chosen(view))


class PolicySet:
    """An immutable, loaded set of detectors and policies (build it with ``load_policies``).

    Policies are kept sorted by (severity desc, id), which fixes the action order whatever the
    file order was. Safe to share between concurrent requests: all state lives in ``Scan``.
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
    ) -> None:
        prepare_reading()  # the tables for non-ASCII text, once per process, not on a request
        self._policies = tuple(sorted(policies, key=lambda p: (-p.severity_rank, p.id)))
        self._by_id = {p.id: p for p in self._policies}
        self._leaves = tuple(leaves)
        self._composites = tuple(composites)  # in dependency order
        self._detectors: dict[str, Leaf | Composite] = {d.name: d for d in self._leaves}
        self._detectors.update((d.name, d) for d in self._composites)
        self.resources = resources
        self.source = source
        self.digest = digest
        self.lists: Mapping[str, tuple[str, ...]] = dict(lists or {})
        self.composition = composition or Composition(sources=(source,) if source else ())
        """Sources, turned-off policies and overrides, for reports (never for evaluation)."""
        self.context_leaves = tuple(d for d in self._leaves if d.scope in CONTEXT_SCOPES)
        self.context_by_role: dict[str, tuple[Leaf, ...]] = {
            role: tuple(d for d in self.context_leaves if _GROUP[d.scope] == role)
            for role in ("user", "assistant", "system")
        }
        self.context_depth: dict[str, int] = {
            role: max((d.reach for d in leaves), default=0)
            for role, leaves in self.context_by_role.items()
            if leaves
        }
        """Per role, how many of its latest messages any context leaf reads."""
        self.context_reach = {d.name: d.reach for d in self.context_leaves}
        self.context_scope = {d.name: d.scope for d in self.context_leaves}
        self.context_min = {d.name: d.min_matches for d in self.context_leaves}
        self.context_defaults = dict.fromkeys((d.name for d in self.context_leaves), False)
        self.memo = MessageMemo()
        """What the context leaves found in recent messages (digests and spans, no text)."""
        self.conversations = ConversationMemo()
        """What the context leaves found in conversations judged recently and still alive."""
        self._max_user_chars = DEFAULT_MAX_USER_CHARS
        self.reply_leaves = tuple(d for d in self._leaves if d.reads_reply)
        self.reply_defaults = dict.fromkeys((d.name for d in self.reply_leaves), False)
        """Every reply leaf, false: their values before the first sentence."""
        self.sentence_leaves = tuple(d.name for d in self._leaves if d.scope == "sentence")
        self.sentence_policies = tuple(p for p in self._policies if p.sentence_level)
        self.sentence_locators = frozenset().union(*(p.locators for p in self.sentence_policies))
        needed = self._composites_behind(
            frozenset().union(*(p.condition.names() for p in self.sentence_policies))
        )
        self.sentence_composites = tuple(c for c in self._composites if c.name in needed)
        """The composites the sentence policies read, in dependency order."""
        self.counting = tuple(c for c in self._composites if c.min_matches)
        """Composites that count matches (``min_matches``); the scan computes their values."""
        self.counted: dict[str, int] = {}
        """Leaf -> how many distinct matches of it are worth keeping (for counting composites)."""
        for comp in self.counting:
            for part in comp.parts:
                self.counted[part] = max(self.counted.get(part, 0), comp.min_matches)
        self.published = tuple(n for n, d in self._detectors.items() if not d.internal)
        # One literal scanner per kind of text, over the literals of the detectors reading it;
        # None where so few literals are wanted that direct substring tests are cheaper.
        self.scanners: dict[str, LiteralScanner | None] = {
            group: _scanner(d for d in self._leaves if _GROUP[d.scope] == group)
            for group in ("user", "assistant", "system", "reply")
        }
        self.indexes: dict[str, LeafIndex] = {
            group: LeafIndex(d for d in self._leaves if _GROUP[d.scope] == group)
            for group in ("user", "assistant", "system", "reply")
        }
        self.policy_leaves = {
            p.id: self._leaves_of_all(p.condition.names()) for p in self._policies
        }
        self.conditions = {p.id: compile_condition(p.condition) for p in self._policies}
        """Each policy's condition as one function (``conditions.compile_condition``)."""
        self.resolvers = _resolvers(self._composites)
        self.sentence_resolvers = _resolvers(self.sentence_composites)
        self.constructs = _constructs(self._leaves, self._composites)
        """Leaf -> its clinical construct: its own ``construct``, else that of the innermost
        composite naming it directly (leaves with neither are absent)."""

    def constructs_of(self, evidence: Iterable[Evidence]) -> tuple[str, ...]:
        """The constructs behind ``evidence``, each once, in evidence order."""
        names = (self.constructs.get(ev.detector) for ev in evidence)
        return tuple(dict.fromkeys(n for n in names if n))

    # -------------------------------------------------------------- limits
    @property
    def max_user_chars(self) -> int:
        """The most characters of each user message the context detectors read: its last ones
        (the most recent text is what counts). Bounds the work a huge message can cause;
        ``DEFAULT_MAX_USER_CHARS`` unless set (the proxy's ``max_user_text_chars``)."""
        return self._max_user_chars

    @max_user_chars.setter
    def max_user_chars(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_user_chars must be a positive integer, got {value!r}")
        if value != self._max_user_chars:
            self._max_user_chars = value
            self.conversations = ConversationMemo(self.conversations.size)  # judged otherwise

    # -------------------------------------------------------------- introspection
    @property
    def policies(self) -> tuple[Policy, ...]:
        return self._policies

    @property
    def detectors(self) -> Mapping[str, Leaf | Composite]:
        return self._detectors

    @property
    def locales(self) -> tuple[str, ...]:
        return tuple(self.resources.locales)

    @property
    def default_locale(self) -> str:
        return self.resources.default_locale

    def policy(self, policy_id: str) -> Policy:
        return self._by_id[policy_id]

    def leaves_of(self, name: str) -> frozenset[str]:
        """The leaf detectors behind ``name`` (itself if it is a leaf)."""
        det = self._detectors[name]
        if isinstance(det, Leaf):
            return frozenset((name,))
        return self._leaves_of_all(det.parts)

    def _leaves_of_all(self, names: Iterable[str]) -> frozenset[str]:
        return frozenset().union(*(self.leaves_of(n) for n in names))

    def support_leaves(self, names: Iterable[str], signals: Mapping[str, bool]) -> set[str]:
        """The true leaves behind true ``names``: through ``any_of`` its true parts, through
        ``all_of`` all of them; a ``none_of`` holds by absence and contributes none."""
        out: set[str] = set()
        stack = [n for n in names if signals.get(n)]
        while stack:
            name = stack.pop()
            det = self._detectors[name]
            if isinstance(det, Leaf):
                out.add(name)
            elif det.mode != "none":  # a counting composite: every part may have counted
                stack.extend(
                    p for p in det.parts if (det.min_matches or signals.get(p)) and p not in out
                )
        return out

    def _composites_behind(self, names: Iterable[str]) -> set[str]:
        """The composites among ``names`` and behind them."""
        out: set[str] = set()
        stack = list(names)
        while stack:
            det = self._detectors[stack.pop()]
            if isinstance(det, Composite) and det.name not in out:
                out.add(det.name)
                stack.extend(det.parts)
        return out

    def resolve_signals(
        self, values: Mapping[str, bool], composites: Sequence[Composite] | None = None
    ) -> dict[str, bool]:
        """Leaf values plus every composite (or only ``composites``, in dependency order); a
        composite over a failed detector stays absent."""
        return resolve(values, self.resolvers if composites is None else _resolvers(composites))

    # -------------------------------------------------------------- evaluation
    def start(
        self, conversation: Conversation, locale: str | None = None, *, keep_text: bool = True
    ) -> Scan:
        """Begin evaluating a reply to ``conversation`` (context detectors run now).

        ``keep_text=False``: the scan keeps no reply text (bounded memory for streams); the
        verdict's ``reply`` then holds only the end-of-reply texts (see ``Scan``).
        """
        return Scan(self, conversation, locale, keep_text=keep_text)

    def evaluate(
        self, conversation: Conversation, reply: str, *, locale: str | None = None
    ) -> Verdict:
        """Evaluate a whole reply: the incremental scan over its sentences."""
        scan = Scan(self, conversation, locale, whole_reply=reply)
        splitter = SentenceSplitter()
        for sentence in splitter.feed(reply):
            scan.feed_sentence(sentence)
        rest = splitter.flush()
        if rest:
            scan.feed_sentence(rest)
        return scan.finish()


def _constructs(leaves: Sequence[Leaf], composites: Sequence[Composite]) -> dict[str, str]:
    out = {leaf.name: leaf.construct for leaf in leaves if leaf.construct}
    leaf_names = {leaf.name for leaf in leaves}
    for comp in composites:  # dependency order: inner composites first
        if comp.construct:
            for part in comp.parts:
                if part in leaf_names:
                    out.setdefault(part, comp.construct)
    return out
