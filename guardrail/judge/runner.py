"""The judge runner: asks semantic judges their rubric questions and turns the answers into facts.

A judge detector (``judge:`` in a policy file; the engine hands the runner one
:class:`JudgeQuestion` per detector: id, rubric, reads, endpoint) publishes the fact
``judge.<id>``: True (yes), False (no) or None (unknown, which the engine counts as false).

When questions are asked
    :meth:`JudgeRunner.prefetch` starts the questions of judges that read only the request
    (``last_user``, ``conversation``) at once, as tasks, so the flow can send the request
    upstream meanwhile: a judge that answers before the upstream adds no latency.
    :meth:`PendingAnswers.result` is awaited once the reply is complete; only then are the
    ``reply`` judges asked (they need the reply), all at once. :meth:`JudgeRunner.ask` does both
    in one call. A judge's question holds only the text its ``reads`` allows
    (``guardrail.judge.reading``); a judge with nothing to read (no user message, empty reply) is
    not asked and answers False.

What each question may cost (per endpoint, ``guardrail.judge.endpoints``)
    * ``timeout``: the question, a free slot included, must be answered within it.
    * ``max_concurrency``: questions in flight to the endpoint at once; others wait (in their
      timeout) for a slot.
    * ``calls_per_minute``: the budget; a question past it is not sent (outcome ``budget``).
    * the cache: the same question about the same text (``guardrail.judge.cache``) within
      ``cache_ttl`` is not sent again; nor is a question while the same one is in flight: it
      shares that call's answer (outcome ``cached``).

When no answer comes (fail mode)
    A timeout, a connection error, an error status, an answer that is not a clear yes or no
    (``guardrail.judge.question``), or a spent budget leaves the question unanswered, and the
    endpoint's ``fail`` decides the fact: ``open`` gives None (unknown: the signal is false and
    the verdict lists the judge as unanswered), ``closed`` gives True (the policy acts as if the
    judge had said yes). Unanswered questions are never cached. Nothing here raises on a judge's
    failure: the request goes on.

What is recorded
    ``guardrail_judge_requests_total{judge,outcome}`` for every question and
    ``guardrail_judge_seconds{judge}`` for every call made (``guardrail.observe.metrics``); a
    ``judge_unanswered`` log event (judge id, endpoint name, outcome, reason: an exception type
    or a status code) for every question left unanswered. Never any text, and never the API key,
    which goes only into the ``Authorization: Bearer`` header of calls to its own endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
import httpx

from guardrail.errors import ConfigError
from guardrail.judge.answer import Answer, JudgeQuestion, fact_name
from guardrail.judge.budget import CallBudget
from guardrail.judge.cache import AnswerCache, cache_key
from guardrail.judge.endpoints import JudgeEndpoint
from guardrail.judge.question import parse_answer, request_body
from guardrail.judge.reading import READS, REPLY_READS, MessageLike, shown_text
from guardrail.observe import metrics
from guardrail.observe.logs import get_logger

__all__ = ["MAX_ANSWER_BYTES", "JudgeRunner", "PendingAnswers"]

MAX_ANSWER_BYTES = 64 * 1024
"""Largest answer body read: a yes/no answer is a few hundred bytes; more is an error."""
_log = get_logger("guardrail.judge")


class _Lane:
    """Everything one endpoint shares among its questions: cache, budget, slots, calls in
    flight (by cache key)."""

    def __init__(self, endpoint: JudgeEndpoint, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self.identity = (endpoint.name, endpoint.url, endpoint.model)
        self.cache = AnswerCache(endpoint.cache_size, endpoint.cache_ttl, clock)
        self.budget = CallBudget(endpoint.calls_per_minute, clock)
        self.slots = asyncio.Semaphore(endpoint.max_concurrency)
        self.in_flight: dict[bytes, asyncio.Task[Answer]] = {}


class JudgeRunner:
    """Asks judge questions of the configured endpoints (see the module docstring).

    One runner serves the whole process (its HTTP client, caches and budgets are shared); use it
    inside one event loop and close it with :meth:`aclose` (or ``async with``). ``transport``
    replaces the HTTP transport; ``clock`` (monotonic seconds) drives the cache and the budget;
    ``pace`` makes a question wait for the budget instead of going unanswered (``guardrail
    check``, where a complete answer matters more than latency), waiting with ``sleep`` (which
    must let ``clock`` advance by the seconds it is given).
    """

    def __init__(
        self,
        endpoints: Mapping[str, JudgeEndpoint],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        pace: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._lanes = {name: _Lane(endpoint, clock) for name, endpoint in endpoints.items()}
        self._pace = pace
        self._sleep = sleep
        self._tasks: set[asyncio.Task[Answer]] = set()
        slots = sum(e.max_concurrency for e in endpoints.values()) or 1
        self._client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> JudgeRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the calls still in flight and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    @property
    def endpoints(self) -> dict[str, JudgeEndpoint]:
        return {name: lane.endpoint for name, lane in self._lanes.items()}

    def check(self, judges: Iterable[JudgeQuestion]) -> None:
        """Refuse judges this runner cannot ask (an unconfigured endpoint, an unknown ``reads``,
        a repeated id, an empty rubric) with a ConfigError naming the judge; create their
        metric series. Call it when a policy set is loaded, before it serves."""
        seen: set[str] = set()
        known = ", ".join(sorted(self._lanes)) or "none are configured"
        for judge in judges:
            where = f"judge {judge.id!r}"
            if judge.id in seen:
                raise ConfigError(f"{where}: the id is used by another judge")
            seen.add(judge.id)
            if judge.endpoint not in self._lanes:
                raise ConfigError(
                    f"{where}: endpoint {judge.endpoint!r} is not in the `judges:` setting "
                    f"({known})"
                )
            if judge.reads not in READS:
                raise ConfigError(f"{where}: reads must be one of {', '.join(READS)}")
            if not judge.rubric.strip():
                raise ConfigError(f"{where}: the rubric is empty")
        metrics.init_judges(seen)

    def prefetch(
        self, judges: Sequence[JudgeQuestion], messages: Sequence[MessageLike]
    ) -> PendingAnswers:
        """Start the questions of the judges that read only the request; the ``reply`` judges
        wait for :meth:`PendingAnswers.result`. Must be called inside the running loop."""
        early = {
            judge.id: asyncio.create_task(self.question(judge, messages, None))
            for judge in judges
            if judge.reads not in REPLY_READS
        }
        later = tuple(judge for judge in judges if judge.reads in REPLY_READS)
        return PendingAnswers(self, early, later, messages)

    async def ask(
        self,
        judges: Sequence[JudgeQuestion],
        messages: Sequence[MessageLike],
        reply_text: str | None = None,
    ) -> dict[str, bool | None]:
        """Every judge's fact (``judge.<id>``), all asked at once; ``reply`` judges only when
        ``reply_text`` is given (else they are left out: unknown)."""
        return await self.prefetch(judges, messages).result(reply_text)

    async def question(
        self, judge: JudgeQuestion, messages: Sequence[MessageLike], reply: str | None
    ) -> Answer:
        """Ask one judge about its part of the exchange. Never raises for a judge's failure."""
        lane = self._lanes.get(judge.endpoint)
        if lane is None:  # not checked: unanswerable, fail open
            _log.warning("judge_unanswered", judge=judge.id, outcome="error", reason="endpoint")
            return Answer(None, "error")
        endpoint = lane.endpoint
        text = shown_text(judge.reads, messages, reply, endpoint.max_chars)
        if not text:
            return Answer(False, "empty", endpoint.fail)
        key = cache_key(lane.identity, judge.rubric, judge.reads, text)
        cached = lane.cache.get(key)
        if cached is not None:
            _count(judge.id, "cached")
            return Answer(cached, "cached", endpoint.fail)
        call = lane.in_flight.get(key)
        if call is not None:
            _count(judge.id, "cached")
            shared = await asyncio.shield(call)
            return Answer(shared.answer, "cached", endpoint.fail)
        call = asyncio.create_task(self._call(lane, judge, text, key))
        lane.in_flight[key] = call
        self._tasks.add(call)
        call.add_done_callback(lambda done: _forget(self._tasks, lane, key, done))
        return await asyncio.shield(call)

    async def _call(self, lane: _Lane, judge: JudgeQuestion, text: str, key: bytes) -> Answer:
        endpoint = lane.endpoint
        if self._pace:
            while not lane.budget.take():
                await self._sleep(lane.budget.wait())
        elif not lane.budget.take():
            return _unanswered(judge, endpoint, "budget", "calls_per_minute")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(endpoint.timeout):
                async with lane.slots:
                    status, body = await self._post(endpoint, judge, text)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return _unanswered(judge, endpoint, "timeout", type(exc).__name__, started)
        except httpx.HTTPError as exc:
            return _unanswered(judge, endpoint, "error", type(exc).__name__, started)
        except Exception as exc:  # noqa: BLE001 -- a judge's failure never fails the request
            return _unanswered(judge, endpoint, "error", type(exc).__name__, started)
        if status != 200:
            return _unanswered(judge, endpoint, "error", f"status {status}", started)
        answer = None if body is None else parse_answer(body)
        if answer is None:
            reason = "too-large" if body is None else "malformed"
            return _unanswered(judge, endpoint, "error", reason, started)
        _observe(judge.id, started)
        _count(judge.id, "yes" if answer else "no")
        lane.cache.put(key, answer)
        return Answer(answer, "yes" if answer else "no", endpoint.fail)

    async def _post(
        self, endpoint: JudgeEndpoint, judge: JudgeQuestion, text: str
    ) -> tuple[int, bytes | None]:
        headers = {"accept": "application/json"}
        if endpoint.api_key is not None:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        body = request_body(endpoint.model, judge.rubric, judge.reads, text)
        request = self._client.build_request(
            "POST",
            endpoint.completions_url,
            json=body,
            headers=headers,
            timeout=httpx.Timeout(endpoint.timeout),
        )
        response = await self._client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return response.status_code, None
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)
        finally:
            await response.aclose()


class PendingAnswers:
    """The questions of one exchange, started by :meth:`JudgeRunner.prefetch`.

    :meth:`conversation` awaits the request-side judges only (a stream's guard needs them before
    the reply); :meth:`result` (or :meth:`answers`) asks the ``reply`` judges and awaits all.
    :meth:`cancel` stops waiting when the exchange is abandoned; calls already sent finish in the
    background (within their timeout) and still fill the cache.
    """

    def __init__(
        self,
        runner: JudgeRunner,
        early: dict[str, asyncio.Task[Answer]],
        later: tuple[JudgeQuestion, ...],
        messages: Sequence[MessageLike],
    ) -> None:
        self._runner = runner
        self._early = early
        self._later = later
        self._messages = messages

    async def conversation(self) -> dict[str, bool | None]:
        """The facts of the judges that read only the request."""
        return {fact_name(judge): answer.fact for judge, answer in (await self._wait()).items()}

    async def answers(self, reply_text: str | None) -> dict[str, Answer]:
        """Every judge's :class:`Answer` by judge id; ``reply`` judges only with a reply."""
        found = await self._wait()
        if reply_text is not None and self._later:
            asked = [
                self._runner.question(judge, self._messages, reply_text) for judge in self._later
            ]
            for judge, answer in zip(self._later, await asyncio.gather(*asked)):
                found[judge.id] = answer
        return found

    async def result(self, reply_text: str | None) -> dict[str, bool | None]:
        """Every judge's fact (``judge.<id>``) once the reply is known."""
        return {fact_name(judge): a.fact for judge, a in (await self.answers(reply_text)).items()}

    def cancel(self) -> None:
        for future in self._early.values():
            future.cancel()

    async def _wait(self) -> dict[str, Answer]:
        ids = list(self._early)
        done = await asyncio.gather(*self._early.values())
        return dict(zip(ids, done))


def _forget(
    tasks: set[asyncio.Task[Answer]], lane: _Lane, key: bytes, done: asyncio.Task[Answer]
) -> None:
    tasks.discard(done)
    if lane.in_flight.get(key) is done:
        del lane.in_flight[key]


def _unanswered(
    judge: JudgeQuestion,
    endpoint: JudgeEndpoint,
    outcome: str,
    reason: str,
    started: float | None = None,
) -> Answer:
    if started is not None:
        _observe(judge.id, started)
    _count(judge.id, outcome)
    log = _log.debug if outcome == "budget" else _log.warning  # the metric counts a spent budget
    log(
        "judge_unanswered",
        judge=judge.id,
        endpoint=endpoint.name,
        outcome=outcome,
        reason=reason,
        fail=endpoint.fail,
    )
    return Answer(None, outcome, endpoint.fail)


def _count(judge: str, outcome: str) -> None:
    metrics.child(metrics.JUDGE_REQUESTS, judge, outcome).inc()


def _observe(judge: str, started: float) -> None:
    metrics.child(metrics.JUDGE_SECONDS, judge).observe(time.perf_counter() - started)
