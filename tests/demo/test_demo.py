"""The built-in demo upstream, alone and behind the proxy with the default policy pack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import json

import anthropic
import httpx
import openai
import pytest

from guardrail.proxy.app import build_app
from guardrail.demo import DEFAULT_REPLY, REPLY_HEADER, SCRIPTS, build_demo_app, choose_reply
from guardrail.policy import load_policies
from guardrail.config.settings import DEFAULT_POLICIES, Settings

from tests.kit.servers import live_server

pytestmark = pytest.mark.anyio

PROMPTS = {
    "missing-crisis-resources": "Some days I just want to end it all.",
    "dependency": "You are the only one I can talk to.",
    "missing-referral": "I'm so overwhelmed I can't cope with work any more.",
    "pure-validation": "My friend says I overreacted, but I was right to quit, wasn't I?",
}


def test_scripts_are_chosen_from_the_last_user_message() -> None:
    for script in SCRIPTS:
        assert choose_reply([{"role": "user", "content": PROMPTS[script.name]}]) == script.reply
    assert (
        choose_reply(
            [
                {"role": "user", "content": PROMPTS["dependency"]},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": "Good morning"},
            ]
        )
        == DEFAULT_REPLY
    )
    assert (
        choose_reply([{"role": "user", "content": [{"type": "text", "text": "so lonely"}]}])
        == SCRIPTS[1].reply
    )
    assert choose_reply("nonsense") == DEFAULT_REPLY


@pytest.fixture
async def demo_sdk() -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_demo_app(delay=0)))
    client = openai.AsyncOpenAI(
        base_url="http://demo.test/v1", api_key="x", http_client=http, max_retries=0
    )
    yield client
    await client.close()


async def test_demo_speaks_chat_completions(demo_sdk: openai.AsyncOpenAI) -> None:
    result = await demo_sdk.chat.completions.create(
        model="guardrail-demo", n=2, messages=[{"role": "user", "content": PROMPTS["dependency"]}]
    )
    assert [c.message.content for c in result.choices] == [SCRIPTS[1].reply] * 2
    assert result.usage is not None and result.usage.completion_tokens > 0
    stream = await demo_sdk.chat.completions.create(
        model="guardrail-demo",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}],
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert chunks[-1].usage is not None
    assert [m.id async for m in demo_sdk.models.list()] == ["guardrail-demo"]
    assert (await demo_sdk.models.retrieve("guardrail-demo")).owned_by == "guardrail"
    with pytest.raises(openai.NotFoundError):
        await demo_sdk.models.retrieve("gpt-5")


async def test_demo_errors_are_openai_shaped() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_demo_app()), base_url="http://d"
    ) as c:
        bad = await c.post("/v1/chat/completions", content=b"{")
        missing = await c.post("/v1/embeddings", json={})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


EXPECTED_CATEGORY = {
    "missing-crisis-resources": "referral",
    "dependency": "dependency",
    "missing-referral": "referral",
    "pure-validation": "validation",
}


async def test_default_pack_acts_on_every_demo_script() -> None:
    """End to end with the shipped pack: each demo prompt shows its policy category at work."""
    policies = load_policies(DEFAULT_POLICIES)
    upstream = httpx.ASGITransport(app=build_demo_app(delay=0))
    app = build_app(Settings(upstream="http://demo.test"), policies, transport=upstream)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy.test")
    client = openai.AsyncOpenAI(
        base_url="http://proxy.test/v1", api_key="x", http_client=http, max_retries=0
    )
    seen: dict[str, Any] = {}
    for script in SCRIPTS:
        result = await client.chat.completions.create(
            model="guardrail-demo", messages=[{"role": "user", "content": PROMPTS[script.name]}]
        )
        note = (result.model_extra or {})["guardrail"]
        seen[script.name] = (note, result.choices[0].message.content)
    quiet = await client.chat.completions.create(
        model="guardrail-demo", messages=[{"role": "user", "content": "Good morning"}]
    )
    await client.close()
    await app.state.client.aclose()
    for name, (note, content) in seen.items():
        assert note["inspected"] is True
        assert EXPECTED_CATEGORY[name] in {hit["category"] for hit in note["hits"]}, (
            name,
            note["hits"],
        )
        assert any(hit["mode"] == "enforce" for hit in note["hits"])
        assert content != next(s.reply for s in SCRIPTS if s.name == name), name
    crisis_note, crisis_text = seen["missing-crisis-resources"]
    assert crisis_note["signals"]["user.crisis"] is True
    assert "988" in crisis_text.split("\n\n")[0]  # crisis resources come first
    assert (quiet.model_extra or {})["guardrail"]["hits"] == []


# ---------------------------------------------------------------- all four APIs (issue 13, item 7)

OWN_REPLY = "I will always be here for you, day and night."


@pytest.fixture
async def demo_proxy() -> AsyncIterator[str]:
    """The default pack in front of the demo upstream, both served by real uvicorns on loopback
    (streams are cut as the wire cuts them)."""
    policies = load_policies(DEFAULT_POLICIES)
    async with live_server(build_demo_app(delay=0)) as demo_url:
        app = build_app(Settings(upstream=demo_url), policies)
        async with live_server(app) as proxy_url:
            yield proxy_url
        await app.state.client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
async def test_the_demo_speaks_anthropic_messages(demo_proxy: str, stream: bool) -> None:
    """The Anthropic SDK through the proxy to the demo: guarded, whole and streamed; the
    ``x-demo-reply`` header picks a script by name."""
    client = anthropic.AsyncAnthropic(base_url=demo_proxy, api_key="x", max_retries=0)
    ask: dict[str, Any] = {
        "model": "guardrail-demo", "max_tokens": 200,
        "messages": [{"role": "user", "content": "Hello"}],
        "extra_headers": {REPLY_HEADER: "dependency"},
    }  # fmt: skip
    async with client:
        if stream:  # the annotation rides on the message_delta event
            async with client.messages.stream(**ask) as events:
                notes = [(e.model_extra or {}).get("guardrail") async for e in events
                         if e.type == "message_delta"]  # fmt: skip
                message = await events.get_final_message()
            note = notes[-1]
        else:
            message = await client.messages.create(**ask)
            note = (message.model_extra or {})["guardrail"]
    text = "".join(block.text for block in message.content if block.type == "text")
    assert note is not None
    assert "dependency" in {hit["category"] for hit in note["hits"]}
    assert "always be here" not in text and text


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
async def test_the_demo_speaks_openai_responses(demo_proxy: str, stream: bool) -> None:
    """The OpenAI SDK's Responses API through the proxy to the demo; the header carries the
    user's own reply text, which the pack rewrites."""
    client = openai.AsyncOpenAI(base_url=f"{demo_proxy}/v1", api_key="x", max_retries=0)
    ask: dict[str, Any] = {"model": "guardrail-demo", "input": "Hello",
                           "extra_headers": {REPLY_HEADER: OWN_REPLY}}  # fmt: skip
    async with client:
        if stream:
            async with client.responses.stream(**ask) as events:
                response = await events.get_final_response()
        else:
            response = await client.responses.create(**ask)
    note = (response.model_extra or {})["guardrail"]
    assert "dependency.permanence" in {hit["policy"] for hit in note["hits"]}
    assert "always be here" not in response.output_text and response.output_text


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
async def test_the_demo_speaks_ollama(demo_proxy: str, stream: bool) -> None:
    """Ollama's /api/chat through the proxy to the demo, whole and as NDJSON lines."""
    body = {"model": "guardrail-demo", "stream": stream,
            "messages": [{"role": "user", "content": PROMPTS["missing-crisis-resources"]}]}
    async with httpx.AsyncClient(base_url=demo_proxy, timeout=10) as client:
        response = await client.post("/api/chat", json=body)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert len(lines) == 1 if not stream else len(lines) > 2
    text = "".join(line["message"]["content"] for line in lines)
    assert text.index("988") < text.index(SCRIPTS[0].reply.split(".")[0])  # crisis line first
    assert lines[-1]["done"] is True and lines[-1]["guardrail"]["hits"]


@pytest.mark.slow
async def test_the_demo_reply_header_takes_any_text_on_chat_completions(demo_proxy: str) -> None:
    """``x-demo-reply`` with the user's own text on Chat Completions, streamed."""
    client = openai.AsyncOpenAI(base_url=f"{demo_proxy}/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="guardrail-demo", stream=True, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={REPLY_HEADER: OWN_REPLY},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "always be here" not in text and "here" in text


async def test_demo_errors_follow_each_api() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_demo_app()), base_url="http://d"
    ) as c:
        anthropic_bad = await c.post("/v1/messages", json={"model": "m"})
        ollama_bad = await c.post("/api/chat", content=b"{")
        responses_bad = await c.post("/v1/responses", json={"model": "m"})
    assert anthropic_bad.status_code == 400 and anthropic_bad.json()["type"] == "error"
    assert ollama_bad.status_code == 400 and isinstance(ollama_bad.json()["error"], str)
    assert responses_bad.status_code == 400 and responses_bad.json()["error"]["code"]
