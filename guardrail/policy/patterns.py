"""The compiled patterns of a policy pack, and the load-time refusal of hostile regexes.

* ``compile_regex``: a ``regex:`` entry, checked with ``re`` (its parser also feeds the
  prefilter) and compiled as a ``boundedregex.BoundedPattern`` (a CPU-time bound per call),
  whole or split into its top-level branches so that each can have a prefilter;
* ``compile_trie`` / ``compile_words``: the phrase tries of ``phrases:`` and lists, and the
  negator and contrast vocabularies, on ``re`` where their shape keeps them linear, bounded
  otherwise;
* ``refuse_backtracking``: after the policies are built, every ``regex:`` entry is probed
  (``boundedregex.probe``); one that runs past its budget is refused with its file, line,
  detector and the policies reading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import regex

from guardrail.errors import PolicyError
from guardrail.policy.boundedregex import BoundedPattern, Matcher, budget, probe
from guardrail.policy.detectors import phrase_key, phrase_pattern, word_pattern
from guardrail.policy.engine import PolicySet
from guardrail.policy.model import Policy
from guardrail.policy.prefilter import necessary_literals
from guardrail.policy.regexshape import first_char_hint, split_branches
from guardrail.policy.yamlsource import Src

__all__ = ["Written", "compile_regex", "compile_trie", "compile_words", "refuse_backtracking"]

Written = list[tuple[str, str, Src, list[BoundedPattern]]]
"""The ``regex:`` entries of a pack: (detector, pattern, where, compiled parts), for
``refuse_backtracking``."""


def compile_regex(name: str, text: str, where: Src, min_matches: int) -> list[BoundedPattern]:
    """A ``regex:`` entry, compiled to run under a time bound (``boundedregex``): whole, or
    split into branches that can each have a prefilter."""
    try:
        compiled = re.compile(text, re.IGNORECASE)
        parts = _branches(compiled) if min_matches == 1 else [text]
        try:
            return [BoundedPattern(part, re.IGNORECASE) for part in parts]
        except regex.error:
            if len(parts) == 1:
                raise
            return [BoundedPattern(text, re.IGNORECASE)]  # a branch that cannot stand alone
    except (re.error, regex.error) as exc:
        raise where.error(f"detector {name!r}: bad regex {text!r}: {exc}") from None


def _branches(compiled: re.Pattern[str]) -> list[str]:
    """A regex without a prefilter, split at its top-level ``|`` so that each branch can have
    one (only for ``min_matches: 1``, where a match of any branch is all that counts)."""
    if necessary_literals(compiled.pattern, compiled.flags) is not None:
        return [compiled.pattern]
    parts = split_branches(compiled.pattern)
    if len(parts) < 2:
        return [compiled.pattern]
    try:
        for part in parts:
            re.compile(part, re.IGNORECASE)
    except re.error:  # e.g. a backreference into another branch: keep it whole
        return [compiled.pattern]
    return parts


_OVERLAPPING = re.compile(r"(?:^|[\s-])-|-(?:$|[\s-])")


def compile_trie(pattern: str, keys: Iterable[str]) -> Matcher:
    """A phrase trie (``detectors.phrase_pattern``) compiled for speed with ``re``, or under
    the time bound when a phrase puts a hyphen at its start or beside a space or another hyphen.

    Phrases are escaped literals; the trie's only repeats are ``\\s+`` for a space and
    ``(?:-|\\s+)?`` for a hyphen. Between two other characters each of them ends at a literal,
    so the trie is linear; next to each other ("well - being") they can split one run of
    spaces in many ways and backtrack polynomially (8,000 spaces: minutes).
    """
    if any(_OVERLAPPING.search(key) for key in keys):
        return BoundedPattern(pattern)
    return re.compile(first_char_hint(pattern, 0))


def compile_words(words: tuple[str, ...]) -> Matcher:
    """The negator or contrast vocabulary as one trie (see ``compile_trie``)."""
    keys = [phrase_key(w) for w in words]
    pattern = phrase_pattern(words)
    if pattern is not None and any(_OVERLAPPING.search(key) for key in keys):
        return BoundedPattern(pattern)
    return word_pattern(words)


def refuse_backtracking(written: Written, policies: list[Policy], draft: PolicySet) -> None:
    """Refuse a ``regex:`` entry that runs out of its time budget on a text built from it
    (``boundedregex.probe``), naming its file, line and detector, and the policies reading it
    (the first as the error's policy id)."""
    for name, text, where, parts in written:
        length = next((n for n in map(probe, parts) if n is not None), None)
        if length is None:
            continue
        readers = [p.id for p in policies if name in _leaves_read(p, draft)]
        used = f"read by {', '.join(repr(r) for r in readers)}" if readers else "read by no policy"
        raise PolicyError(
            f"detector {name!r} ({used}): regex '{text}' backtracks catastrophically: on a "
            f"{length}-character text built from it, it ran past its time budget of "
            f"{budget(length) * 1000:.0f} ms; rewrite it without nested or overlapping repeats "
            "(e.g. (a+)+ -> a+)",
            file=where.file,
            line=where.line,
            policy_id=readers[0] if readers else None,
        )


def _leaves_read(policy: Policy, ps: PolicySet) -> frozenset[str]:
    """The leaf detectors behind a policy's condition and its actions' ``unless``."""
    names = set(policy.condition.names())
    for action in policy.actions:
        if action.unless is not None:
            names |= action.unless.names()
    return frozenset().union(*(ps.leaves_of(n) for n in names))
