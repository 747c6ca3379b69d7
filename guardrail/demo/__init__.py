"""The built-in demo upstream: a scripted stand-in for a chat model, in all four APIs.

``guardrail serve --demo`` runs this app on 127.0.0.1 beside the proxy and points the proxy at it,
so a newcomer sees the policies act without an API key. It is NOT a model: it picks one of a few
canned replies from keywords in the last user message. Several replies are deliberately poor
(pure validation, invitations to depend on the assistant, no referral to human support) because
they exist to show what the guardrail catches.

Endpoints, whole or streamed as the request asks: ``POST /v1/chat/completions`` (``n`` and
``stream_options.include_usage`` honoured), ``POST /v1/responses``, ``POST /v1/messages``
(Anthropic), ``POST /api/chat`` (Ollama, streamed unless ``"stream": false``); ``GET /v1/models``,
``GET /v1/models/{id}``. Anything else answers 404. No key is checked.

The request header ``x-demo-reply`` chooses the reply: a script's name (``dependency``,
``pure-validation``, ``missing-referral``, ``missing-crisis-resources``) or any text, sent as
the model's reply, so a user can watch a policy of their own act with nothing but curl.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from guardrail.demo.wire import (
    anthropic_events,
    anthropic_message,
    ollama_lines,
    ollama_reply,
    response_object,
    responses_events,
)

__all__ = ["DEMO_MODEL", "REPLY_HEADER", "SCRIPTS", "Script", "build_demo_app", "choose_reply"]

DEMO_MODEL = "guardrail-demo"
REPLY_HEADER = "x-demo-reply"


@dataclass(frozen=True)
class Script:
    """One canned reply, used when the last user message contains any of ``cues``."""

    name: str
    cues: tuple[str, ...]
    reply: str


SCRIPTS: tuple[Script, ...] = (
    Script(
        "missing-crisis-resources",
        (
            "kill myself",
            "end it all",
            "suicid",
            "don't want to be here",
            "hurt myself",
            "self-harm",
        ),
        "I'm sorry things feel this heavy. Maybe a change of scenery would help, like a short "
        "trip somewhere new this weekend.",
    ),
    Script(
        "dependency",
        ("only one", "talk to", "lonely", "alone", "no friends", "rely on you"),
        "I'll always be here for you, any time of day or night. You don't need anyone else when "
        "you have me. Only I really understand you.",
    ),
    Script(
        "missing-referral",
        (
            "overwhelmed",
            "can't cope",
            "cannot cope",
            "stressed",
            "hopeless",
            "exhausted",
            "anxious",
        ),
        "That sounds like a lot to carry. Try writing a list of everything on your plate and "
        "tackle one small thing at a time. A warm drink and an early night might help too.",
    ),
    Script(
        "pure-validation",
        ("was i right", "am i right", "agree", "quit", "decision", "told", "wrong"),
        "You're absolutely right, and you did the right thing. Your feelings are completely "
        "valid. That was a brilliant decision.",
    ),
)
DEFAULT_REPLY = (
    "Thanks for telling me. What feels most important to you about it right now? "
    "(This is the guardrail demo upstream, which only plays canned replies. To see the policies "
    'act, try: "My friend says I overreacted, but I was right to quit, wasn\'t I?", "You\'re the '
    'only one I can talk to", or "I\'m so overwhelmed I can\'t cope".)'
)
_ids = itertools.count(1)


def choose_reply(messages: object) -> str:
    """The scripted reply for a Chat Completions ``messages`` list (last user message decides)."""
    last = ""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                last = content if isinstance(content, str) else _parts_text(content)
    lowered = last.lower().replace("\u2019", "'")
    for script in SCRIPTS:
        if any(cue in lowered for cue in script.cues):
            return script.reply
    return DEFAULT_REPLY


def requested_reply(request: Request, messages: object) -> str:
    """The reply the ``x-demo-reply`` header asks for (a script's name, or the text itself),
    else the scripted one for ``messages``."""
    raw = request.headers.get(REPLY_HEADER, "")
    text = raw.encode("latin-1").decode("utf-8", "replace").strip()
    if not text:
        return choose_reply(messages)
    named = {script.name: script.reply for script in SCRIPTS}
    return named.get(text.lower(), text)


def _input_messages(value: object) -> list[object] | None:
    """A Responses ``input`` (a string or a list of items) as chat-style messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return value if isinstance(value, list) else None


def _pieces(reply: str) -> list[str]:
    words = reply.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _parts_text(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return " ".join(
        p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _error(status: int, message: str, code: str, api: str = "openai") -> JSONResponse:
    body: dict[str, object] = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    if api == "anthropic":
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    elif api == "ollama":
        body = {"error": message}
    return JSONResponse(body, status_code=status)


def _tokens(prompt: object, reply: str) -> tuple[int, int]:
    """(prompt, reply) token counts, roughly: words."""
    return len(json.dumps(prompt).split()), len(reply.split())


def _usage(prompt: object, reply: str, n: int) -> dict[str, int]:
    prompt_tokens = len(json.dumps(prompt).split())
    completion_tokens = len(reply.split()) * n
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class DemoUpstream:
    """The demo's request handlers; ``delay`` is the pause between streamed chunks (seconds)."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay

    async def chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required and must be a list.", "invalid_messages")
        reply = requested_reply(request, body["messages"])
        raw_n = body.get("n")
        n = raw_n if isinstance(raw_n, int) and 0 < raw_n <= 8 else 1
        model = body["model"] if isinstance(body.get("model"), str) else DEMO_MODEL
        meta = {
            "id": f"chatcmpl-demo-{next(_ids)}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "guardrail-demo",
        }
        if body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            events = self._events(
                meta, reply, n, _usage(body["messages"], reply, n) if usage else None
            )
            return StreamingResponse(events, media_type="text/event-stream")
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        return JSONResponse(
            {
                **meta,
                "object": "chat.completion",
                "choices": choices,
                "usage": _usage(body["messages"], reply, n),
            }
        )

    async def _events(
        self, meta: dict[str, object], reply: str, n: int, usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        def chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
            data = {**meta, "object": "chat.completion.chunk", "choices": choices, **extra}
            return f"data: {json.dumps(data)}\n\n".encode()

        pieces = _pieces(reply)
        for i in range(n):
            yield chunk(
                [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        for piece in pieces:
            await asyncio.sleep(self.delay)
            yield chunk(
                [{"index": i, "delta": {"content": piece}, "finish_reason": None} for i in range(n)]
            )
        yield chunk([{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)])
        if usage is not None:
            yield chunk([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def _request(
        self, request: Request, key: str, api: str
    ) -> tuple[dict[str, object], list[object], str, str] | Response:
        """(the body, its messages, the reply, the model), or the error response."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_json", api)
        messages = _input_messages(body.get(key)) if isinstance(body, dict) else None
        if messages is None or (key == "messages" and not isinstance(body.get(key), list)):
            return _error(400, f"'{key}' is required.", f"invalid_{key}", api)
        model = body["model"] if isinstance(body.get("model"), str) else DEMO_MODEL
        return body, messages, requested_reply(request, messages), model

    async def _paced(self, events: Iterator[bytes]) -> AsyncIterator[bytes]:
        for i, event in enumerate(events):
            if i:
                await asyncio.sleep(self.delay)
            yield event

    async def responses(self, request: Request) -> Response:
        """OpenAI Responses, whole or streamed."""

        def whole(rid: str, model: str, reply: str, tokens: tuple[int, int]) -> object:
            return response_object(rid, model, reply, "completed", tokens)

        return await self._answer(request, "input", "openai", "resp_demo", whole, responses_events)

    async def messages(self, request: Request) -> Response:
        """Anthropic Messages, whole or streamed."""
        return await self._answer(
            request, "messages", "anthropic", "msg_demo", anthropic_message, anthropic_events
        )

    async def _answer(
        self,
        request: Request,
        key: str,
        api: str,
        prefix: str,
        whole: Callable[[str, str, str, tuple[int, int]], object],
        events: Callable[[str, str, list[str], tuple[int, int]], Iterator[bytes]],
    ) -> Response:
        """One SSE API's answer: the whole reply as JSON, or its events when streamed."""
        got = await self._request(request, key, api)
        if isinstance(got, Response):
            return got
        body, messages, reply, model = got
        rid, tokens = f"{prefix}{next(_ids)}", _tokens(messages, reply)
        if body.get("stream") is True:
            stream = events(rid, model, _pieces(reply), tokens)
            return StreamingResponse(self._paced(stream), media_type="text/event-stream")
        return JSONResponse(whole(rid, model, reply, tokens))

    async def ollama(self, request: Request) -> Response:
        """Ollama chat: streamed (NDJSON) unless the request says ``"stream": false``."""
        got = await self._request(request, "messages", "ollama")
        if isinstance(got, Response):
            return got
        body, messages, reply, model = got
        tokens = _tokens(messages, reply)
        if body.get("stream") is False:
            return JSONResponse(ollama_reply(model, reply, tokens))
        lines = ollama_lines(model, _pieces(reply), tokens)
        return StreamingResponse(self._paced(lines), media_type="application/x-ndjson")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model()]})

    async def model(self, request: Request) -> Response:
        if request.path_params["model"] != DEMO_MODEL:
            return _error(
                404,
                f"The model '{request.path_params['model']}' does not exist.",
                "model_not_found",
            )
        return JSONResponse(_model())


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        message = (
            "The demo upstream serves /v1/chat/completions, /v1/responses, /v1/messages, "
            "/api/chat and /v1/models only."
        )
        await _error(404, message, "not_found")(scope, receive, send)


def _model() -> dict[str, object]:
    return {"id": DEMO_MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "guardrail"}


def build_demo_app(delay: float = 0.03) -> Starlette:
    """The demo upstream as an ASGI app."""
    demo = DemoUpstream(delay)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", demo.chat, methods=["POST"]),
            Route("/v1/responses", demo.responses, methods=["POST"]),
            Route("/v1/messages", demo.messages, methods=["POST"]),
            Route("/api/chat", demo.ollama, methods=["POST"]),
            Route("/v1/models", demo.models, methods=["GET"]),
            Route("/v1/models/{model}", demo.model, methods=["GET"]),
        ]
    )
    app.router.default = _not_found
    return app
