"""The engine: a loaded, immutable ``PolicySet``; ``evaluate`` and ``start`` run it.

Stages of one evaluation (the stages themselves live in ``scan.Scan``):

1. ``PolicySet.start(conversation, locale)`` -> ``Scan``: context detectors run once.
2. ``Scan.feed_sentence(sentence)`` -> the text to release for that sentence.
3. ``Scan.finish()`` -> ``Verdict``.

``PolicySet.evaluate`` runs exactly these stages over the sentences of ``text.SentenceSplitter``,
so a stream guard feeding the same text in any pieces reaches the same verdict. The engine does
no I/O and logs nothing; all per-reply state lives in the ``Scan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from guardrail.policy.detectors import CONTEXT_SCOPES, DIRECT_LITERALS, Composite, Leaf
from guardrail.policy.model import Conversation, Policy, Verdict
from guardrail.policy.prefilter import LiteralScanner
from guardrail.policy.resources import Resources
from guardrail.policy.scan import Scan
from guardrail.policy.text import SentenceSplitter

__all__ = ["PolicySet", "Scan"]


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
    ) -> None:
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
        self.context_leaves = tuple(d for d in self._leaves if d.scope in CONTEXT_SCOPES)
        self.reply_leaves = tuple(d for d in self._leaves if d.reads_reply)
        self.sentence_leaves = tuple(d.name for d in self._leaves if d.scope == "sentence")
        self.sentence_policies = tuple(p for p in self._policies if p.sentence_level)
        self.published = tuple(n for n, d in self._detectors.items() if not d.internal)
        # One literal scanner per kind of text, over the literals of the detectors reading it;
        # None where so few literals are wanted that direct substring tests are cheaper.
        self.scanners: dict[str, LiteralScanner | None] = {
            group: _scanner(d for d in self._leaves if _GROUP[d.scope] == group)
            for group in ("user", "assistant", "system", "reply")
        }
        self.policy_leaves = {
            p.id: self._leaves_of_all(p.condition.names()) for p in self._policies
        }

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

    def resolve_signals(self, values: Mapping[str, bool]) -> dict[str, bool]:
        """Leaf values plus every composite; a composite over a failed detector stays absent."""
        out = dict(values)
        for comp in self._composites:
            try:
                out[comp.name] = comp.value(out)
            except KeyError:
                pass
        return out

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
