"""Reading the shape of policy regexes, once at load: for speed, and for the probe.

* ``split_branches``: a regex whose top level is an alternation has no literal common to all
  of its matches, so it gets no prefilter as a whole; the loader splits it into its branches
  (for detectors where only "some branch matched" counts) so that each can have one.
* ``first_char_hint``: Python's regex engine scans quickly for a pattern whose first character
  is known, but a pattern starting with ``\\b`` or a lookbehind is tried at every position; a
  zero-width lookahead on the possible first characters restores the fast scan.

* ``attack_texts``: texts built from a pattern on which it takes very long if it backtracks
  catastrophically (each repeat pumped, then a character that makes the match fail), for
  ``boundedregex.probe``.

All are pure functions of the pattern text (read with the stdlib parser); anything they do not
understand is left as it is (no hint, no split, no texts).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "STDLIB_CONSTANTS",
    "STDLIB_PARSER",
    "attack_texts",
    "first_char_hint",
    "split_branches",
]

try:  # the stdlib regex parser; any surprise just disables the hint (and regexcost's proof)
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover
    _parser = None
    _c = None
STDLIB_PARSER: Any = _parser
"""``re._parser`` (None where it cannot be imported): what reads a pattern's shape here and in
:mod:`guardrail.policy.regexcost`."""
STDLIB_CONSTANTS: Any = _c
"""``re._constants``, its opcodes (None with it)."""

_MAX_FIRST = 40


def _first_item(op: Any, av: Any) -> tuple[frozenset[str] | None, bool]:
    """(first characters of this element, whether it can match the empty string)."""
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return frozenset(), True
    if op is _c.LITERAL:
        return frozenset((chr(av).lower(),)), False
    if op is _c.IN:
        chars: set[str] = set()
        for iop, iav in av:
            if iop is _c.LITERAL:
                chars.add(chr(iav).lower())
            elif iop is _c.RANGE and iav[1] - iav[0] < _MAX_FIRST:
                chars.update(chr(c).lower() for c in range(iav[0], iav[1] + 1))
            else:
                return None, False
        return frozenset(chars), False
    if op is _c.SUBPATTERN:
        return _first_seq(av[-1])
    if op is _c.BRANCH:
        out: set[str] = set()
        empty = False
        for alt in av[1]:
            first, alt_empty = _first_seq(alt)
            if first is None:
                return None, False
            out |= first
            empty = empty or alt_empty
        return frozenset(out), empty
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        first, inner_empty = _first_seq(av[2])
        return first, inner_empty or av[0] == 0
    return None, False


def _first_seq(seq: Any) -> tuple[frozenset[str] | None, bool]:
    out: set[str] = set()
    for op, av in seq:
        first, empty = _first_item(op, av)
        if first is None:
            return None, False
        out |= first
        if not empty:
            return frozenset(out), False
    return frozenset(out), True


@functools.cache
def first_char_hint(pattern: str, flags: int) -> str:
    """``pattern`` with a lookahead on the characters any match must start with, when known.

    Python's regex engine scans quickly for a pattern whose first character comes from a known
    set, but a pattern that starts with ``\\b`` or a lookbehind gets no such scan and is tried
    at every position. The lookahead (``(?=[abc])``) restores the fast scan; it matches nothing
    itself, so matches and spans are unchanged. The pattern comes back as it is when its first
    characters are not a small known set (or it may match the empty string).
    """
    if _parser is None:
        return pattern
    try:
        first, empty = _first_seq(_parser.parse(pattern, flags).data)
    except Exception:  # noqa: BLE001 -- unknown construct: no hint
        return pattern
    if first is None or empty or not first or len(first) > _MAX_FIRST:
        return pattern
    if any(not ch.isascii() or ch.isspace() for ch in first):
        return pattern
    m = _GLOBAL_FLAGS.match(pattern)
    head, rest = (m.group(), pattern[m.end() :]) if m else ("", pattern)
    chars = "".join(sorted(first))
    return f"{head}(?=[{re.escape(chars)}])(?:{rest})"


_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


def split_branches(pattern: str) -> list[str]:
    """The top-level alternatives of ``pattern`` (``a|b(c|d)`` -> ``["a", "b(c|d)"]``).

    A regex whose top level is an alternation has no literal common to every match, so it gets
    no prefilter as a whole; split, each branch can get its own. Brackets, groups and escapes
    are respected; leading global flags (``(?i)``) are carried to every branch. A pattern with
    one branch comes back as ``[pattern]``.
    """
    flags = ""
    m = _GLOBAL_FLAGS.match(pattern)
    if m is not None:
        flags, pattern = m.group(), pattern[m.end() :]
    branches: list[str] = []
    depth = 0
    start = 0
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":  # a literal "]" first in the class
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
        i += 1
    branches.append(pattern[start:])
    return [flags + b for b in branches]


# ------------------------------------------------------------------ adversarial texts

_PUMP_CHARS = 1024
"""How long a pumped text grows: far past where a backtracking pattern explodes, short enough
that probing a whole pack at load costs milliseconds."""
_MAX_PUMP = 8192
_MAX_REPEATS = 24
"""Repeats probed per pattern (the first ones, in pattern order)."""
_FILLERS = "zq0 !-\n"
_KILLERS = ("!",)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


_CATEGORY_CHECKS: dict[str, Callable[[str], bool]] = {
    "CATEGORY_DIGIT": str.isdigit,
    "CATEGORY_NOT_DIGIT": lambda ch: not ch.isdigit(),
    "CATEGORY_SPACE": str.isspace,
    "CATEGORY_NOT_SPACE": lambda ch: not ch.isspace(),
    "CATEGORY_WORD": _is_word,
    "CATEGORY_NOT_WORD": lambda ch: not _is_word(ch),
}


def _in_set(items: Any, ch: str) -> bool:
    """Whether ``ch`` belongs to a parsed character class (``[...]``)."""
    negate = False
    hit = False
    code = ord(ch)
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            hit = hit or av == code
        elif op is _c.RANGE:
            hit = hit or av[0] <= code <= av[1]
        elif op is _c.CATEGORY:
            check = _CATEGORY_CHECKS.get(str(av))
            hit = hit or (check is not None and check(ch))
    return hit != negate


def _one_char(op: Any, av: Any) -> str | None:
    """A character the one-character element ``(op, av)`` matches (None: not one of those)."""
    if op is _c.LITERAL:
        return chr(av)
    if op is _c.NOT_LITERAL:
        return next(ch for ch in _FILLERS if ord(ch) != av)
    if op is _c.ANY:
        return _FILLERS[0]
    if op is _c.IN:
        return next((ch for ch in _FILLERS if _in_set(av, ch)), None)
    if op is _c.CATEGORY:
        check = _CATEGORY_CHECKS.get(str(av))
        return next((ch for ch in _FILLERS if check is not None and check(ch)), None)
    return None


def _sample(seq: Any, counts: dict[int, int], stop: object = None) -> tuple[str, bool]:
    """A text that ``seq`` matches: each repeat taken its minimum number of times, or as often
    as ``counts`` says (by ``id`` of its parsed body); the first branch of each alternation;
    lookarounds and anchors match nothing. With ``stop`` (a parsed repeat), the text ends right
    after that repeat (and the flag says so). Approximate: the probe only needs it to get far."""
    out: list[str] = []
    for op, av in seq:
        one = _one_char(op, av)
        if one is not None:
            out.append(one)
            continue
        inner: Any = None
        times = 1
        if op is _c.SUBPATTERN:
            inner = av[-1]
        elif op is _c.ATOMIC_GROUP:
            inner = av
        elif op is _c.BRANCH:
            inner = av[1][0]
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            inner = av[2]
            times = counts.get(id(inner), av[0])
        if inner is None:
            continue
        text, stopped = _sample(inner, counts, stop)
        out.append(text * times)
        if stopped or av is stop:
            return "".join(out), True
    return "".join(out), False


def _repeats(seq: Any, outer: tuple[Any, ...] = ()) -> list[tuple[Any, tuple[Any, ...]]]:
    """Every repeat that can run more than once, with the repeats around it (outermost first)."""
    found: list[tuple[Any, tuple[Any, ...]]] = []
    for op, av in seq:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            _low, high, body = av
            if high > 1:
                found.append((av, outer))
            found.extend(_repeats(body, outer + ((av,) if high > 1 else ())))
        elif op is _c.SUBPATTERN:
            found.extend(_repeats(av[-1], outer))
        elif op is _c.ATOMIC_GROUP:
            found.extend(_repeats(av, outer))
        elif op is _c.BRANCH:
            for alt in av[1]:
                found.extend(_repeats(alt, outer))
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            found.extend(_repeats(av[1], outer))
    return found


def _pumped(data: Any, counts: dict[int, int], grow: list[Any], stop: Any) -> tuple[str, str]:
    """The sample with every repeat of ``grow`` taken k times, k doubling from 16 until the
    text is ``_PUMP_CHARS`` long (or stops growing): whole, and cut right after ``stop``."""
    k = 16
    while True:
        for low, high, body in grow:
            counts[id(body)] = min(high, max(low, k))
        whole, _ = _sample(data, counts)
        if len(whole) >= _PUMP_CHARS or k >= _MAX_PUMP:
            return whole, _sample(data, counts, stop)[0]
        k *= 2


def _variants(repeat: Any, outer: tuple[Any, ...]) -> list[tuple[dict[int, int], list[Any], Any]]:
    """(fixed counts, repeats to pump, where to cut) for one repeat and those around it."""
    variants: list[tuple[dict[int, int], list[Any], Any]] = [({}, [repeat], repeat)]
    for around in outer:
        low, _high, body = around
        if low > 1:
            variants.append(({id(body): low - 1}, [repeat], around))
        variants.append(({}, [repeat, around], around))
    return variants


def attack_texts(pattern: str, flags: int) -> list[str]:
    """Texts on which a pattern that backtracks catastrophically takes very long.

    For each repeat that can run more than once: the pattern's sample with that repeat's body
    pumped (``(a+)+$``: ``aaaa...``), and for each repeat around it, both pumped, or the outer
    one taken once less than its minimum (``(.*a){12}``: eleven times ``zzz...a``); each text
    whole and cut after the pumped part, then followed by a character that makes the match
    fail. Empty for a pattern the stdlib parser cannot read.
    """
    if _parser is None:
        return []
    texts: list[str] = []
    try:
        data = _parser.parse(pattern, flags).data
        for repeat, outer in _repeats(data)[:_MAX_REPEATS]:
            for counts, grow, stop in _variants(repeat, outer):
                for core in _pumped(data, dict(counts), grow, stop):
                    texts.extend(core + killer for killer in _KILLERS)
    except Exception:  # noqa: BLE001 -- an unknown construct: no probe texts, the bound remains
        return []
    return list(dict.fromkeys(texts))
