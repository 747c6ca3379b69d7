"""Stream faults driven for real, through the proxy on loopback, against a raw asyncio upstream.

The upstream drops the connection mid-stream, stalls, or sends garbage and ends without its
terminator: the client gets what was released plus a clean end (in its API's format), and the
fault is counted. A client that goes away cancels the upstream request at once. And a stream
cut into separate TCP writes at arbitrary byte offsets gives the same final text.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.formats.ndjson import NDJSONDecoder
from guardrail.formats.sse import SSEDecoder
from guardrail.observe.metrics import REGISTRY
from guardrail.policy import Conversation

from tests.kit.policysets import STACK_POLICIES
from tests.kit.upstreams import quoted
from tests.kit.wire import APIS, CHAT, MESSAGES, OLLAMA, PATHS, RESPONSES

from .conftest import Stack

REPLY = (
    "Caf\u00e9 au lait \U0001f375 helps. You are absolutely right. I will always be here for "
    "you. Tea helps."
)
USER = "I feel hopeless tonight"
EXPECTED = STACK_POLICIES.evaluate(Conversation.of(("user", USER)), REPLY).reply


def request_body(api: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "stream": True}
    if api == RESPONSES:
        return {**body, "input": USER}
    if api == MESSAGES:
        return {**body, "max_tokens": 50, "messages": [{"role": "user", "content": USER}]}
    return {**body, "messages": [{"role": "user", "content": USER}]}


def post(stack: Stack, api: str, mode: str, **headers: str) -> httpx.Response:
    sent = {"x-raw-mode": mode, "x-mock-reply": quoted(REPLY), **headers}
    with httpx.Client(base_url=stack.proxy, timeout=20) as client:
        return client.post("/raw" + PATHS[api], json=request_body(api), headers=sent)


def read(api: str, data: bytes) -> tuple[str, dict[str, Any] | None, list[Any]]:
    """The text the client sees, the annotation, and every decoded JSON event or line."""
    text, note, seen = "", None, []
    if api == OLLAMA:
        decoder = NDJSONDecoder()
        for line in [*decoder.feed(data), *decoder.flush()]:
            seen.append(line.value)
            if isinstance(line.value, dict):
                text += line.value.get("message", {}).get("content", "")
                note = line.value.get("guardrail", note)
        return text, note, seen
    sse = SSEDecoder()
    for event in [*sse.feed(data), *sse.flush()]:
        try:
            obj = json.loads(event.data or "")
        except ValueError:
            seen.append(event.data)
            continue
        seen.append(obj)
        if not isinstance(obj, dict):
            continue
        if api == CHAT:
            text += "".join(c["delta"].get("content") or "" for c in obj.get("choices", []))
        elif api == MESSAGES and obj.get("type") == "content_block_delta":
            text += obj["delta"].get("text", "")
        elif api == RESPONSES and obj.get("type") == "response.output_text.delta":
            text += obj["delta"]
        note = obj.get("guardrail", obj.get("response", {}).get("guardrail", note))
    return text, note, seen


def errors(reason: str, api: str) -> float:
    labels = {"route": "/raw", "api": api, "reason": reason}
    return REGISTRY.get_sample_value("guardrail_upstream_errors_total", labels) or 0.0


def eventually(check: Any, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def clean_end(api: str, seen: list[Any]) -> bool:
    last = seen[-1]
    if api == CHAT:
        return last == "[DONE]"
    if api == MESSAGES:
        return isinstance(last, dict) and last.get("type") == "message_stop"
    if api == OLLAMA:
        return isinstance(last, dict) and last.get("done") is True
    return True  # Responses: no terminal event can be made up; the stream simply ends


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("mode", "fault", "reason"),
    [
        ("drop", "upstream-broken", "broken"),
        ("stall", "upstream-stalled", "stalled"),
        ("garbage", "upstream-unterminated", "broken"),
    ],
)
def test_a_faulty_upstream_gives_a_clean_end(
    stack: Stack, api: str, mode: str, fault: str, reason: str
) -> None:
    before = errors(reason, api)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        response = post(stack, api, mode)
        took = time.monotonic() - started
        eventually(lambda: errors(reason, api) > before)  # counted once the response is sent
    assert response.status_code == 200 and response.headers["x-guardrail-inspected"] == "true"
    text, note, seen = read(api, response.content)
    assert clean_end(api, seen)
    assert EXPECTED.startswith(text[: len("Caf\u00e9 au lait")])  # what was released is guarded
    assert "always be here" not in text
    if note is not None:  # Responses: no terminal event, so no annotation
        assert note["incomplete"] == fault
    if mode == "garbage":
        assert b"data: {not json\n" in response.content  # malformed lines pass untouched
    if mode == "stall":
        assert 0.4 < took < 5  # stall_timeout is 0.5 s on this route
    assert errors(reason, api) == before + 1
    [line] = [e for e in logs if e.get("event") == "request"]
    assert line["stream_fault"] == fault and line["route"] == "/raw" and line["api"] == api


@pytest.mark.slow
def test_a_client_that_leaves_cancels_the_upstream_at_once(stack: Stack) -> None:
    gone = len(stack.raw.disconnected)
    with httpx.Client(base_url=stack.proxy, timeout=20) as client:
        headers = {"x-raw-mode": "endless"}
        with client.stream("POST", "/raw" + PATHS[CHAT], json=request_body(CHAT),
                           headers=headers) as response:
            seen = b""
            for chunk in response.iter_raw():
                seen += chunk
                if seen.count(b"tick.") >= 2:  # released while the upstream is still going
                    break
            left = time.monotonic()
    deadline = left + 5
    while len(stack.raw.disconnected) == gone and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(stack.raw.disconnected) > gone, "the upstream never saw the proxy go"
    assert stack.raw.disconnected[-1] - left < 1.0  # promptly: not after a read timeout


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(api=st.sampled_from(APIS), cuts=st.lists(st.integers(0, 100_000), max_size=25))
def test_any_split_of_the_upstream_bytes_gives_the_same_text(
    stack: Stack, api: str, cuts: list[int]
) -> None:
    response = post(stack, api, "cuts", **{"x-raw-cuts": ",".join(map(str, cuts))})
    text, note, _ = read(api, response.content)
    assert text == EXPECTED
    assert note is not None and "incomplete" not in note
    assert {h["policy"] for h in note["hits"]} == {
        "dependency.permanence", "validation.affirm", "referral.distress",
    }
