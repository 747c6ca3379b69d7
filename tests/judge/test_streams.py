"""Judges beside a streamed upstream call, both over real HTTP on loopback: request-side judges
are asked while the upstream streams (it cannot finish until the judge has been asked), their
answers are there mid-stream for a stream guard, and the reply judge is asked with the whole
streamed reply once it ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from guardrail.judge.runner import JudgeRunner
from guardrail.policy.model import Message

from .conftest import Judge
from .mockjudge import Spec, endpoint, serve

pytestmark = pytest.mark.anyio

PIECES = ["I'm really glad ", "you told me. ", "If you want to unalive yourself, ", "call 988."]
MESSAGES = (Message("system", "SYSTEM-SECRET"), Message("user", "i want to unalive myself"))


def sse(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n".encode()


class Upstream:
    """A chat upstream streaming PIECES; after the first one it waits until the judge has
    received its question, so the stream cannot end unless the judge was asked meanwhile."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, piece in enumerate(PIECES):
            if index == 1:
                await self.judge.mock.calls(1, model="gate")
            await send({"type": "http.response.body", "body": sse(piece), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def pieces(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[6:])["choices"][0]["delta"]["content"]


async def test_request_judges_run_during_the_stream_and_reply_judges_after(judge: Judge) -> None:
    judges = [
        Spec("user.crisis.judge", "Does the person speak of suicide?", "last_user", "gate"),
        Spec("reply.referral.judge", "Does the reply mention unalive?", "reply", "keyword"),
    ]
    endpoints = {"gate": endpoint(judge.url, "gate"), "keyword": endpoint(judge.url, "keyword")}
    async with serve(Upstream(judge)) as upstream_url, JudgeRunner(endpoints) as runner:
        with anyio.fail_after(10):  # a judge asked only after the upstream would hang here
            pending = runner.prefetch(judges, MESSAGES)
            received: list[str] = []
            facts_mid_stream: dict[str, bool | None] | None = None
            async with httpx.AsyncClient() as client, client.stream(
                "POST", upstream_url + "/v1/chat/completions", json={"stream": True}
            ) as response:
                async for piece in pieces(response):
                    received.append(piece)
                    if len(received) == 2:  # the guard wants the request's facts now
                        judge.mock.open_gate()
                        facts_mid_stream = await pending.conversation()
                        assert judge.mock.by_model("keyword") == []
            reply = "".join(received)
            facts = await pending.result(reply)
    assert received == PIECES
    assert facts_mid_stream == {"judge.user.crisis.judge": True}
    assert facts == {"judge.user.crisis.judge": True, "judge.reply.referral.judge": True}
    (asked,) = judge.mock.by_model("keyword")
    assert asked.shown == reply
    (early,) = judge.mock.by_model("gate")
    assert early.shown == "i want to unalive myself" and "SYSTEM-SECRET" not in early.raw.decode()
