"""How long a text each policy regex is proven safe on, read from the pattern's shape.

``boundedregex`` keeps every policy regex under a CPU-time bound, and the ``regex`` module checks
that bound by reading the process CPU clock, a system call, on every search: 2 to 4.5 µs each on
the reference machine, some 30 times per reply. On ordinary sentences most of the pack's patterns
cannot come near the bound anyway; this module proves it, and those searches skip the clock.

The proof is a count of a backtracking matcher's steps on a text of at most ``n`` characters.
For one start position, ``work`` bounds the steps tried and ``paths`` the ways the pattern can
go on from a point (each way re-runs everything after it):

* a character, a class, an anchor: 1 step, 1 way;
* a sequence ``X Y``: ``work(X) + paths(X) * work(Y)`` and ``paths(X) * paths(Y)``;
* an alternation: the sum of its branches; an alternation of plain words costs what comparing
  each word does (``len(words)`` plus the most prefix characters the worst text shares with
  them), and goes on in as many ways as words can be prefixes of one another;
* a lookaround or an atomic group: its body's work, 1 way;
* a repeat of one character class: it takes at most ``r`` characters (its own limit, else
  ``n``): work ``2 * (r + 1)``, and ``r + 1`` ways on, or 1 way when no character of the class
  can start what follows (``\\w+`` then a space, ``\\s+`` then a word, ``\\w+`` then ``\\b``):
  giving a character back then fails at the very next step;
* a bounded repeat of anything else: its copies in sequence, the optional ones as
  alternations with nothing; an unbounded one only when its body goes on in one way, as at most
  ``n / min_width + 1`` copies;
* anything else (backreferences, conditionals, an unbounded repeat whose body branches, a
  construct the stdlib parser does not read): no bound, and the clock stays.

A search over ``n`` characters then takes at most ``(n + 1) * work`` steps.
``unclocked_length(pattern, flags)`` is the longest text on which that is at most
``STEP_LIMIT`` (-1: none), worked out once per pattern over the lengths in ``N_BUCKETS``;
``boundedregex`` runs a search without the clock when the text is no longer. At the engine's
measured cost per step (``python -m bench.regex_bound`` prints the worst search of the pack's
patterns on hostile texts of the longest unclocked length) that stays a small fraction of
``boundedregex.BASE_SECONDS``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from guardrail.policy.regexshape import STDLIB_CONSTANTS, STDLIB_PARSER

__all__ = ["N_BUCKETS", "STEP_LIMIT", "unclocked_length"]

N_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)
"""Text lengths the count is worked out for; longer texts always keep the clock."""
STEP_LIMIT = 200_000
"""Steps a search may take, at worst, without the clock."""

_CAP = 1 << 40  # larger than any limit: "no useful bound"

_parser: Any = STDLIB_PARSER  # None: no proof, every search keeps the clock
_c: Any = STDLIB_CONSTANTS

_WS = frozenset(chr(c) for c in range(0x3001) if chr(c).isspace())
"""Every character ``str.split`` treats as whitespace (none lies beyond U+3000)."""
_ANY = (True, True)  # (may be whitespace, may be something else)


class _NoBound(Exception):
    """The pattern has a construct this count cannot bound."""


# --------------------------------------------------------------------------- the pattern's side


@functools.lru_cache(maxsize=4096)
def unclocked_length(pattern: str, flags: int) -> int:
    """The longest text (characters) on which a search of ``pattern`` provably takes at most
    ``STEP_LIMIT`` steps; -1 when there is none (no bound, or too costly even on short text).

    ``work`` never falls as ``n`` grows, so the lengths that fit are the buckets up to the last
    that fits whole (found by bisection), and part of the next one."""
    data = _parsed(pattern, flags)
    icase = bool(flags & re.IGNORECASE)
    if data is None or steps(data, N_BUCKETS[0], icase) is None:
        return -1

    def fits(i: int) -> bool:
        work = steps(data, N_BUCKETS[i], icase)
        return work is not None and (N_BUCKETS[i] + 1) * work <= STEP_LIMIT

    lo, hi = -1, len(N_BUCKETS)  # fits(lo) (or none yet), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    best = N_BUCKETS[lo] if lo >= 0 else -1
    if hi < len(N_BUCKETS):  # part of the next bucket may fit
        work = steps(data, N_BUCKETS[hi], icase)
        if work is not None:
            best = max(best, STEP_LIMIT // work - 1)
    return best


def steps(data: Any, n: int, icase: bool = False) -> int | None:
    """``work`` of a parsed pattern on texts of at most ``n`` characters; None: no bound."""
    try:
        return _Count(n, icase).seq(data, None)[0]
    except (_NoBound, RecursionError):
        return None


@functools.lru_cache(maxsize=4096)
def _parsed(pattern: str, flags: int) -> Any:
    if _parser is None:
        return None
    try:
        return _parser.parse(pattern, flags).data
    except Exception:  # noqa: BLE001 -- a construct the stdlib does not read: no bound
        return None


def _kinds(op: Any, av: Any) -> tuple[bool, bool] | None:
    """(may be whitespace, may be something else) of a one-character item; None otherwise."""
    if op is _c.LITERAL:
        blank = chr(av) in _WS
        return blank, not blank
    if op is _c.NOT_LITERAL or op is _c.ANY:
        return _ANY
    if op is _c.CATEGORY:
        if av is _c.CATEGORY_SPACE:
            return True, False
        if av in (_c.CATEGORY_WORD, _c.CATEGORY_DIGIT, _c.CATEGORY_NOT_SPACE):
            return False, True
        return _ANY
    if op is _c.IN:
        blank = other = False
        for iop, iav in av:
            if iop is _c.NEGATE:
                return _ANY
            if iop is _c.RANGE:
                lo, hi = iav
                blank = blank or any(lo <= ord(ch) <= hi for ch in _WS)
                other = other or any(chr(x) not in _WS for x in range(lo, min(hi, lo + 64) + 1))
                continue
            inner = _kinds(iop, iav)
            if inner is None:
                return _ANY
            blank, other = blank or inner[0], other or inner[1]
        return blank, other
    return None


def _wordy(op: Any, av: Any) -> bool:
    """Whether a one-character item matches word characters only (so ``\\b`` after a run of
    them fails inside the run)."""
    if op is _c.CATEGORY:
        return bool(av in (_c.CATEGORY_WORD, _c.CATEGORY_DIGIT))
    if op is _c.LITERAL:
        return chr(av).isalnum() or chr(av) == "_"
    if op is _c.IN:
        return all(iop is not _c.NEGATE and _wordy_member(iop, iav) for iop, iav in av)
    return False


def _wordy_member(op: Any, av: Any) -> bool:
    if op is _c.RANGE:
        return all(chr(x).isalnum() for x in range(av[0], av[1] + 1))
    return _wordy(op, av)


def _union(a: tuple[bool, bool], b: tuple[bool, bool]) -> tuple[bool, bool]:
    return a[0] or b[0], a[1] or b[1]


def _first(items: Sequence[Any]) -> tuple[tuple[bool, bool], bool]:
    """The kinds of character a match of ``items`` can start with, and whether it can be empty
    (zero-width items are passed over: counting more kinds only weakens the proof)."""
    kinds = (False, False)
    for op, av in items:
        one = _kinds(op, av)
        if one is not None:
            return _union(kinds, one), False
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        if op in (_c.SUBPATTERN, _c.ATOMIC_GROUP):
            inner, empty = _first(av[-1] if op is _c.SUBPATTERN else av)
        elif op is _c.BRANCH:
            inner, empty = (False, False), False
            for alt in av[1]:
                k, e = _first(alt)
                inner, empty = _union(inner, k), empty or e
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            inner, empty = _first(av[2])
            empty = empty or av[0] == 0
        else:
            return _ANY, True
        kinds = _union(kinds, inner)
        if not empty:
            return kinds, False
    return kinds, True


def _min_width(items: Sequence[Any]) -> int:
    try:
        return int(_parser.SubPattern(_parser.State(), list(items)).getwidth()[0])
    except Exception:  # noqa: BLE001 -- unknown: treat as possibly empty
        return 0


class _Count:
    """The step count of one pattern on texts of at most n characters (see the module docstring)."""

    def __init__(self, n: int, icase: bool) -> None:
        self.n = n
        self.icase = icase

    def seq(self, items: Sequence[Any], follow: tuple[bool, bool] | None) -> tuple[int, int]:
        """(work, paths) of a sequence followed by something starting with ``follow`` kinds
        (None: nothing more, or unknown)."""
        afters = _afters(items, follow)
        work, paths = 0, 1
        for i, (op, av) in enumerate(items):
            w, p = self.item(op, av, afters[i], items[i + 1] if i + 1 < len(items) else None)
            work = min(_CAP, work + paths * w)
            paths = min(_CAP, paths * p)
        return work, paths

    def item(
        self, op: Any, av: Any, follow: tuple[bool, bool] | None, nxt: Any
    ) -> tuple[int, int]:
        if _kinds(op, av) is not None or op is _c.AT:
            return 1, 1
        if op is _c.SUBPATTERN:
            return self.seq(av[-1], follow)
        if op is _c.ATOMIC_GROUP:
            return self.seq(av, follow)[0], 1
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            return self.seq(av[1], None)[0] + 1, 1
        if op is _c.BRANCH:
            return self.branch(av[1], follow)
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            return self.repeat(op, av, follow, nxt)
        raise _NoBound(op)

    def branch(self, alts: Sequence[Any], follow: tuple[bool, bool] | None) -> tuple[int, int]:
        words = _words(alts)
        if words is not None:
            return _trie(tuple(w.lower() for w in words) if self.icase else tuple(words))
        work = paths = 0
        for alt in alts:
            w, p = self.seq(alt, follow)
            work, paths = min(_CAP, work + w), min(_CAP, paths + p)
        return work, paths

    def repeat(
        self, op: Any, av: Any, follow: tuple[bool, bool] | None, nxt: Any
    ) -> tuple[int, int]:
        lo, hi, body = av
        unbounded = hi is _c.MAXREPEAT
        if len(body) == 1 and (kinds := _kinds(*body[0])) is not None:
            r = self.n if unbounded else min(self.n, hi)
            single = op is _c.POSSESSIVE_REPEAT or _disjoint(kinds, follow)
            if nxt is not None and nxt[0] is _c.AT and nxt[1] is _c.AT_BOUNDARY:
                single = single or _wordy(*body[0])
            return 2 * (r + 1), 1 if single else max(r - lo, 0) + 1
        if unbounded:
            width = _min_width(body)
            w, p = self.seq(body, None)
            if width < 1 or p > 1:
                raise _NoBound("an unbounded repeat of a branching body")
            copies = self.n // width + 1
            return min(_CAP, copies * (w + 1)), 1 if op is _c.POSSESSIVE_REPEAT else copies
        first, _ = _first(body)
        inner = None if follow is None else _union(first, follow)  # another copy, or the rest
        w, p = self.seq(body, inner)
        work, paths = 0, 1
        for i in range(hi):
            cw, cp = (w, p) if i < lo else (w + 1, p + 1)
            work, paths = min(_CAP, work + paths * cw), min(_CAP, paths * cp)
            if work >= _CAP:
                break
        return work, 1 if op is _c.POSSESSIVE_REPEAT else paths


def _afters(
    items: Sequence[Any], follow: tuple[bool, bool] | None
) -> list[tuple[bool, bool] | None]:
    """For each item of a sequence, the kinds of character that can come right after it (None:
    unknown), in one pass from the end."""
    out: list[tuple[bool, bool] | None] = [None] * len(items)
    after = follow
    for i in range(len(items) - 1, -1, -1):
        out[i] = after
        kinds, empty = _first(items[i : i + 1])
        after = kinds if not empty else (None if after is None else _union(kinds, after))
    return out


def _disjoint(kinds: tuple[bool, bool], follow: tuple[bool, bool] | None) -> bool:
    """Whether no character of ``kinds`` can start what follows (None: unknown, so no)."""
    if follow is None:
        return False
    return not (kinds[0] and follow[0]) and not (kinds[1] and follow[1])


def _words(alts: Sequence[Any]) -> list[str] | None:
    """The branches as plain words, when every branch is one."""
    out = []
    for alt in alts:
        if not all(op is _c.LITERAL for op, _ in alt):
            return None
        out.append("".join(chr(av) for _, av in alt))
    return out


def _lcp(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@functools.lru_cache(maxsize=4096)
def _trie(words: tuple[str, ...]) -> tuple[int, int]:
    """An alternation of words at one position: every word is compared for as long as the text
    agrees with it (at most the prefix it shares with the text, which the worst text makes one
    of the words), and it goes on in as many ways as words are prefixes of one text."""
    work = len(words) + max(sum(_lcp(a, b) for a in words) for b in words)
    paths = max(sum(1 for a in words if b.startswith(a)) for b in words)
    return work, paths
