"""A judge's question and its answer as values: what the runner is asked, what it gives back.

Pure: no I/O. :class:`JudgeQuestion` is what the runner needs of a ``judge:`` detector (the
engine's ``JudgeSpec`` has these four fields); :class:`Answer` is how one question ended, and
:attr:`Answer.fact` the value the judge publishes as the fact ``judge.<id>``, the endpoint's
fail mode applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FACT_PREFIX", "Answer", "JudgeQuestion", "fact_name"]

FACT_PREFIX = "judge."


class JudgeQuestion(Protocol):
    """What the runner needs of a judge detector (the engine's ``JudgeSpec`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def rubric(self) -> str: ...

    @property
    def reads(self) -> str: ...

    @property
    def endpoint(self) -> str: ...


def fact_name(judge_id: str) -> str:
    """The fact a judge publishes: ``judge.<detector id>``."""
    return FACT_PREFIX + judge_id


@dataclass(frozen=True)
class Answer:
    """How one question ended: what the judge said (None: unanswered), the outcome
    (``metrics.JUDGE_OUTCOMES``, or ``empty`` when there was nothing to ask about), and the
    endpoint's fail mode, which :attr:`fact` applies."""

    answer: bool | None
    outcome: str
    fail: str = "open"

    @property
    def fact(self) -> bool | None:
        """The value of ``judge.<id>``: the answer, else None (fail open) or True (closed)."""
        if self.answer is not None:
            return self.answer
        return True if self.fail == "closed" else None
