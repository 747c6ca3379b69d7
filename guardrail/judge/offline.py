"""Judges for a synchronous caller: ``guardrail check`` measuring a judge on labelled cases.

:class:`OfflineJudges` owns one event loop for the whole run and one :class:`JudgeRunner` in it,
so the HTTP connections, the cache and the budget last across cases. Cases are asked in batches
(:attr:`OfflineJudges.batch_size`: as many cases at once as the busiest endpoint has slots for
their questions, so no question times out waiting for a slot), and the budget paces the run
instead of leaving questions unanswered (``pace=True``). The timeout still applies: a judge too
slow for its timeout is measured as it will behave when serving.

:attr:`OfflineJudges.tally` counts outcomes per judge, for a summary after the run: figures
computed over unanswered cases measure the timeout, not the judge.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType

import httpx

from guardrail.judge.endpoints import JudgeEndpoint
from guardrail.judge.reading import MessageLike
from guardrail.judge.answer import Answer, JudgeQuestion
from guardrail.judge.runner import JudgeRunner

__all__ = ["Case", "OfflineJudges"]

Case = tuple[Sequence[MessageLike], str]
"""One case to judge: the conversation's messages and the reply."""


class OfflineJudges:
    """``judges`` asked about cases, synchronously; raises ConfigError for a judge that names an
    endpoint not in ``endpoints`` (or is otherwise unaskable). Close it (or use ``with``)."""

    def __init__(
        self,
        endpoints: Mapping[str, JudgeEndpoint],
        judges: Sequence[JudgeQuestion],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.judges = tuple(judges)
        self.tally: Counter[tuple[str, str]] = Counter()
        self._loop = asyncio.Runner()
        self._runner = JudgeRunner(endpoints, transport=transport, pace=True)
        try:
            self._runner.check(self.judges)
        except Exception:
            self.close()
            raise
        per_endpoint = Counter(judge.endpoint for judge in self.judges)
        self.batch_size = max(
            1,
            min(
                (endpoints[name].max_concurrency // count for name, count in per_endpoint.items()),
                default=1,
            ),
        )

    def __enter__(self) -> OfflineJudges:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._runner.aclose())
        self._loop.close()

    def answers(self, cases: Sequence[Case | None]) -> list[dict[str, Answer] | None]:
        """Every judge's answer for each case (None stays None: a case that could not be read),
        all cases of the sequence asked at once."""
        found = self._loop.run(self._all(cases))
        for answers in found:
            for judge_id, answer in (answers or {}).items():
                self.tally[judge_id, answer.outcome] += 1
        return found

    async def _all(self, cases: Sequence[Case | None]) -> list[dict[str, Answer] | None]:
        return list(await asyncio.gather(*(self._one(case) for case in cases)))

    async def _one(self, case: Case | None) -> dict[str, Answer] | None:
        if case is None:
            return None
        messages, reply = case
        return await self._runner.prefetch(self.judges, messages).answers(reply)

    def summary(self) -> list[str]:
        """One line per judge: how many questions ended each way."""
        lines = []
        for judge in self.judges:
            counts = {o: n for (j, o), n in sorted(self.tally.items()) if j == judge.id}
            shown = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "not asked"
            lines.append(f"judge {judge.id}: {shown}")
        return lines
