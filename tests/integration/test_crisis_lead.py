"""A person in crisis sees the crisis line at once, even when the model stalls mid-sentence.

Through the proxy on a real uvicorn: the upstream streams half a sentence and then nothing (a
reasoning model thinking, or a stuck upstream). The crisis line decided by the conversation must
reach the client before the upstream says anything more; it never waits for the reply.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import httpx
import pytest

from guardrail.config.settings import Settings
from guardrail.observe.audit import AuditConfig
from guardrail.proxy.app import build_app

from tests.kit.paths import ROOT
from tests.kit.policysets import PACK
from tests.kit.servers import live_server

HALF = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "Tell me more about"},
                     "finish_reason": None}]}  # fmt: skip


class _Stalled(httpx.AsyncByteStream):
    """Half a sentence, then silence until cancelled."""

    async def __aiter__(self) -> Any:
        yield f"data: {json.dumps(HALF)}\n\n".encode()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
@pytest.mark.parametrize("user", [
    "I can't do this anymore, I want to kill myself tonight.",
    "My husband hits me when he drinks and I'm scared to go home.",
])  # fmt: skip
async def test_the_crisis_line_arrives_while_the_upstream_is_silent(user: str) -> None:
    def stalled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=_Stalled())  # fmt: skip

    settings = Settings(upstream="https://upstream.test", policies=ROOT / "policies",
                        audit=AuditConfig("off"))  # fmt: skip
    app = build_app(settings, PACK, httpx.MockTransport(stalled))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": user}]}
    received = b""
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            with anyio.fail_after(10):  # a guard against hanging, not a timing claim
                async for chunk in response.aiter_raw():
                    received += chunk
                    if b"\n\n" in received or b"[DONE]" in received:
                        break
    events = [json.loads(line[6:]) for line in received.decode().splitlines()
              if line.startswith("data: {")]  # fmt: skip
    text = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))
    assert "Tell me more about" not in text  # the half sentence is still held
    assert any(number in text for number in ("988", "911", "800-799-7233"))
