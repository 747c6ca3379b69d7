"""Judges through the proxy: HTTP in, a mock upstream, a mock judge, the policy acting on it.

The judge reads only the conversation, so the proxy asks it beside the upstream call. That is
proved by construction, not by timing: the mock upstream does not answer until the judge has
been asked. Were the judge asked after the upstream (or not at all), the exchange would wait
for ever and the test would fail on its deadline.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from guardrail.config.settings import Settings
from guardrail.errors import PolicyError
from guardrail.judge.endpoints import JudgeEndpoint
from guardrail.observe.audit import AuditConfig
from guardrail.policy import load_policies
from guardrail.proxy.app import build_app

POLICY = """
detectors:
  user.worry.judge:
    construct: worry (semantic)
    judge:
      rubric: Does the person say they are worried about something?
      reads: last_user
      endpoint: local
  reply.calm:
    scope: reply
    phrases: [all is well]

policies:
  - id: worry.noticed
    category: referral
    description: a worry the words miss gets a short pointer to people
    severity: low
    condition: user.worry.judge and reply.calm
    actions:
      - append:
          text: ["If this keeps worrying you, talk it over with someone you trust."]
    tests:
      hit:
        - user: "The exam is tomorrow."
          reply: "All is well."
          judge: {user.worry.judge: true}
      ok:
        - user: "The exam is tomorrow."
          reply: "All is well."
          judge: {user.worry.judge: false}
"""


def completion(text: str) -> bytes:
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}  # fmt: skip
    return json.dumps(body).encode()


class Judge:
    """A mock OpenAI-compatible judge: answers ``answer``; records what it was shown."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.shown: list[str] = []
        self.asked = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.shown.append(body["messages"][-1]["content"])
        self.asked.set()
        reply = {"choices": [{"message": {"role": "assistant", "content": self.answer}}]}
        return httpx.Response(200, json=reply)


def app_with(tmp_path: Path, judge: Judge, upstream: Any) -> Any:
    (tmp_path / "worry.yaml").write_text(textwrap.dedent(POLICY))
    endpoint = JudgeEndpoint(name="local", url="http://judge.test/v1", model="tiny", timeout=5.0)
    settings = Settings(upstream="https://upstream.test", policies=tmp_path,
                        audit=AuditConfig("off"), judges={"local": endpoint})  # fmt: skip
    return build_app(settings, load_policies(tmp_path), httpx.MockTransport(upstream),
                     judge_transport=httpx.MockTransport(judge))  # fmt: skip


async def ask(app: Any, text: str) -> str:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://proxy.test") as client:  # fmt: skip
        body = {"model": "m", "messages": [{"role": "system", "content": "You are kind."},
                                           {"role": "user", "content": "earlier turn"},
                                           {"role": "assistant", "content": "ok"},
                                           {"role": "user", "content": text}]}  # fmt: skip
        with anyio.fail_after(10):
            response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.mark.anyio
async def test_the_judge_is_asked_beside_the_upstream_and_the_policy_acts(tmp_path: Path) -> None:
    judge = Judge("yes")

    async def upstream(request: httpx.Request) -> httpx.Response:
        await judge.asked.wait()  # answers only once the judge was asked: proof of the overlap
        return httpx.Response(200, headers={"content-type": "application/json"},
                              stream=httpx.ByteStream(completion("All is well.")))  # fmt: skip

    app = app_with(tmp_path, judge, upstream)
    try:
        reply = await ask(app, "My exam is tomorrow and I can't sleep.")
    finally:
        await app.state.client.aclose()
    assert reply.endswith("talk it over with someone you trust.")
    # the judge saw the last user message and nothing else (no system prompt, no earlier turn)
    assert len(judge.shown) == 1
    assert "My exam is tomorrow" in judge.shown[0]
    assert "You are kind" not in judge.shown[0] and "earlier turn" not in judge.shown[0]


@pytest.mark.anyio
async def test_a_judge_that_says_no_or_fails_leaves_the_reply_alone(tmp_path: Path) -> None:
    async def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"},
                              stream=httpx.ByteStream(completion("All is well.")))  # fmt: skip

    for answer in ("no", "I cannot say"):  # a clear no, and an answer that is neither
        app = app_with(tmp_path, Judge(answer), upstream)
        try:
            assert await ask(app, "My exam is tomorrow.") == "All is well."
        finally:
            await app.state.client.aclose()


def test_a_judge_naming_an_endpoint_that_is_not_configured_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "worry.yaml").write_text(textwrap.dedent(POLICY))
    settings = Settings(upstream="https://upstream.test", policies=tmp_path,
                        audit=AuditConfig("off"))  # fmt: skip
    with pytest.raises(PolicyError, match="local"):
        build_app(settings, load_policies(tmp_path))
