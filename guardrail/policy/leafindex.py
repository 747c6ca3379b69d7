"""``LeafIndex``: which leaves reading one kind of text, and which of their patterns, can match
a given text, worked out from the literals the text contains.

Built once per policy set and kind of text (``plan.plan``); a scan asks it per message or
sentence. Its only state after construction is a bounded memory of choices already made.
"""

from __future__ import annotations

from collections.abc import Iterable

from guardrail.policy.detectors import Leaf, TextView

__all__ = ["LeafIndex"]


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
