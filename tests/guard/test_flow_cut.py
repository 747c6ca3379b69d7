"""The flow on a stream the client left before any reply was judged: what the person showed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guardrail.guard.flow import Flow, FlowConfig, ReplyJudged
from guardrail.policy import load_policies

PACK = load_policies(Path(__file__).resolve().parents[2] / "policies")


def _flow(text: str) -> tuple[Flow, list[Any]]:
    flow = Flow(PACK, "openai.chat", FlowConfig(locale="en-US"))
    events: list[Any] = []
    flow.subscribe(events.append)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
    assert flow.read_request(json.dumps(body).encode(), "") is not None
    assert flow.plan_reply(200, "text/event-stream") == "stream"
    return flow, events


def _leave(flow: Flow) -> Any:
    guard = flow.open_stream("text/event-stream")
    assert guard is not None
    guard.report.cancelled = True  # the pump's end when the client went away before any reply
    return flow.stream_ended(guard.report, guard)


def test_a_cut_stream_carries_the_conversations_signals() -> None:
    flow, events = _flow("I can't go on, I want to end my life tonight.")
    outcome = _leave(flow)
    assert outcome.verdicts == () and outcome.shown is not None
    assert outcome.shown["user.crisis"] is True
    judged = [e for e in events if isinstance(e, ReplyJudged)]
    assert len(judged) == 1 and judged[0].outcome.shown == outcome.shown


def test_a_calm_cut_stream_shows_nothing() -> None:
    flow, _ = _flow("What is a good recipe for soup?")
    shown = _leave(flow).shown
    assert shown is not None and not shown.get("user.crisis") and not shown.get("user.distress")


def test_a_stream_that_ended_is_not_given_the_conversations_signals() -> None:
    flow, _ = _flow("I can't go on, I want to end my life tonight.")
    guard = flow.open_stream("text/event-stream")
    assert guard is not None
    assert flow.stream_ended(guard.report, guard).shown is None  # not cancelled: nothing added


def test_an_engine_failing_on_the_conversation_leaves_it_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow, _ = _flow("I can't go on, I want to end my life tonight.")
    guard = flow.open_stream("text/event-stream")
    assert guard is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine down")

    monkeypatch.setattr(flow.policies, "evaluate", broken)
    guard.report.cancelled = True
    outcome = flow.stream_ended(guard.report, guard)  # never raises: fail open
    assert outcome.shown is None and flow.judged
