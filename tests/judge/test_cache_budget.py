"""The answer cache (bounded LRU + TTL) and the call budget (a token bucket), on a fake clock."""

from __future__ import annotations

import pytest

from guardrail.judge.budget import CallBudget
from guardrail.judge.cache import AnswerCache, cache_key

from .mockjudge import FakeClock

ENDPOINT = ("default", "http://judge.test/v1", "m")


def test_the_key_changes_with_everything_that_decides_the_answer() -> None:
    base = cache_key(ENDPOINT, "rubric", "last_user", "text")
    assert base == cache_key(ENDPOINT, "rubric", "last_user", "text")
    others = {
        cache_key(("other", *ENDPOINT[1:]), "rubric", "last_user", "text"),
        cache_key((ENDPOINT[0], "http://x.test/v1", "m"), "rubric", "last_user", "text"),
        cache_key((*ENDPOINT[:2], "m2"), "rubric", "last_user", "text"),
        cache_key(ENDPOINT, "rubric2", "last_user", "text"),
        cache_key(ENDPOINT, "rubric", "conversation", "text"),
        cache_key(ENDPOINT, "rubric", "last_user", "text "),
    }
    assert base not in others and len(others) == 6


def test_the_key_has_no_ambiguous_joins() -> None:
    assert cache_key(ENDPOINT, "ab", "reply", "c") != cache_key(ENDPOINT, "a", "reply", "bc")


def test_the_key_takes_lone_surrogates() -> None:
    assert cache_key(ENDPOINT, "r", "reply", "\ud800") != cache_key(ENDPOINT, "r", "reply", "")


def test_answers_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = AnswerCache(10, 60, clock)
    cache.put(b"k", True)
    clock.now += 59.9
    assert cache.get(b"k") is True
    clock.now += 0.1
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_the_least_recently_used_answer_goes_first() -> None:
    cache = AnswerCache(2, 60, FakeClock())
    cache.put(b"a", True)
    cache.put(b"b", False)
    assert cache.get(b"a") is True  # a is now the most recent
    cache.put(b"c", True)
    assert cache.get(b"b") is None
    assert cache.get(b"a") is True and cache.get(b"c") is True
    assert len(cache) == 2


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = AnswerCache(0, 60, FakeClock())
    cache.put(b"a", True)
    assert cache.get(b"a") is None


def test_the_budget_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    budget = CallBudget(6, clock)  # 6 a minute: one every 10 s
    assert [budget.take() for _ in range(7)] == [True] * 6 + [False]
    assert budget.wait() == pytest.approx(10.0)
    clock.now += 5
    assert not budget.take()
    assert budget.wait() == pytest.approx(5.0)
    clock.now += 5
    assert budget.take() and not budget.take()


def test_the_budget_refills_to_its_size_and_no_further() -> None:
    clock = FakeClock()
    budget = CallBudget(3, clock)
    clock.now += 3600
    assert [budget.take() for _ in range(4)] == [True, True, True, False]


def test_a_clock_going_backwards_refills_nothing() -> None:
    clock = FakeClock()
    budget = CallBudget(1, clock)
    assert budget.take()
    clock.now -= 1000
    assert not budget.take()
    clock.now += 1000 + 59
    assert not budget.take()
    clock.now += 1
    assert budget.take()


def test_no_budget_means_no_cap() -> None:
    budget = CallBudget(None, FakeClock())
    assert all(budget.take() for _ in range(10_000))
    assert budget.wait() == 0.0
