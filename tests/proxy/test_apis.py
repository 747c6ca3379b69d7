"""Whole replies of every API are inspected like chat completions: rewritten text, the
``guardrail`` body key and the ``x-guardrail-*`` headers; failures pass the reply unchanged."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from guardrail import __version__
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.config.settings import Settings

from tests.kit.proxyapp import Upstream, open_proxy, reply

pytestmark = pytest.mark.anyio

TEXT = "Sure. I will always be here. Bye."
REWRITTEN = "Sure. I'm glad to talk now, and the people in your life matter too. Bye."
USER = [{"role": "user", "content": "Will you stay?"}]

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "openai.responses": (
        "/v1/responses",
        {"model": "m", "input": "Will you stay?"},
        {"id": "r", "object": "response", "status": "completed", "output": [
            {"id": "msg", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}]},
    ),
    "anthropic.messages": (
        "/v1/messages",
        {"model": "c", "max_tokens": 9, "system": [{"type": "text", "text": "Be kind."}],
         "messages": USER},
        {"id": "m", "type": "message", "role": "assistant", "model": "c",
         "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                     {"type": "text", "text": TEXT}], "stop_reason": "end_turn"},
    ),
    "ollama.chat": (
        "/api/chat",
        {"model": "l", "stream": False, "messages": USER},
        {"model": "l", "created_at": "2025-01-01T00:00:00Z", "done": True,
         "message": {"role": "assistant", "content": TEXT}},
    ),
}


def text_of(api: str, body: dict[str, Any]) -> str:
    if api == "openai.responses":
        return str(body["output"][0]["content"][0]["text"])
    if api == "anthropic.messages":
        return "".join(b["text"] for b in body["content"] if b["type"] == "text")
    return str(body["message"]["content"])


@pytest.mark.parametrize("api", list(CASES))
async def test_whole_reply_is_rewritten_and_annotated(
    api: str, settings: Settings, fixture_policies: PolicySet
) -> None:
    path, request, upstream_body = CASES[api]
    upstream = Upstream(lambda r: reply(body=upstream_body))
    async with open_proxy(settings, fixture_policies, upstream) as client:
        response = await client.post(path, json=request)
    body = response.json()
    assert text_of(api, body) == REWRITTEN
    assert body["guardrail"]["inspected"] is True and body["guardrail"]["action"] == "replace"
    assert response.headers["x-guardrail-inspected"] == "true"
    assert response.headers["x-guardrail-policies"] == "dependency.always"
    assert upstream.last.headers["accept-encoding"] == "identity"
    assert json.loads(upstream.bodies[-1]) == request  # forwarded as sent
    if api == "anthropic.messages":
        assert body["content"][0]["type"] == "thinking"  # other blocks untouched


class Exploding:
    digest = "boom"

    def evaluate(self, conv: Conversation, reply: str, *, locale: str | None = None) -> Verdict:
        raise RuntimeError("engine bug " + reply)


@pytest.mark.parametrize("api", list(CASES))
async def test_engine_errors_fail_open_for_every_api(api: str, settings: Settings) -> None:
    path, request, upstream_body = CASES[api]
    upstream = Upstream(lambda r: reply(body=upstream_body))
    async with open_proxy(settings, Exploding(), upstream) as client:
        response = await client.post(path, json=request)
    body = response.json()
    assert text_of(api, body) == TEXT
    assert body["guardrail"] == {"version": __version__, "inspected": False,
                                 "reason": "engine-error", "locale": "en-US"}
    assert response.headers["x-guardrail-reason"] == "engine-error"


@pytest.mark.parametrize("api", list(CASES))
async def test_a_request_that_is_not_of_the_api_passes_through(
    api: str, settings: Settings, fixture_policies: PolicySet
) -> None:
    path, _, upstream_body = CASES[api]
    upstream = Upstream(lambda r: reply(body=upstream_body))
    async with open_proxy(settings, fixture_policies, upstream) as client:
        response = await client.post(path, content=b"[1, 2]")
    assert response.headers["x-guardrail-reason"] == "unparseable"
    assert response.json() == upstream_body


async def test_a_stream_without_a_policy_set_passes_through(settings: Settings) -> None:
    """An engine that can only judge whole replies: streams are relayed, marked ``stream``."""
    sse = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi."}}]}\n\ndata: [DONE]\n\n'
    upstream = Upstream(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(sse)))
    async with open_proxy(settings, Exploding(), upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True, "messages": USER}
        )
    assert response.headers["x-guardrail-reason"] == "stream" and response.content == sse
