"""The answer cache: one judge question per conversation turn, not one per request.

A key is a SHA-256 digest of everything that decides an answer: the endpoint (name, URL, model),
the rubric, what the judge reads, and the exact text it was shown. The same turn asked again (a
retry, a regenerated reply, the same conversation sent twice, two judges with one rubric) finds
the answer here; a new user message is new text, hence a new key. Only answers (yes or no) are
kept, never failures, and never any text: the cache holds digests and booleans.

Bounded both ways: at most ``size`` answers (the least recently used go first) for at most
``ttl`` seconds each, measured on an injectable clock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AnswerCache", "cache_key"]


def cache_key(endpoint: tuple[str, str, str], rubric: str, reads: str, text: str) -> bytes:
    """The digest that names one question: endpoint (name, url, model), rubric, reads, text."""
    digest = hashlib.sha256()
    for part in (*endpoint, rubric, reads, text):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(encoded)
    return digest.digest()


class AnswerCache:
    """At most ``size`` answers, each for at most ``ttl`` seconds of ``clock``."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._answers: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: bytes) -> bool | None:
        """The answer stored under ``key`` if it is still fresh, else None."""
        found = self._answers.get(key)
        if found is None:
            return None
        answer, stored = found
        if self._clock() - stored >= self._ttl:
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return answer

    def put(self, key: bytes, answer: bool) -> None:
        if self._size == 0:
            return
        self._answers[key] = (answer, self._clock())
        self._answers.move_to_end(key)
        while len(self._answers) > self._size:
            self._answers.popitem(last=False)
