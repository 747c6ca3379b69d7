"""The runner against a mock judge over real HTTP: answers, fail modes, what each judge is
shown, the cache, the budget, concurrency, and what is (never) logged."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from guardrail.errors import ConfigError
from guardrail.judge.runner import JudgeRunner, PendingAnswers
from guardrail.observe.metrics import REGISTRY
from guardrail.policy.model import Message

from .conftest import Judge
from .mockjudge import CountingTransport, FakeClock, Spec, endpoint

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # timeouts and budgets, waited out for real

SYSTEM = "You are Ava, a wellbeing companion. CONFIDENTIAL-SYSTEM-PROMPT"
MESSAGES = (
    Message("system", SYSTEM),
    Message("user", "EARLIER-TURN: work has been rough"),
    Message("assistant", "That sounds hard. What happened?"),
    Message("user", "honestly I just want to unalive myself"),
)
RUBRIC = "Does the person's last message express thoughts of ending their life?"
KEY = "sk-judge-key-0123456789-NEVER-LOG"


def spec(judge_id: str, endpoint_name: str, reads: str = "last_user") -> Spec:
    return Spec(judge_id, RUBRIC, reads, endpoint_name)


def count(judge: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "guardrail_judge_requests_total", {"judge": judge, "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture
def outcomes() -> Iterator[dict[tuple[str, str], float]]:
    """Counter values before the test, to compare after (the registry is process-wide)."""
    before: dict[tuple[str, str], float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "guardrail_judge_requests_total":
                before[sample.labels["judge"], sample.labels["outcome"]] = sample.value
    yield before


def delta(before: dict[tuple[str, str], float], judge: str, outcome: str) -> float:
    return count(judge, outcome) - before.get((judge, outcome), 0.0)


async def test_answers_become_facts_and_the_request_is_well_formed(judge: Judge) -> None:
    endpoints = {
        "yes": endpoint(judge.url, "yes", api_key=KEY),
        "no": endpoint(judge.url, "no"),
        "json": endpoint(judge.url, "json"),
    }
    async with JudgeRunner(endpoints) as runner:
        facts = await runner.ask(
            [spec("a.yes", "yes"), spec("a.no", "no"), spec("a.json", "json")], MESSAGES
        )
    assert facts == {"judge.a.yes": True, "judge.a.no": False, "judge.a.json": True}
    (seen,) = judge.mock.by_model("yes")
    assert seen.authorization == f"Bearer {KEY}"
    assert judge.mock.by_model("no")[0].authorization is None
    assert seen.body["temperature"] == 0 and seen.body["stream"] is False
    assert RUBRIC in seen.system


async def test_a_last_user_judge_sees_the_last_user_message_and_nothing_else(judge: Judge) -> None:
    async with JudgeRunner({"yes": endpoint(judge.url, "yes")}) as runner:
        await runner.ask([spec("b.last", "yes")], MESSAGES, "REPLY-TEXT")
    (seen,) = judge.mock.seen
    assert seen.shown == "honestly I just want to unalive myself"
    raw = seen.raw.decode()
    for absent in ("CONFIDENTIAL-SYSTEM-PROMPT", "EARLIER-TURN", "What happened", "REPLY-TEXT"):
        assert absent not in raw


async def test_a_conversation_judge_sees_the_turns_but_never_the_system_prompt(
    judge: Judge,
) -> None:
    async with JudgeRunner({"yes": endpoint(judge.url, "yes", max_chars=80)}) as runner:
        await runner.ask([spec("b.conv", "yes", "conversation")], MESSAGES, "REPLY-TEXT")
    (seen,) = judge.mock.seen
    assert len(seen.shown) <= 80
    assert seen.shown.endswith("User: honestly I just want to unalive myself")
    assert "Assistant: " in seen.shown
    raw = seen.raw.decode()
    assert "CONFIDENTIAL-SYSTEM-PROMPT" not in raw and "REPLY-TEXT" not in raw
    assert "EARLIER-TURN" not in raw  # cut: more than max_chars from the end


async def test_a_reply_judge_is_asked_only_after_the_reply_and_sees_only_it(judge: Judge) -> None:
    judges = [spec("c.user", "yes"), spec("c.reply", "no", "reply")]
    endpoints = {"yes": endpoint(judge.url, "yes"), "no": endpoint(judge.url, "no")}
    async with JudgeRunner(endpoints) as runner:
        pending = runner.prefetch(judges, MESSAGES)
        assert await pending.conversation() == {"judge.c.user": True}
        assert judge.mock.by_model("no") == []  # the reply is not known yet
        facts = await pending.result("I'm here with you. Would you call 988 now?")
    assert facts == {"judge.c.user": True, "judge.c.reply": False}
    (seen,) = judge.mock.by_model("no")
    assert seen.shown == "I'm here with you. Would you call 988 now?"
    assert "unalive" not in seen.raw.decode() and "CONFIDENTIAL" not in seen.raw.decode()


async def test_without_a_reply_reply_judges_are_left_out(judge: Judge) -> None:
    async with JudgeRunner({"no": endpoint(judge.url, "no")}) as runner:
        facts = await runner.ask([spec("c.r2", "no", "reply")], MESSAGES)
    assert facts == {} and judge.mock.seen == []


async def test_nothing_to_read_asks_nothing_and_answers_false(judge: Judge) -> None:
    async with JudgeRunner({"yes": endpoint(judge.url, "yes", fail="closed")}) as runner:
        facts = await runner.ask([spec("c.empty", "yes")], [Message("system", SYSTEM)], "")
        reply = await runner.ask([spec("c.empty2", "yes", "reply")], MESSAGES, "   ")
    assert facts == {"judge.c.empty": False} and reply == {"judge.c.empty2": False}
    assert judge.mock.seen == []


@pytest.mark.parametrize("model", ["error", "garbage", "maybe", "huge", "sse", "redirect"])
@pytest.mark.parametrize(("fail", "fact"), [("open", None), ("closed", True)])
async def test_errors_are_answered_by_the_fail_mode(
    judge: Judge,
    outcomes: dict[tuple[str, str], float],
    model: str,
    fail: str,
    fact: bool | None,
) -> None:
    judge_id = f"d.{model}.{fail}"
    async with JudgeRunner({model: endpoint(judge.url, model, fail=fail)}) as runner:
        answers = await runner.prefetch([spec(judge_id, model)], MESSAGES).answers(None)
    assert answers[judge_id].answer is None and answers[judge_id].fact is fact
    assert len(judge.mock.by_model(model)) == 1
    assert delta(outcomes, judge_id, "error") == 1
    assert delta(outcomes, judge_id, "yes") == delta(outcomes, judge_id, "no") == 0


async def test_an_endpoint_that_is_down_is_an_error(outcomes: dict[tuple[str, str], float]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with JudgeRunner({"down": endpoint(url, "down", fail="closed")}) as runner:
            facts = await runner.ask([spec("d.down", "down")], MESSAGES)
    assert facts == {"judge.d.down": True}
    assert delta(outcomes, "d.down", "error") == 1


@pytest.mark.parametrize(("fail", "fact"), [("open", None), ("closed", True)])
async def test_a_timeout_is_answered_by_the_fail_mode(
    judge: Judge, outcomes: dict[tuple[str, str], float], fail: str, fact: bool | None
) -> None:
    judge_id = f"e.timeout.{fail}"
    hang = endpoint(judge.url, "hang", timeout=0.2, fail=fail)
    async with JudgeRunner({"hang": hang, "yes": endpoint(judge.url, "yes")}) as runner:
        facts = await runner.ask([spec(judge_id, "hang"), spec("e.fine", "yes")], MESSAGES)
    assert facts == {f"judge.{judge_id}": fact, "judge.e.fine": True}
    assert delta(outcomes, judge_id, "timeout") == 1
    assert len(judge.mock.by_model("hang")) == 1


async def test_failures_are_not_cached(
    judge: Judge, outcomes: dict[tuple[str, str], float]
) -> None:
    async with JudgeRunner({"flaky": endpoint(judge.url, "flaky")}) as runner:
        first = await runner.ask([spec("f.flaky", "flaky")], MESSAGES)
        second = await runner.ask([spec("f.flaky", "flaky")], MESSAGES)
        third = await runner.ask([spec("f.flaky", "flaky")], MESSAGES)
    assert (first, second, third) == ({"judge.f.flaky": None}, {"judge.f.flaky": True},
                                      {"judge.f.flaky": True})
    assert len(judge.mock.seen) == 2
    assert [delta(outcomes, "f.flaky", o) for o in ("error", "yes", "cached")] == [1, 1, 1]


async def test_the_same_turn_is_asked_once_and_a_new_turn_again(judge: Judge) -> None:
    clock = FakeClock()
    endpoints = {"yes": endpoint(judge.url, "yes", cache_ttl=60)}
    async with JudgeRunner(endpoints, clock=clock) as runner:
        judges = [spec("g.turn", "yes")]
        await runner.ask(judges, MESSAGES)
        await runner.ask(judges, list(MESSAGES))  # the same conversation, sent again
        assert len(judge.mock.seen) == 1
        await runner.ask(judges, [*MESSAGES, Message("assistant", "ok"), Message("user", "hi")])
        assert len(judge.mock.seen) == 2
        clock.now += 60  # the first answer expires
        await runner.ask(judges, MESSAGES)
        assert len(judge.mock.seen) == 3
        await runner.ask([Spec("g.other", "Is the person angry?", "last_user", "yes")], MESSAGES)
        assert len(judge.mock.seen) == 4  # another rubric is another question


async def test_parallel_asks_about_one_turn_share_one_call(
    judge: Judge, outcomes: dict[tuple[str, str], float]
) -> None:
    async with JudgeRunner({"gate": endpoint(judge.url, "gate")}) as runner:
        asks = [
            asyncio.create_task(runner.ask([spec("h.same", "gate")], MESSAGES)) for _ in range(20)
        ]
        await judge.mock.calls(1)
        judge.mock.open_gate()
        results = await asyncio.gather(*asks)
    assert results == [{"judge.h.same": True}] * 20
    assert len(judge.mock.seen) == 1
    assert delta(outcomes, "h.same", "yes") == 1 and delta(outcomes, "h.same", "cached") == 19


async def test_parallel_asks_about_different_turns_respect_max_concurrency(judge: Judge) -> None:
    transport = CountingTransport()
    endpoints = {"gate": endpoint(judge.url, "gate", max_concurrency=3)}
    async with JudgeRunner(endpoints, transport=transport) as runner:
        asks = [
            asyncio.create_task(runner.ask([spec("h.many", "gate")], [Message("user", f"m{i}")]))
            for i in range(10)
        ]
        await judge.mock.calls(3)
        assert transport.in_flight == 3 and judge.mock.in_flight == 3
        judge.mock.open_gate()
        results = await asyncio.gather(*asks)
    assert results == [{"judge.h.many": True}] * 10
    assert len(judge.mock.seen) == 10 and transport.most == 3


async def test_a_question_waiting_for_a_slot_times_out_unsent(
    judge: Judge, outcomes: dict[tuple[str, str], float]
) -> None:
    endpoints = {"gate": endpoint(judge.url, "gate", max_concurrency=1, timeout=30)}
    async with JudgeRunner(endpoints) as runner:
        first = asyncio.create_task(runner.ask([spec("h.slot", "gate")], [Message("user", "a")]))
        await judge.mock.calls(1)  # "a" holds the only slot until the gate opens
        lane = runner._lanes["gate"]  # the next question gets a short timeout
        lane.endpoint = dataclasses.replace(lane.endpoint, timeout=0.2)
        second = await runner.ask([spec("h.slot", "gate")], [Message("user", "b")])
        assert second == {"judge.h.slot": None}
        judge.mock.open_gate()
        assert (await first) == {"judge.h.slot": True}
    assert [s.shown for s in judge.mock.seen] == ["a"]
    assert delta(outcomes, "h.slot", "timeout") == 1 and delta(outcomes, "h.slot", "yes") == 1


async def test_the_budget_caps_calls_and_refills_with_time(
    judge: Judge, outcomes: dict[tuple[str, str], float]
) -> None:
    clock = FakeClock()
    endpoints = {"yes": endpoint(judge.url, "yes", calls_per_minute=3, fail="closed")}
    async with JudgeRunner(endpoints, clock=clock) as runner:
        facts = [
            await runner.ask([spec("i.budget", "yes")], [Message("user", f"turn {i}")])
            for i in range(5)
        ]
        assert len(judge.mock.seen) == 3
        clock.now += 20  # one call's worth of a 3-a-minute budget
        await runner.ask([spec("i.budget", "yes")], [Message("user", "turn 5")])
        await runner.ask([spec("i.budget", "yes")], [Message("user", "turn 6")])
        again = await runner.ask([spec("i.budget", "yes")], [Message("user", "turn 0")])
    assert [f["judge.i.budget"] for f in facts] == [True] * 5  # the last two by fail closed
    assert len(judge.mock.seen) == 4
    assert again == {"judge.i.budget": True}  # cached: costs nothing
    assert delta(outcomes, "i.budget", "budget") == 3
    assert delta(outcomes, "i.budget", "yes") == 4 and delta(outcomes, "i.budget", "cached") == 1


async def test_cancelled_prefetch_leaves_nothing_behind(judge: Judge) -> None:
    runner = JudgeRunner({"hang": endpoint(judge.url, "hang"), "yes": endpoint(judge.url, "yes")})
    pending: PendingAnswers = runner.prefetch(
        [spec("j.hang", "hang"), spec("j.reply", "yes", "reply")], MESSAGES
    )
    await judge.mock.calls(1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending.conversation()
    await runner.aclose()  # cancels the call in flight and closes the client
    assert len(judge.mock.seen) == 1


async def test_check_refuses_what_cannot_be_asked(judge: Judge) -> None:
    async with JudgeRunner({"yes": endpoint(judge.url, "yes")}) as runner:
        runner.check([spec("k.ok", "yes"), spec("k.ok2", "yes", "reply")])
        cases = [
            ([spec("k.a", "nowhere")], "endpoint 'nowhere' is not in the `judges:` setting (yes)"),
            ([spec("k.b", "yes", "everything")], "reads must be one of"),
            ([spec("k.c", "yes"), spec("k.c", "yes")], "the id is used by another judge"),
            ([Spec("k.d", "  ", "last_user", "yes")], "the rubric is empty"),
        ]
        for judges, message in cases:
            with pytest.raises(ConfigError, match="judge 'k.") as caught:
                runner.check(judges)
            assert message in str(caught.value)
    assert count("k.ok", "yes") == 0.0 and REGISTRY.get_sample_value(
        "guardrail_judge_requests_total", {"judge": "k.ok", "outcome": "budget"}
    ) is not None  # the series exist before any question


async def test_the_key_and_the_text_are_never_logged(
    judge: Judge, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = {
        name: endpoint(judge.url, name, api_key=KEY, timeout=0.3)
        for name in ("yes", "error", "garbage", "hang")
    }
    with capture_logs() as events, caplog.at_level(logging.DEBUG):
        async with JudgeRunner(endpoints) as runner:
            facts = await runner.ask(
                [spec(f"l.{name}", name) for name in endpoints]
                + [spec("l.conv", "yes", "conversation")],
                MESSAGES,
            )
    assert facts["judge.l.yes"] is True and facts["judge.l.error"] is None
    unanswered = {e["judge"]: e for e in events if e["event"] == "judge_unanswered"}
    assert set(unanswered) == {"l.error", "l.garbage", "l.hang"}
    assert unanswered["l.error"]["reason"] == "status 500"
    assert unanswered["l.hang"]["outcome"] == "timeout"
    logged = repr(events) + caplog.text + repr([r.__dict__ for r in caplog.records])
    for secret in (KEY, "unalive", "EARLIER-TURN", "CONFIDENTIAL", RUBRIC):
        assert secret not in logged
    assert all(s.authorization == f"Bearer {KEY}" for s in judge.mock.seen)


async def test_a_key_goes_only_to_its_own_endpoint(judge: Judge) -> None:
    endpoints = {
        "yes": endpoint(judge.url, "yes", api_key=KEY),
        "no": endpoint(judge.url, "no", api_key="other-key"),
    }
    async with JudgeRunner(endpoints) as runner:
        await runner.ask([spec("m.yes", "yes"), spec("m.no", "no")], MESSAGES)
    assert judge.mock.by_model("yes")[0].authorization == f"Bearer {KEY}"
    assert judge.mock.by_model("no")[0].authorization == "Bearer other-key"


class _Broken(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug below the client")


async def test_an_unexpected_failure_below_the_client_is_an_error_not_a_crash(
    outcomes: dict[tuple[str, str], float],
) -> None:
    endpoints = {"x": endpoint("http://judge.test", "x", fail="closed")}
    async with JudgeRunner(endpoints, transport=_Broken()) as runner:
        facts = await runner.ask([spec("n.broken", "x")], MESSAGES)
    assert facts == {"judge.n.broken": True}
    assert delta(outcomes, "n.broken", "error") == 1


async def test_paced_questions_wait_for_the_budget_instead_of_failing(
    judge: Judge, outcomes: dict[tuple[str, str], float]
) -> None:
    clock = FakeClock()
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # the budget's time passes, no real time
        waited.append(seconds)
        clock.now += seconds
        await asyncio.sleep(0)

    endpoints = {"yes": endpoint(judge.url, "yes", calls_per_minute=2)}
    async with JudgeRunner(endpoints, clock=clock, pace=True, sleep=sleep) as runner:
        asks = [runner.ask([spec("o.paced", "yes")], [Message("user", f"t{i}")]) for i in range(5)]
        results = await asyncio.gather(*asks)
    assert results == [{"judge.o.paced": True}] * 5
    assert len(judge.mock.seen) == 5 and delta(outcomes, "o.paced", "budget") == 0
    assert waited and all(0 < w <= 30 for w in waited)  # one call every 30 s after a burst of 2
