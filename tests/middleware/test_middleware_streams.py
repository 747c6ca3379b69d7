"""GuardrailMiddleware on streamed replies: guarded as they arrive, never buffered whole."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from guardrail import GuardrailMiddleware, Holdback

from tests.kit.clients import asgi_post
from tests.kit.policysets import PACK
from tests.kit.upstreams import Answer
from tests.kit.wire import SSE, SSE_PATHS, pieces, read_stream, stream_events

from .mwkit import EXPECTED, REPLY, guarded, post_body, sample, streamed


@pytest.mark.anyio
@pytest.mark.parametrize("api", list(SSE_PATHS))
@pytest.mark.parametrize("holdback", ["sentence", "full"])
async def test_a_streamed_reply_is_guarded_on_the_fly(api: str, holdback: Holdback) -> None:
    route = f"/t-stream-{holdback}"
    app = guarded(streamed(api), route=route, holdback=holdback)
    sent = await asgi_post(app, SSE_PATHS[api], post_body(api, stream=True))
    text, note = read_stream(api, sent.body)
    assert text == EXPECTED.reply
    assert note is not None and note["holdback"] == holdback
    assert [h["policy"] for h in note["hits"]] == [h.policy for h in EXPECTED.hits]
    assert "content-length" not in sent.headers
    assert sent.headers["x-guardrail-holdback"] == holdback
    assert sample("guardrail_replies_rewritten_total", route=route, api=api) >= 1


@pytest.mark.anyio
@pytest.mark.parametrize("holdback", ["sentence", "none"])
async def test_a_stream_stays_a_stream(holdback: Holdback) -> None:
    """The first sentence reaches the client while the app is still producing the rest."""
    first_out = anyio.Event()
    events = stream_events("openai.chat", ["That sounds exhausting. ", "Slow breathing can help. ", "Rest."])

    async def chat(request: Request) -> Response:
        await request.body()

        async def gen() -> Any:
            yield events[0]
            yield events[1]
            yield events[2]  # completes the first sentence: released now
            with anyio.fail_after(5):
                await first_out.wait()  # the client already holds it
            for event in events[3:]:
                yield event

        return StreamingResponse(gen(), media_type=SSE)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.add_middleware(GuardrailMiddleware, policies=PACK, route="/t-live", holdback=holdback,
                       audit="off")  # fmt: skip
    seen: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            seen.append(message.get("body", b""))
            if b"That sounds exhausting." in b"".join(seen):
                first_out.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "headers": [], "query_string": b""}  # fmt: skip
    body = post_body(stream=True)
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:

            async def run() -> None:
                await app(scope, receive, send)
                group.cancel_scope.cancel()

            group.start_soon(run)
    assert first_out.is_set()
    assert len([b for b in seen if b]) > 1
    assert read_stream("openai.chat", b"".join(seen))[0].startswith("That sounds exhausting.")


@pytest.mark.anyio
async def test_a_stream_the_app_breaks_off_is_still_recorded() -> None:
    events = stream_events("openai.chat", ["That sounds exhausting. ", "I will always be here"])

    async def chat(request: Request) -> Response:
        await request.body()

        async def gen() -> Any:
            yield events[0]
            yield events[1]
            raise RuntimeError("the model connection broke")

        return StreamingResponse(gen(), media_type=SSE)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.add_middleware(GuardrailMiddleware, policies=PACK, route="/t-broken", audit="off")
    before = sample("guardrail_replies_inspected_total", route="/t-broken", api="openai.chat")
    with pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
        await asgi_post(app, SSE_PATHS["openai.chat"], post_body(stream=True))
    after = sample("guardrail_replies_inspected_total", route="/t-broken", api="openai.chat")
    assert after == before + 1
    assert (
        sample("guardrail_requests_total", route="/t-broken", api="openai.chat", outcome="error")
        >= 1
    )


@pytest.mark.anyio
async def test_a_stream_labelled_text_plain_is_guarded_when_one_was_asked_for() -> None:
    """Like the proxy: some servers label their event streams ``text/plain``."""
    events = stream_events("openai.chat", pieces(REPLY, 9))
    app = guarded(lambda request, body: Answer(events, media_type="text/plain"), "/t-plain")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body(stream=True))
    assert read_stream("openai.chat", sent.body)[0] == EXPECTED.reply
    assert sent.headers["x-guardrail-holdback"] == "sentence"
