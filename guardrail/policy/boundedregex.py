"""Policy regexes under a time bound that cannot be exceeded, and refused at load if hostile.

Python's ``re`` backtracks without limit and cannot be interrupted: one policy regex such as
``(a+)+$`` and a 28-character text held the proxy for 10 s, four times longer for every two more
characters. Every ``regex:`` entry is therefore compiled with the ``regex`` module (mrab-regex,
the long-maintained engine PyPI ships as ``regex``): it reads ``re``'s syntax, lookarounds
included (the default pack has about 90, which rules out RE2, and RE2's ``\\w`` and ``\\b``
are ASCII-only), and its ``timeout`` is checked inside the matching loop against the CPU time
of the process, so a call cannot run past it. The phrase tries stay on ``re`` where their shape
keeps them linear (``patterns.compile_trie``): ``re`` runs those about a third faster.

* ``BoundedPattern.finditer(text)`` collects every match within ``budget(len(text))`` seconds
  of CPU time, then hands them out; past the budget it raises ``RegexTimeout`` (a
  ``TimeoutError``). The engine treats that like any detector failure: the detector's signal
  is absent and each policy reading it follows its ``on_error`` (the hit carries the error,
  "detector 'x' raised RegexTimeout", and the proxy counts it in
  ``guardrail_policy_errors_total``).
* ``budget(n)`` is ``BASE_SECONDS + PER_CHAR_SECONDS * n``: linear in the text, about ten
  times what the slowest pattern of the default pack needs on ordinary text, so a pattern
  that backtracks costs at most a small constant factor of what reading the text costs anyway.
* A search skips the clock when ``regexcost`` proves from the pattern's shape that it cannot
  take more than ``regexcost.STEP_LIMIT`` steps on a text of that length
  (``BoundedPattern.unclocked``; about two patterns in three on an ordinary sentence): the
  clock read is most of what a bounded search costs, and such a search cannot come near the
  budget anyway.
* ``probe(bounded)`` runs at load: texts built from the pattern itself
  (``regexshape.attack_texts``: each repeat pumped, then a character that makes the match
  fail) under the same budget. A pattern that runs past it is refused
  (``patterns.refuse_backtracking``) with file, line, detector and the policies reading it.
  The probe names the problem early; the bound is the guarantee, whatever the probe misses.

Matches differ from ``re`` only in which characters count as word characters: for ``regex`` a
combining accent belongs to the word it is on (``\\w``, ``\\b``), for ``re`` it does not
(the eval's 21,523 cases give byte-identical results either way).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Protocol

import regex

from guardrail.errors import RegexTimeout  # re-exported: its old home
from guardrail.policy import regexcost
from guardrail.policy.regexshape import attack_texts

__all__ = [
    "BASE_SECONDS",
    "PER_CHAR_SECONDS",
    "BoundedPattern",
    "Matcher",
    "RegexTimeout",
    "budget",
    "probe",
]

BASE_SECONDS = 0.02
"""CPU seconds any one pattern may spend on any text, however short."""
PER_CHAR_SECONDS = 2e-6
"""And per character of the text it reads (the slowest pattern of the default pack needs about
0.2 µs per character of ordinary text)."""


class Span(Protocol):
    """What the engine reads of a match."""

    def span(self) -> tuple[int, int]: ...


class Matcher(Protocol):
    """A compiled detector pattern as the engine uses it: a ``re.Pattern`` (phrase tries, which
    cannot backtrack far) or a ``BoundedPattern``."""

    @property
    def pattern(self) -> str: ...

    @property
    def flags(self) -> int: ...

    def finditer(self, string: str, /) -> Iterator[Span]: ...

    def search(self, string: str, /) -> Span | None: ...


_CACHED = 4096
"""Compiled patterns and probe results remembered (a reload reuses those of the patterns it
keeps)."""


def budget(length: int) -> float:
    """CPU seconds a pattern may spend on a text of ``length`` characters."""
    return BASE_SECONDS + PER_CHAR_SECONDS * length


class BoundedPattern:
    """A compiled policy pattern that cannot run past ``budget``. ``pattern`` and ``flags`` are
    those ``re`` reports for the same pattern (the prefilter reads them with ``re``'s parser)."""

    __slots__ = ("_compiled", "_unclocked", "flags", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags | regex.UNICODE
        self._compiled = _compile(pattern, self.flags)
        self._unclocked: int | None = None

    @property
    def unclocked(self) -> int:
        """Texts up to this length are searched without the clock: the pattern's shape proves
        such a search takes at most ``regexcost.STEP_LIMIT`` steps (-1: never). Worked out at
        the first search (about a millisecond), so loading a pack does not pay for patterns
        that never run."""
        if self._unclocked is None:
            self._unclocked = regexcost.unclocked_length(self.pattern, self.flags)
        return self._unclocked

    def finditer(self, string: str, /) -> Iterator[regex.Match[str]]:
        """Every match in ``string``, all found within the budget (``RegexTimeout`` past it);
        the caller's work between matches does not count against it."""
        unclocked = self._unclocked
        if unclocked is None:
            unclocked = self.unclocked
        if len(string) <= unclocked:  # proven far inside the budget (regexcost)
            return self._compiled.finditer(string)
        try:
            found = list(self._compiled.finditer(string, timeout=budget(len(string))))
        except TimeoutError:
            raise RegexTimeout("a policy regex ran out of time") from None
        return iter(found)

    def search(self, string: str, /) -> regex.Match[str] | None:
        """The first match in ``string`` within the budget (``RegexTimeout`` past it)."""
        if len(string) <= self.unclocked:
            found: regex.Match[str] | None = self._compiled.search(string)
            return found
        try:
            return self._compiled.search(string, timeout=budget(len(string)))
        except TimeoutError:
            raise RegexTimeout("a policy regex ran out of time") from None

    def __repr__(self) -> str:
        return f"BoundedPattern({self.pattern!r}, {self.flags})"


@functools.lru_cache(maxsize=_CACHED)
def _compile(pattern: str, flags: int) -> regex.Pattern[str]:
    """``regex.compile``, remembered: its parser is written in Python (about 1 ms a pattern),
    and a reload compiles mostly the patterns it compiled before."""
    return regex.compile(pattern, flags)


def probe(bounded: BoundedPattern) -> int | None:
    """At load: the length of a text built from the pattern on which it runs out of its budget
    (it backtracks catastrophically), or None when it stays within on every such text."""
    return _probed(bounded.pattern, bounded.flags)


@functools.lru_cache(maxsize=_CACHED)
def _probed(pattern: str, flags: int) -> int | None:
    compiled = _compile(pattern, flags)
    for text in attack_texts(pattern, flags):
        try:  # always under the clock, even where ``regexcost`` proves a bound: a check of it
            compiled.search(text, timeout=budget(len(text)))
        except TimeoutError:
            return len(text)
    return None
