"""The official openai SDK, pointed at the proxy, parses what it returns."""

from __future__ import annotations

import httpx
import openai
import pytest

from guardrail.policy import PolicySet
from guardrail.config.settings import Settings

from tests.kit.proxyapp import Proxy, Upstream, open_proxy, reply
from tests.kit.wire import USAGE, completion

pytestmark = pytest.mark.anyio


def sdk(proxy: Proxy) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=proxy.app), base_url="http://proxy.test"
    )
    return openai.AsyncOpenAI(
        base_url="http://proxy.test/v1", api_key="sk-test", http_client=http, max_retries=0
    )


async def test_sdk_parses_rewritten_reply_and_guardrail_field(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body=completion("Of course. I will always be here."))
    client = sdk(proxy)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "Will you stay?"}]
    )
    result = raw.parse()
    assert result.choices[0].message.content == (
        "Of course. I'm glad to talk now, and the people in your life matter too."
    )
    assert result.usage is not None and result.usage.total_tokens == USAGE["total_tokens"]
    extra = result.model_extra or {}
    assert extra["guardrail"]["inspected"] is True
    assert [hit["policy"] for hit in extra["guardrail"]["hits"]] == ["dependency.always"]
    assert raw.headers["x-guardrail-policies"] == "dependency.always"
    assert proxy.upstream.last.headers["authorization"] == "Bearer sk-test"
    await client.close()


async def test_sdk_streams_through_the_proxy(proxy: Proxy) -> None:
    chunk = (
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
    )
    sse = (chunk % "Hel" + chunk % "lo" + "data: [DONE]\n\n").encode()
    proxy.upstream.handler = lambda r: reply(raw=sse, headers={"content-type": "text/event-stream"})
    client = sdk(proxy)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"  # guarded: released at the end of the sentence-less reply
    notes = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    assert [n["inspected"] for n in notes] == [True]  # the annotation chunk, choices: []
    await client.close()


async def test_sdk_sees_upstream_errors_and_gateway_errors(
    settings: Settings, fixture_policies: PolicySet
) -> None:
    upstream = Upstream(
        lambda r: reply(
            429,
            {
                "error": {
                    "message": "slow down",
                    "type": "rate_limit",
                    "code": "rate_limit_exceeded",
                }
            },
        )
    )
    async with open_proxy(settings, fixture_policies, upstream) as http:
        client = openai.AsyncOpenAI(
            base_url="http://proxy.test/v1", api_key="k", http_client=http, max_retries=0
        )
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Hi"}]
            )
        assert limited.value.code == "rate_limit_exceeded"

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        upstream.handler = refuse
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Hi"}]
            )
        assert failed.value.status_code == 502 and failed.value.code == "upstream_unavailable"
