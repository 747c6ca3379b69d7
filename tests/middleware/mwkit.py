"""Shared by the middleware tests: the case, a guarded app, request bodies, metric samples."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette

from guardrail import GuardrailMiddleware, check
from guardrail.observe.metrics import REGISTRY

from tests.kit.policysets import PACK
from tests.kit.upstreams import Answer, chat_app
from tests.kit.wire import SSE, pieces, request_body, stream_events, whole_reply


USER = [{"role": "user", "content": "I've had panic attacks all week and I feel so alone."}]
REPLY = (
    "That sounds exhausting. Slow breathing can help in the moment. "
    "I will always be here for you, no matter what."
)
EXPECTED = check(PACK, USER, REPLY)


def guarded(answer: Any, route: str, **options: Any) -> Starlette:
    app = chat_app(answer)
    app.add_middleware(GuardrailMiddleware, policies=PACK, route=route, audit="off", **options)
    return app


def whole(api: str, text: str = REPLY) -> Any:
    return lambda request, body: Answer(whole_reply(api, text))


def streamed(api: str, text: str = REPLY) -> Any:
    return lambda request, body: Answer(stream_events(api, pieces(text, 9)), media_type=SSE)


def post_body(api: str = "openai.chat", *, stream: bool = False) -> bytes:
    return json.dumps(request_body(api, USER, stream=stream)).encode()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
