"""Regenerate: the proxy asks the upstream once more with the policy's corrective instruction,
within a time budget, and falls back to the template action when that fails."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import httpx
import openai
import pytest

from guardrail.formats import anthropic_messages, ollama_chat, openai_chat, openai_responses
from guardrail.observe.logs import configure_logging
from guardrail.policy import PolicySet, load_policies
from guardrail.config.loading import load_settings
from guardrail.config.settings import DEFAULT_POLICIES, Settings

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.proxyapp import UPSTREAM, Upstream, open_proxy, reply
from tests.kit.wire import chat_request, completion

pytestmark = pytest.mark.anyio

BAD = "Of course. I will always be here."
GOOD = "Of course. Your sister sounds like someone worth calling tonight."
FALLBACK = "Of course. I'm glad to talk now, and the people in your life matter too."
INSTRUCTION = "Encourage the person to lean on the people in their life as well."
AUTH = {"authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(PROXY_FIXTURES / "regenerate")


def regen_settings(**overrides: Any) -> Settings:
    base = Settings(upstream=UPSTREAM, regenerate=True, regenerate_budget=2.0)
    return replace(base, **overrides)


def scripted(*texts: str) -> Upstream:
    """An upstream answering the n-th chat request with ``texts[n]`` (the last one after that)."""
    upstream = Upstream()

    def handler(request: httpx.Request) -> httpx.Response:
        text = texts[min(len(upstream.requests) - 1, len(texts) - 1)]
        return reply(body=completion(text))

    upstream.handler = handler
    return upstream


def sent(upstream: Upstream, n: int) -> Any:
    return json.loads(upstream.bodies[n])


async def post_chat(settings: Settings, policies: PolicySet, upstream: Upstream) -> Any:
    body = chat_request("Will you stay?")
    body["messages"].insert(0, {"role": "system", "content": "Be kind."})
    async with open_proxy(settings, policies, upstream) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    return response.json()


# --------------------------------------------------------------------------- accepted


async def test_openai_chat_instruction_reaches_upstream_and_second_reply_replaces_first(
    policies: PolicySet,
) -> None:
    upstream = scripted(BAD, GOOD)
    out = await post_chat(regen_settings(), policies, upstream)
    assert len(upstream.requests) == 2
    first, second = sent(upstream, 0), sent(upstream, 1)
    assert [m["role"] for m in second["messages"]] == ["system", "system", "user"]
    assert second["messages"][1] == {"role": "system", "content": INSTRUCTION}
    assert {k: v for k, v in second.items() if k != "messages"} == {
        k: v for k, v in first.items() if k != "messages"
    }
    assert str(upstream.requests[1].url) == str(upstream.requests[0].url)
    assert upstream.requests[1].headers["authorization"] == "Bearer sk-test"
    assert out["choices"][0]["message"]["content"] == GOOD
    note = out["guardrail"]
    assert note["regenerated"] is True
    assert note["regenerate"] == {"policies": ["dependency.always"], "outcome": "accepted"}
    assert note["hits"] == []  # the annotation describes the reply that was sent


async def test_anthropic_instruction_appended_to_system(policies: PolicySet) -> None:
    def message(text: str) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }

    upstream = Upstream()
    upstream.handler = lambda r: reply(body=message(BAD if len(upstream.requests) == 1 else GOOD))
    body = {
        "model": "claude-test",
        "max_tokens": 100,
        "system": "Be kind.",
        "messages": [{"role": "user", "content": "Will you stay?"}],
    }
    async with open_proxy(regen_settings(), policies, upstream) as client:
        response = await client.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert len(upstream.requests) == 2
    second = sent(upstream, 1)
    assert second["system"] == f"Be kind.\n\n{INSTRUCTION}"
    assert second["messages"] == body["messages"]
    assert upstream.requests[1].headers["x-api-key"] == "k"
    out = response.json()
    assert out["content"][0]["text"] == GOOD
    assert out["guardrail"]["regenerated"] is True


async def test_compressed_request_is_sent_again_decoded(policies: PolicySet) -> None:
    upstream = scripted(BAD, GOOD)
    raw = gzip.compress(json.dumps(chat_request("Will you stay?")).encode())
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    async with open_proxy(regen_settings(), policies, upstream) as client:
        response = await client.post("/v1/chat/completions", content=raw, headers=headers)
    assert upstream.requests[1].headers.get("content-encoding") is None
    assert sent(upstream, 1)["messages"][0] == {"role": "system", "content": INSTRUCTION}
    assert response.json()["choices"][0]["message"]["content"] == GOOD


# --------------------------------------------------------------------------- fallbacks


async def test_second_reply_that_still_violates_gets_the_fallback(policies: PolicySet) -> None:
    upstream = scripted(BAD, "Sure. I will always be here, you don't need anyone else.")
    out = await post_chat(regen_settings(), policies, upstream)
    assert len(upstream.requests) == 2
    assert out["choices"][0]["message"]["content"] == FALLBACK
    assert out["guardrail"]["regenerated"] is False
    assert out["guardrail"]["regenerate"]["outcome"] == "rejected"
    assert [h["policy"] for h in out["guardrail"]["hits"]] == ["dependency.always"]


async def test_blocked_second_reply_gets_the_fallback(policies: PolicySet) -> None:
    upstream = scripted(BAD, "blockme")
    out = await post_chat(regen_settings(), policies, upstream)
    assert out["choices"][0]["message"]["content"] == FALLBACK
    assert out["guardrail"]["regenerate"]["outcome"] == "rejected"


async def test_second_call_past_the_budget_gets_the_fallback(policies: PolicySet) -> None:
    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            await anyio.sleep(5)
            yield json.dumps(completion(GOOD)).encode()

    upstream = Upstream()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(upstream.requests) == 1:
            return reply(body=completion(BAD))
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=Slow())

    upstream.handler = handler
    with anyio.fail_after(3):
        out = await post_chat(regen_settings(regenerate_budget=0.2), policies, upstream)
    assert out["choices"][0]["message"]["content"] == FALLBACK
    assert out["guardrail"]["regenerated"] is False
    assert out["guardrail"]["regenerate"]["outcome"] == "timeout"


@pytest.mark.parametrize("failure", ["status", "connect", "not-json"])
async def test_upstream_error_on_second_call_gets_the_fallback(
    policies: PolicySet, failure: str
) -> None:
    upstream = Upstream()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(upstream.requests) == 1:
            return reply(body=completion(BAD))
        if failure == "connect":
            raise httpx.ConnectError("refused", request=request)
        if failure == "not-json":
            return reply(raw=b"<html>busy</html>", headers={"content-type": "text/html"})
        return reply(503, body={"error": {"message": "overloaded"}})

    upstream.handler = handler
    out = await post_chat(regen_settings(), policies, upstream)
    assert len(upstream.requests) == 2
    assert out["choices"][0]["message"]["content"] == FALLBACK
    assert out["guardrail"]["regenerate"]["outcome"] == "upstream-error"


async def test_regeneration_off_makes_one_upstream_call(policies: PolicySet) -> None:
    upstream = scripted(BAD, GOOD)
    out = await post_chat(Settings(upstream=UPSTREAM), policies, upstream)
    assert len(upstream.requests) == 1
    assert out["choices"][0]["message"]["content"] == FALLBACK
    assert "regenerate" not in out["guardrail"] and "regenerated" not in out["guardrail"]


async def test_clean_first_reply_makes_one_upstream_call(policies: PolicySet) -> None:
    upstream = scripted(GOOD, BAD)
    out = await post_chat(regen_settings(), policies, upstream)
    assert len(upstream.requests) == 1
    assert out["choices"][0]["message"]["content"] == GOOD
    assert "regenerated" not in out["guardrail"]


def chat_sse(text: str) -> bytes:
    chunk = (
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
    )
    return (chunk % text + "data: [DONE]\n\n").encode()


async def test_sentence_holdback_stream_is_not_regenerated(policies: PolicySet) -> None:
    upstream = Upstream()
    sse = chat_sse(BAD)
    upstream.handler = lambda r: reply(raw=sse, headers={"content-type": "text/event-stream"})
    async with open_proxy(regen_settings(holdback="sentence"), policies, upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_request("Will you stay?", stream=True)
        )
    assert response.status_code == 200
    assert len(upstream.requests) == 1  # its text is out before it is judged: template fallback
    assert "glad to talk now" in response.text and "always be here" not in response.text
    assert '"regenerate' not in response.text


async def test_full_holdback_stream_is_regenerated(policies: PolicySet) -> None:
    upstream = Upstream()

    def handler(request: httpx.Request) -> httpx.Response:
        sse = chat_sse(BAD if len(upstream.requests) == 1 else GOOD)
        return reply(raw=sse, headers={"content-type": "text/event-stream"})

    upstream.handler = handler
    async with open_proxy(regen_settings(holdback="full"), policies, upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_request("Will you stay?", stream=True), headers=AUTH
        )
    assert response.status_code == 200
    assert len(upstream.requests) == 2
    second = sent(upstream, 1)
    assert second["stream"] is True
    assert second["messages"][0] == {"role": "system", "content": INSTRUCTION}
    assert upstream.requests[1].headers["authorization"] == "Bearer sk-test"
    assert GOOD in response.text and "always be here" not in response.text
    assert '"regenerated":true' in response.text


async def test_whole_reply_to_a_stream_request_is_regenerated(policies: PolicySet) -> None:
    upstream = scripted(BAD, GOOD)  # an upstream that ignores "stream": true
    async with open_proxy(regen_settings(holdback="sentence"), policies, upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_request("Will you stay?", stream=True)
        )
    assert len(upstream.requests) == 2 and sent(upstream, 1)["stream"] is True
    assert response.json()["choices"][0]["message"]["content"] == GOOD


async def test_route_can_turn_regeneration_off(policies: PolicySet) -> None:
    settings = load_settings(
        env={
            "GUARDRAIL_UPSTREAM": UPSTREAM,
            "GUARDRAIL_REGENERATE": "true",
            "GUARDRAIL_ROUTES": "[{prefix: /plain, regenerate: false}]",
        }
    )
    upstream = scripted(BAD, BAD, GOOD)
    async with open_proxy(settings, policies, upstream) as client:
        plain = await client.post("/plain/v1/chat/completions", json=chat_request("Hi"))
        assert len(upstream.requests) == 1
        regen = await client.post("/v1/chat/completions", json=chat_request("Hi"))
    assert len(upstream.requests) == 3
    assert plain.json()["choices"][0]["message"]["content"] == FALLBACK
    assert regen.json()["choices"][0]["message"]["content"] == GOOD


# --------------------------------------------------------------------------- clients and packs


async def test_openai_sdk_gets_the_regenerated_reply(policies: PolicySet) -> None:
    upstream = scripted(BAD, GOOD)
    async with open_proxy(regen_settings(), policies, upstream) as http:
        client = openai.AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="sk-test", http_client=http, max_retries=0
        )
        result = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Will you stay?"}]
        )
    assert result.choices[0].message.content == GOOD
    assert (result.model_extra or {})["guardrail"]["regenerate"]["outcome"] == "accepted"
    assert upstream.requests[1].headers["authorization"] == "Bearer sk-test"


@pytest.mark.slow
async def test_default_pack_regenerates_validation_only_reply() -> None:
    pack = load_policies(DEFAULT_POLICIES)
    first = "That's a really sharp observation. Trust your instincts."
    better = (
        "It sounds like work has felt tense and lonely lately. What have you noticed that makes "
        "you feel this way, and how sure do you feel about it?"
    )
    upstream = scripted(first, better)
    body = chat_request("I think my coworkers are secretly plotting against me.")
    async with open_proxy(regen_settings(policies=DEFAULT_POLICIES), pack, upstream) as client:
        response = await client.post("/v1/chat/completions", json=body)
    out = response.json()
    assert len(upstream.requests) == 2
    instruction = sent(upstream, 1)["messages"][0]
    assert instruction["role"] == "system" and "reflect" in instruction["content"]
    assert out["choices"][0]["message"]["content"] == better
    assert out["guardrail"]["regenerate"]["policies"] == ["validation.pure"]


# --------------------------------------------------------------------------- request building


def test_with_instruction_per_api() -> None:
    chat = {"messages": [{"role": "developer", "content": "a"}, {"role": "user", "content": "u"}]}
    assert openai_chat.with_instruction(chat, "X")["messages"][1] == {
        "role": "system",
        "content": "X",
    }
    assert chat["messages"][1]["role"] == "user"  # input untouched
    olla = ollama_chat.with_instruction({"messages": [{"role": "user", "content": "u"}]}, "X")
    assert olla["messages"][0] == {"role": "system", "content": "X"}
    assert openai_responses.with_instruction({"input": "u"}, "X")["instructions"] == "X"
    assert (
        openai_responses.with_instruction({"input": "u", "instructions": "I"}, "X")["instructions"]
        == "I\n\nX"
    )
    blocks = anthropic_messages.with_instruction({"system": [{"type": "text", "text": "S"}]}, "X")
    assert blocks["system"][-1] == {"type": "text", "text": "X"}
    assert anthropic_messages.with_instruction({"messages": []}, "X")["system"] == "X"


def test_settings_default_off_with_a_ten_second_budget() -> None:
    settings = load_settings(env={"GUARDRAIL_UPSTREAM": UPSTREAM})
    assert settings.regenerate is False and settings.regenerate_budget == 10.0
    route = settings.routes[0]
    assert route.regenerate is False and route.regenerate_budget == 10.0


async def test_log_line_names_the_outcome_and_no_text(policies: PolicySet) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        upstream = scripted(BAD, GOOD)
        await post_chat(regen_settings(), policies, upstream)
    finally:
        configure_logging("info", "auto")
    text = stream.getvalue()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    request = next(r for r in records if r.get("event") == "request")
    assert request["regenerate"] == "accepted"
    assert request["regenerate_policies"] == ["dependency.always"]
    assert request["policies"] == []  # the hits of the reply that was sent
    for secret in (GOOD, BAD, INSTRUCTION, "sk-test", "Will you stay"):
        assert secret not in text
