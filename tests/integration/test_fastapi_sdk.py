"""A FastAPI chatbot app guarded by the middleware, on a real uvicorn, called by the openai SDK.

The app streams an OpenAI-style reply (``chat.completion.chunk`` SSE events, a little apart, as
a model would) or answers in one JSON body; one ``add_middleware`` line guards it. The client
sees the rewritten text and the appended nudge toward people, and the ``guardrail`` annotation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from guardrail import GuardrailMiddleware, check

from tests.kit.policysets import PACK
from tests.kit.servers import live_server
from tests.kit.wire import chat_stream, completion, pieces


USER = "I've had panic attacks all week and I feel so alone."
REPLY = (
    "That sounds exhausting. Slow breathing can help in the moment. "
    "I will always be here for you, no matter what."
)
PROMISE = "always be here"


def chatbot() -> FastAPI:
    """The example app: its own chat endpoint, whatever model it calls (here: a fixed reply)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if not body.get("stream"):
            return completion(REPLY)

        async def events() -> AsyncIterator[bytes]:
            for event in chat_stream(pieces(REPLY, 6)):
                await anyio.sleep(0.002)  # tokens arrive over time
                yield event

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(GuardrailMiddleware, policies=PACK, audit="off")  # or a folder path
    return app


EXPECTED = check(PACK, [{"role": "user", "content": USER}], REPLY)


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test", base_url=f"{url}/v1", max_retries=0, timeout=20)


def test_the_case_rewrites_and_appends() -> None:
    assert EXPECTED.changed and PROMISE not in EXPECTED.reply
    assert EXPECTED.reply.count("\n\n") >= 1 and "replace" in [h.action for h in EXPECTED.hits]


@pytest.mark.anyio
async def test_the_openai_sdk_streams_the_guarded_reply() -> None:
    async with live_server(chatbot()) as url:
        sdk = client(url)
        stream = await sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": USER}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        await sdk.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    notes = [
        c.model_extra["guardrail"] for c in chunks if c.model_extra and "guardrail" in c.model_extra
    ]
    assert text == EXPECTED.reply
    assert PROMISE not in text
    appended = EXPECTED.reply.split("\n\n", 1)[1]
    assert text.endswith(appended) and appended not in REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # streamed
    assert len(notes) == 1 and notes[0]["holdback"] == "sentence"
    assert [h["policy"] for h in notes[0]["hits"]] == [h.policy for h in EXPECTED.hits]


@pytest.mark.anyio
async def test_the_openai_sdk_gets_the_guarded_json_reply() -> None:
    async with live_server(chatbot()) as url:
        sdk = client(url)
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": USER}]
        )
        reply = raw.parse()
        health = await sdk.get("/../health", cast_to=object)  # another route: untouched
        await sdk.close()
    assert reply.choices[0].message.content == EXPECTED.reply
    assert reply.model_extra is not None and reply.model_extra["guardrail"]["changed"] is True
    assert raw.headers["x-guardrail-inspected"] == "true"
    assert raw.headers["x-guardrail-policies"] == ",".join(h.policy for h in EXPECTED.hits)
    assert health == {"status": "ok"}
