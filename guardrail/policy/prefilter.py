"""Cheap necessary-literal prefilters for policy regexes, derived once at load.

Python's regex engine tries a pattern that starts with a lookbehind or ``\\b`` at every position
of the text, which makes a pack of hand-written regexes the dominant cost of an evaluation. Most
texts cannot match most patterns, and that can be known in advance: ``necessary_literals`` reads a
pattern's syntax tree and returns a few strings of which at least one occurs in EVERY match
(e.g. ``("die",)`` for ``\\bwant(?:s|ed)? to die\\b``), or None when it finds no useful set.
A detector skips the full regex when none of them occurs in the (lower-cased) text: a substring
test runs at memory speed, and ``LiteralScanner`` finds which of a whole pack's literals occur in
one pass (an Aho-Corasick automaton).

Sound by construction: literal runs are only joined across zero-width assertions, optional and
alternative parts become sets of strings, anything else breaks a run. Only ASCII literals are used
(``text.normalise`` maps the few non-ASCII letters that IGNORECASE matches to ASCII ones).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import operator
import re
from collections.abc import Iterable
from typing import Any

from guardrail.policy.text import normalise

__all__ = ["LiteralScanner", "necessary_literals", "phrase_literal", "phrase_literals"]

_MAX_SET = 200
_MIN_LEN = 2
_LONG_ENOUGH = 12

try:  # the stdlib regex parser; any surprise just disables prefiltering
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover
    _parser = None
    _c = None
try:  # the Aho-Corasick automaton of ``LiteralScanner`` (pyahocorasick ships no type hints)
    _ahocorasick: Any = importlib.import_module("ahocorasick")
except ImportError:  # pragma: no cover -- the regex scanner gives the same answers, slower
    _ahocorasick = None

Lits = frozenset[str]
_second = operator.itemgetter(1)  # of the automaton's (end, literal) pairs


def _product(a: Lits, b: Lits) -> Lits | None:
    if len(a) * len(b) > _MAX_SET * 2:
        return None
    return frozenset(x + y for x, y in itertools.product(a, b))


def _never(ch: str) -> bool:
    """A character ``text.normalise`` always replaces (a curly quote), so never in a text."""
    return normalise(ch) != ch.lower()


def _exact(op: Any, av: Any) -> Lits | None:
    """The finite set of strings this element matches exactly, or None."""
    if op is _c.LITERAL:
        ch = chr(av).lower()
        if _never(chr(av)):
            return frozenset()  # can never match a normalised text
        return frozenset((ch,)) if ch.isascii() else None
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return frozenset(("",))
    if op is _c.IN:
        chars = set()
        for iop, iav in av:
            if iop is not _c.LITERAL:
                return None
            if not _never(chr(iav)):  # e.g. ['’]: only the straight one can occur
                chars.add(chr(iav).lower())
        return frozenset(chars) if len(chars) <= 4 and all(ch.isascii() for ch in chars) else None
    if op is _c.SUBPATTERN:
        return _exact_seq(av[-1])
    if op is _c.BRANCH:
        out: set[str] = set()
        for alt in av[1]:
            alt_set = _exact_seq(alt)
            if alt_set is None:
                return None
            out |= alt_set
        return frozenset(out) if len(out) <= _MAX_SET * 4 else None
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and av[0] == 0 and av[1] == 1:
        inner = _exact_seq(av[2])
        return None if inner is None else inner | {""}
    return None


def _exact_seq(seq: Any) -> Lits | None:
    acc: Lits | None = frozenset(("",))
    for op, av in seq:
        item = _exact(op, av)
        if item is None or acc is None:
            return None
        acc = _product(acc, item)
    return acc


def _necessary_item(op: Any, av: Any) -> Lits | None:
    if op is _c.SUBPATTERN:
        return _necessary_seq(av[-1])
    if op is getattr(_c, "ATOMIC_GROUP", None):
        return _necessary_seq(av)
    if op is _c.BRANCH:
        out: set[str] = set()
        for alt in av[1]:
            alt_set = _necessary_seq(alt)
            if alt_set is None:
                return None
            out |= alt_set
        return frozenset(out)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)) and av[0] >= 1:
        return _necessary_seq(av[2])
    return None


_COMMON = frozenset(
    (
        "a",
        "about",
        "all",
        "am",
        "an",
        "and",
        "are",
        "at",
        "be",
        "but",
        "can",
        "do",
        "don",
        "feel",
        "for",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "just",
        "like",
        "me",
        "my",
        "need",
        "no",
        "not",
        "of",
        "on",
        "so",
        "that",
        "the",
        "this",
        "to",
        "want",
        "was",
        "what",
        "who",
        "why",
        "with",
        "you",
    )
)


_NON_ALNUM = re.compile(r"[\W_]+")


@functools.cache
def _frequency(lit: str) -> float:
    """A rough chance that ``lit`` occurs in a chat message: common words almost always do."""
    words = lit.split()
    if not words or (len(words) == 1 and words[0] in _COMMON):
        return 1.0
    letters = len(_NON_ALNUM.sub("", lit))
    if not letters:  # punctuation ("?", ":("): in some texts, not most
        return 0.3 if lit.strip() else 1.0
    return float(0.55 ** max(letters - 1, 0))


def _cost(lits: Lits) -> float:
    """Rough cost of a prefilter: a little per string (one scanner pass finds them all), plus
    the full regex whenever one of them occurs."""
    return 0.002 * len(lits) + math.fsum(map(_frequency, lits))  # in any order: the same


def _long_enough(lit: str) -> bool:
    """Two characters at least, or one punctuation mark (a "?" is rare enough to test for)."""
    return len(lit) >= _MIN_LEN or (len(lit) == 1 and not lit.isalnum() and not lit.isspace())


def _usable(lits: Lits | None) -> bool:
    """Worth a prefilter: not too many strings, none too short, no very common word."""
    return (
        lits is not None
        and 0 < len(lits) <= _MAX_SET
        and all(map(_long_enough, lits))
        and all(_frequency(s) < 1.0 for s in lits)
    )


def _necessary_seq(seq: Any) -> Lits | None:
    """The best necessary set of a sequence: a window of consecutive exactly-known elements
    (joined as a product), or the necessary set of one other element."""
    elements = list(seq)
    exacts = [_exact(op, av) for op, av in elements]
    candidates: list[Lits] = []
    for i, first in enumerate(exacts):
        if first is None:
            found = _necessary_item(*elements[i])
            if found is not None:
                candidates.append(found)
            continue
        acc: Lits | None = frozenset(("",))
        for item in exacts[i:]:
            if item is None or acc is None:
                break
            acc = _product(acc, item)
            if acc is None or len(acc) > _MAX_SET:
                break
            candidates.append(acc)
            if min(map(len, acc)) >= _LONG_ENOUGH:  # rare enough: longer windows gain little
                break
    usable = [c for c in candidates if _usable(c)]
    return min(usable, key=_cost) if usable else None


_WORD_RUN = re.compile(r"\w+")


def phrase_literal(key: str) -> str | None:
    """The rarest run of word characters of one phrase (None: every run is short or common)."""
    if " " not in key and "-" not in key and len(key) >= _MIN_LEN and key.isascii():
        return key  # one token ("a&e", "988"): the trie matches it exactly, as it is
    runs = [r for r in _WORD_RUN.findall(key) if len(r) >= _MIN_LEN and r.isascii()]
    if not runs:
        return None
    best = min(runs, key=lambda r: (_frequency(r), -len(r)))
    return best if _frequency(best) < 1.0 else None


def phrase_literals(keys: Iterable[str]) -> tuple[str, ...] | None:
    """A prefilter for a phrase trie (``detectors.phrase_pattern``), read off the phrases
    themselves: the rarest run of word characters of each phrase, which every match of that
    phrase contains as it is (only the spaces and hyphens between runs are flexible). None when
    some phrase has no usable run."""
    chosen: set[str] = set()
    for key in keys:
        best = phrase_literal(key)
        if best is None:
            return None
        chosen.add(best)
    if not chosen or len(chosen) > _MAX_SET:
        return None
    return tuple(sorted(chosen))


@functools.cache
def necessary_literals(pattern: str, flags: int) -> tuple[str, ...] | None:
    """Strings one of which every match of ``pattern`` contains (lower-case), or None."""
    if _parser is None:
        return None
    try:
        tree = _parser.parse(pattern, flags)
        found = _necessary_seq(tree.data)
    except Exception:  # noqa: BLE001 -- unknown construct: no prefilter, never a wrong one
        return None
    if not _usable(found):
        return None
    assert found is not None
    return tuple(sorted(found))


class LiteralScanner:
    """Finds which of a fixed set of literals occur in a text (as substrings, overlaps included).

    Built once per policy set from every pattern's necessary literals. With ``pyahocorasick``
    installed (a declared dependency) it is an Aho-Corasick automaton: one pass over the text
    in C, every occurrence reported, 5 to 10 times faster than the regex below on the default
    pack (bench/README.md, section 7). Without it (or with ``automaton=False``, which the tests
    use as the reference) it is one regex: a lookahead at each position reports the longest
    literal starting there, and the literals that are prefixes of it are present too. Both give
    the same set for every text.
    """

    __slots__ = ("_automaton", "_prefixes", "_regex")

    def __init__(self, literals: frozenset[str], *, automaton: bool = True) -> None:
        self._automaton: Any = None
        self._regex: re.Pattern[str] | None = None
        self._prefixes: dict[str, frozenset[str]] = {}
        if not literals:
            return
        if automaton and _ahocorasick is not None:
            self._automaton = _ahocorasick.Automaton()
            for lit in literals:
                self._automaton.add_word(lit, lit)
            self._automaton.make_automaton()
            return
        trie: dict[str, Any] = {}
        for lit in literals:
            node = trie
            for ch in lit:
                node = node.setdefault(ch, {})
            node[""] = {}
        self._regex = re.compile(f"(?=({_literal_trie(trie)}))")
        self._prefixes = {
            lit: frozenset(lit[:i] for i in range(1, len(lit) + 1) if lit[:i] in literals)
            for lit in literals
        }

    def present(self, norm: str) -> frozenset[str]:
        """The literals occurring in ``norm`` (a ``text.normalise``d text)."""
        if self._automaton is not None:
            return frozenset(map(_second, self._automaton.iter(norm)))
        if self._regex is None:
            return frozenset()
        found: set[str] = set()
        prefixes = self._prefixes
        for lit in set(self._regex.findall(norm)):
            found |= prefixes[lit]
        return frozenset(found)


def _literal_trie(node: dict[str, Any]) -> str:
    alts = [re.escape(ch) + _literal_trie(node[ch]) for ch in sorted(node) if ch]
    if "" in node:
        alts.append("")
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
