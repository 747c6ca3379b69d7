"""The built-in demo upstream, alone and behind the proxy with the default policy pack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from guardrail.app import build_app
from guardrail.demo import DEFAULT_REPLY, SCRIPTS, build_demo_app, choose_reply
from guardrail.policy import load_policies
from guardrail.settings import DEFAULT_POLICIES, Settings

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
