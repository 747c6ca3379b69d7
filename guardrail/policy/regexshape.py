"""Reshaping policy regexes for speed, once at load: same matches, found faster.

* ``split_branches``: a regex whose top level is an alternation has no literal common to all
  of its matches, so it gets no prefilter as a whole; the loader splits it into its branches
  (for detectors where only "some branch matched" counts) so that each can have one.
* ``first_char_hint``: Python's regex engine scans quickly for a pattern whose first character
  is known, but a pattern starting with ``\\b`` or a lookbehind is tried at every position; a
  zero-width lookahead on the possible first characters restores the fast scan.

Both are pure functions of the pattern text; anything they do not understand is left as it is.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

__all__ = ["first_char_hint", "split_branches"]

try:  # the stdlib regex parser; any surprise just disables the hint
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover
    _parser = None
    _c = None

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
