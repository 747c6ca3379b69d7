"""What leads a reply streamed in ``sentence`` mode, decided before the reply or by its opening.

Policies whose condition reads no reply detector (``Policy.needs_reply`` false) cannot be changed
by the reply, so :class:`Lead` decides them when the reply starts, from a scan of the
conversation with an empty reply:

* a ``block`` among them (or one that failed closed) blocks the reply before any of it is
  released: ``Lead.block`` is the verdict and the text that replaces the reply;
* their ``prepend`` texts lead the reply (``Lead.texts``), most severe first;
* unless one of those prepends has an ``unless`` that reads only the reply's opening (leaves with
  ``first_sentences: N``, e.g. "the reply already opens with a crisis line"): then ``Lead.wait``
  is N, the guard holds the first N sentences, feeds them to :meth:`Lead.saw`, and once they are
  known (or the reply or its segment ended) asks :meth:`Lead.opening_keeps` which prepends a
  reply opening that way keeps, and :meth:`Lead.settle` gives the texts that lead. An ``unless``
  that reads the whole reply is not waited for: that prepend leads at once.

Pure: the engine is the only thing called, and what it raises is the caller's to handle (the
guard fails open, and :meth:`Lead.settle` with ``None`` keeps every prepend).
"""

from __future__ import annotations

from collections.abc import Iterable

from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.policy.facts import Facts
from guardrail.policy.model import Policy

__all__ = ["Lead", "opening_sentences"]


def opening_sentences(policyset: PolicySet, policy: Policy) -> int | None:
    """The reply sentences that decide ``policy``'s prepend ``unless`` when it reads only the
    reply's opening, else None (no ``unless``, or one that reads the whole reply)."""
    action = policy.action("prepend")
    if action is None or action.unless is None:
        return None
    plan = policyset.plan
    leaves = {leaf for name in action.unless.names() for leaf in plan.leaves_of(name)}
    firsts: list[int | None] = [
        getattr(plan.detectors[leaf], "first_sentences", None)
        for leaf in leaves
        if getattr(plan.detectors[leaf], "scope", "") in ("reply", "sentence")
    ]
    if not firsts or any(n is None for n in firsts):
        return None
    return max(n for n in firsts if n is not None)


class Lead:
    """The early decisions of one reply (see the module docstring). Construction runs the
    engine and may raise."""

    def __init__(
        self,
        policyset: PolicySet,
        conversation: Conversation,
        locale: str | None,
        facts: Facts | None,
    ) -> None:
        self._ps, self._conv, self._locale, self._facts = policyset, conversation, locale, facts
        self.block: tuple[Verdict, str] | None = None
        self.texts: tuple[str, ...] = ()
        self.wait = 0
        self._pairs: list[tuple[str, str]] = []  # (owner, text) of the prepends while waiting
        self._waited: frozenset[str] = frozenset()  # owners whose 'unless' reads the opening
        self._firsts: list[str] = []  # the opening's sentences seen so far
        self._decide()

    def _decide(self) -> None:
        early = [
            p
            for p in self._ps.policies
            if p.mode == "enforce"
            and not p.needs_reply
            and (p.action("prepend") is not None or p.action("block") is not None)
        ]
        if not early:
            return
        scan = self._ps.start(self._conv, self._locale, keep_text=False, facts=self._facts)
        probe, ends = scan.finish(), scan.end_texts  # the verdict on an empty reply
        ids = {h.policy for h in probe.hits if h.mode == "enforce" and h.error is None}
        if any(p.action("block") is not None and p.id in ids for p in early) or (
            probe.blocked and self._closed_early(probe)
        ):
            self.block = (probe, ends.block or "")
            return
        # ends.prepends holds one text per enforced prepend hit without error, in hit order
        owners = [
            h.policy
            for h in probe.hits
            if h.mode == "enforce"
            and h.error is None
            and self._ps.policy(h.policy).action("prepend") is not None
        ]
        chosen = [p for p in early if p.id in ids]
        chosen_ids = {p.id for p in chosen}
        self._pairs = [(o, t) for o, t in zip(owners, ends.prepends) if o in chosen_ids]
        waits = {p.id: n for p in chosen if (n := opening_sentences(self._ps, p)) is not None}
        if waits:  # an 'unless' reads the reply's opening: decide once it is known
            self.wait, self._waited = max(waits.values()), frozenset(waits)
            return
        self.texts = _unique(t for _, t in self._pairs)

    def _closed_early(self, probe: Verdict) -> bool:
        """Whether a policy the reply cannot change failed closed on the conversation: its text
        (e.g. the crisis line of a failing crisis policy) then leads, in place of the reply."""
        return any(
            h.error is not None
            and h.action == "block"
            and h.mode == "enforce"
            and not self._ps.policy(h.policy).needs_reply
            for h in probe.hits
        )

    def saw(self, sentence: str) -> None:
        """One more sentence of the reply, while the opening is awaited."""
        if self.wait:
            self._firsts.append(sentence)

    @property
    def opened(self) -> bool:
        """Whether the awaited opening is complete (its blank sentences do not count)."""
        return sum(1 for s in self._firsts if s.strip()) >= self.wait

    def opening_keeps(self) -> frozenset[str]:
        """The prepends a reply with this opening keeps (a scan of the opening alone: the leaves
        the ``unless`` reads see only these sentences). May raise."""
        scan = self._ps.start(self._conv, self._locale, keep_text=False, facts=self._facts)
        for sentence in self._firsts:
            scan.feed_sentence(sentence)
        scan.finish()
        return frozenset(scan.end_texts.prepends)

    def settle(self, kept: frozenset[str] | None) -> tuple[str, ...]:
        """The texts that lead, given what the opening keeps (None: unknown, after an engine
        failure: every prepend leads, since they are safety texts)."""
        self.texts = _unique(
            t for o, t in self._pairs if kept is None or o not in self._waited or t in kept
        )
        self.wait, self._firsts = 0, []
        return self.texts


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))
