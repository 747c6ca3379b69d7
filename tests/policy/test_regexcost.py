"""``regexcost``: which searches may skip the CPU clock, and that nothing else changes.

The proof's arithmetic is tested here on shapes whose cost is known; ``bench.regex_bound``
measures it against the engine (timings belong in bench/, not in tests).
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from guardrail.errors import PolicyError
from guardrail.policy import load_policies
from guardrail.policy import boundedregex, regexcost
from guardrail.policy.boundedregex import BoundedPattern, RegexTimeout, budget
from guardrail.policy.regexcost import N_BUCKETS, STEP_LIMIT, steps, unclocked_length

from tests.kit.policysets import PACK
from tests.security.test_regex import CLASSICS, pack

LONGEST = N_BUCKETS[-1]
U = re.UNICODE


def parsed(pattern: str, flags: int = U) -> Any:
    data = regexcost._parsed(pattern, flags)
    assert data is not None
    return data


@pytest.mark.parametrize(("pattern", "hostile"), CLASSICS, ids=[p for p, _ in CLASSICS])
def test_catastrophic_shapes_are_never_proven_on_their_hostile_texts(
    pattern: str, hostile: str
) -> None:
    assert unclocked_length(pattern, U | re.IGNORECASE) < len(hostile)
    bounded = BoundedPattern(pattern, re.IGNORECASE)
    with pytest.raises(RegexTimeout):  # still stopped by the clock
        list(bounded.finditer(hostile))


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)+$", r"(a|aa)+$", r"(\w+\s?)+$", r"(\w+) \1", r"(a)?(?(1)b|c)", r"\p{L}+"],
)
def test_shapes_without_a_proof_keep_the_clock_on_every_text(pattern: str) -> None:
    assert unclocked_length(pattern, U) == -1


def test_a_plain_phrase_is_proven_on_the_longest_texts() -> None:
    assert unclocked_length(r"\bi feel (?:so )?alone\b", U) == LONGEST


def test_words_are_counted_as_compared_not_as_paths() -> None:
    assert regexcost._trie(("cat", "dog")) == (2 + 3, 1)  # "cat" compared whole, "dog" once
    assert regexcost._trie(("a", "ab", "abc"))[1] == 3  # one text can match all three


def test_a_run_before_what_it_cannot_start_goes_on_one_way() -> None:
    """``\\w+`` then a space: giving back a letter meets a letter, not a space; ``\\w+`` then a
    letter: every split is tried."""
    apart = steps(parsed(r"\w+ \w+ \w+ x"), 128)
    glued = steps(parsed(r"\w+\w+\w+x"), 128)
    assert apart is not None and glued is not None
    assert apart * 100 < glued
    assert steps(parsed(r"\w+\b"), 128) == steps(parsed(r"\w+ "), 128)


def test_the_count_never_falls_as_texts_grow() -> None:
    """``unclocked_length`` bisects on it."""
    for bounded in _pack_patterns()[::7]:
        data = regexcost._parsed(bounded.pattern, bounded.flags)
        if data is None:
            continue
        counts = [steps(data, n) for n in N_BUCKETS]
        if None in counts:
            assert set(counts) == {None}, bounded.pattern
            continue
        assert counts == sorted(counts), bounded.pattern  # type: ignore[type-var]


def test_the_bisection_finds_what_trying_every_length_finds() -> None:
    for bounded in _pack_patterns()[::5]:
        data = regexcost._parsed(bounded.pattern, bounded.flags)
        want = -1
        for n in N_BUCKETS:
            work = None if data is None else steps(data, n)
            if work is None:
                want = -1
                break
            want = max(want, min(n, STEP_LIMIT // work - 1))
        assert unclocked_length(bounded.pattern, bounded.flags) == want, bounded.pattern


def test_most_of_the_default_packs_patterns_are_proven_on_a_sentence() -> None:
    patterns = _pack_patterns()
    proven = sum(1 for p in patterns if p.unclocked >= 120)
    assert proven / len(patterns) > 0.6


class _Spy:
    """Stands in for a compiled pattern: records whether each search had a timeout."""

    def __init__(self, real: Any) -> None:
        self.real, self.timeouts = real, []

    def finditer(self, text: str, **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("timeout"))
        return self.real.finditer(text, **kwargs)

    def search(self, text: str, **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("timeout"))
        return self.real.search(text, **kwargs)


def test_only_texts_within_the_proven_length_skip_the_clock() -> None:
    bounded = BoundedPattern(r"\b(?:feel|felt) (?:so )?(?:alone|lost)\b")
    limit = bounded.unclocked
    assert 0 < limit < 10_000
    spy = _Spy(bounded._compiled)
    bounded._compiled = spy  # type: ignore[assignment]
    short, long = "i feel alone " * (limit // 13), "i feel lost " * (limit // 12 + 2)
    assert len(short) <= limit < len(long)
    list(bounded.finditer(short))
    bounded.search(short)
    list(bounded.finditer(long))
    bounded.search(long)
    assert spy.timeouts == [None, None, budget(len(long)), budget(len(long))]


def test_matches_are_the_same_with_and_without_the_clock() -> None:
    rng = random.Random(7)
    words = "i feel so alone tonight nobody would miss me call 988 you are right".split()
    for bounded in _pack_patterns()[::3]:
        if bounded.unclocked < 80:
            continue
        for _ in range(5):
            text = " ".join(rng.choice(words) for _ in range(12))[:80]
            unclocked = [m.span() for m in bounded.finditer(text)]
            clocked = [m.span() for m in bounded._compiled.finditer(text, timeout=1.0)]
            assert unclocked == clocked


def test_the_load_probe_keeps_the_clock_even_if_the_proof_were_wrong(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proof that lied would not let a catastrophic pattern past the load: the probe always
    runs under the clock."""
    monkeypatch.setattr(regexcost, "unclocked_length", lambda pattern, flags: 10**9)
    boundedregex._probed.cache_clear()
    try:
        with pytest.raises(PolicyError, match="backtracks catastrophically"):
            load_policies(pack(tmp_path, r"(a+)+$"))
    finally:
        boundedregex._probed.cache_clear()


def _pack_patterns() -> list[BoundedPattern]:
    seen: dict[tuple[str, int], BoundedPattern] = {}
    for det in PACK.plan.detectors.values():
        for pattern in getattr(det, "patterns", ()):
            if isinstance(pattern, BoundedPattern):
                seen.setdefault((pattern.pattern, pattern.flags), pattern)
    return list(seen.values())
