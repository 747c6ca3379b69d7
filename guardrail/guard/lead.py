"""What leads a reply streamed in ``sentence`` mode, decided before the reply's first token.

Policies whose condition reads no reply detector (``Policy.needs_reply`` false) cannot be changed
by the reply, so :class:`Lead` decides them when the reply starts, from a scan of the
conversation with an empty reply:

* a ``block`` among them (or one that failed closed) blocks the reply before any of it is
  released: ``Lead.block`` is the verdict and the text that replaces the reply;
* their ``prepend`` texts lead the reply (``Lead.texts``), most severe first, with no wait for
  the reply. A prepend whose ``unless`` reads the reply (the crisis lines are left out of a
  whole reply that already opens with one) is released before the reply is known, so a
  streamed reply that opens with its own crisis line shows two. That is the price of a crisis
  line that never waits: holding the reply's opening to decide would delay the line by as long
  as the model takes to write two sentences, which for a reasoning model can be minutes, and
  for an upstream that stalls, for ever. Routes that want the whole-reply result use ``full``.

Pure: the engine is the only thing called, and what it raises is the caller's to handle (the
guard fails open).
"""

from __future__ import annotations

from collections.abc import Iterable

from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.policy.facts import Facts

__all__ = ["Lead"]


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
        chosen = {p.id for p in early if p.id in ids}
        self.texts = _unique(t for o, t in zip(owners, ends.prepends) if o in chosen)

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


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))
