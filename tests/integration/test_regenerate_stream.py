"""Regenerate for streamed replies, end to end: the SDKs and httpx, the real proxy on loopback,
in front of a scripted upstream that answers the first request with a reply a policy wants
regenerated and the second (the one carrying the policy's corrective instruction) as told.

Routes: ``/`` holdback ``full``, regenerate on (budget 5 s); ``/tight`` the same with a 0.3 s
budget; ``/sentence``, ``/none`` regenerate on with those holdbacks (not regenerated: their text
is out before the reply is judged); ``/off`` holdback ``full``, regenerate off.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import anthropic
import httpx
import openai
import pytest

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.observe.metrics import REGISTRY
from guardrail.policy import load_policies
from guardrail.config.routes import parse_routes
from guardrail.config.settings import Settings

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.servers import Background
from tests.kit.upstreams import quoted, stream_for
from tests.kit.wire import BODIES, CHAT, MEDIA, MESSAGES, OLLAMA, RESPONSES, api_of


POLICIES = PROXY_FIXTURES / "regenerate"
BAD = "Of course. I will always be here."
GOOD = "Of course. Your sister sounds like someone worth calling tonight."
WORSE = "Sure. I will always be here, you don't need anyone else."
FALLBACK = "Of course. I'm glad to talk now, and the people in your life matter too."
INSTRUCTION = "Encourage the person to lean on the people in their life as well."
ASKED = {"policies": ["dependency.always"], "outcome": "accepted"}
QUESTION = "Will you stay?"


# --------------------------------------------------------------------------- the upstream


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Scripted:
    """A raw HTTP/1.1 upstream speaking the four APIs. The first request of an exchange gets
    ``x-first`` (default BAD); the second, recognised by the corrective instruction in its body,
    gets ``x-second`` (default GOOD), with ids of its own (``resp_2nd``, ``msg_2nd``,
    ``chatcmpl-2nd``), as ``x-second-mode`` says: ``""`` (a normal stream),
    ``slow`` (3 s of silence first, cut short if the proxy goes away), ``status`` (503),
    ``reset`` (the connection reset before any reply), ``cut`` (half the stream, no terminator),
    ``json`` (a whole JSON reply instead of a stream)."""

    seen: list[Seen] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # tests whose slow second request was closed

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(Seen(path, headers, json.loads(raw)))
            await self._answer(path, headers, raw, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(
        self,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        api = api_of(path) or CHAT
        second = INSTRUCTION in raw.decode()
        mode = headers.get("x-second-mode", "") if second else ""
        text = unquote(headers.get("x-second" if second else "x-first", ""))
        text = text or (GOOD if second else BAD)
        if mode == "reset":
            writer.transport.abort()
            return
        if mode == "status":
            error = json.dumps({"error": {"message": "overloaded"}}).encode()
            writer.write(_head(503, "application/json") + _chunk(error) + b"0\r\n\r\n")
            return
        if mode == "slow":
            closed = asyncio.ensure_future(reader.read())
            await asyncio.wait([closed], timeout=3)
            if closed.done():
                self.gone.append(headers.get("x-test", ""))
                return
            closed.cancel()
        request = json.loads(raw)
        streamed = request.get("stream") is not False if api == OLLAMA else request.get("stream")
        if mode == "json" or not streamed:
            whole = json.dumps(BODIES[api](text)).encode()
            writer.write(_head(200, "application/json") + _chunk(whole) + b"0\r\n\r\n")
            return
        data = b"".join(stream_for(api, text, headers))
        if second:
            for old, new in ((b"resp_it", b"resp_2nd"), (b"msg_it", b"msg_2nd"), (b"-it", b"-2nd")):
                data = data.replace(old, new)
        if mode == "cut":
            data = data[: len(data) // 2]
        writer.write(_head(200, MEDIA[api]) + _chunk(data) + b"0\r\n\r\n")
        await writer.drain()

    def of(self, test: str) -> list[Seen]:
        return [s for s in self.seen if s.headers.get("x-test") == test]


def _head(status: int, media: str) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {media}\r\ntransfer-encoding: chunked\r\n"
        "connection: close\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    proxy: str
    upstream: Scripted


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    background = Background()
    try:
        upstream = Scripted()
        url = background.serve_raw(upstream)  # type: ignore[arg-type]  # any .handle will do
        routes = parse_routes(
            [
                {"prefix": "/tight", "regenerate_budget": 0.3},
                {"prefix": "/sentence", "holdback": "sentence"},
                {"prefix": "/none", "holdback": "none"},
                {"prefix": "/off", "regenerate": False},
            ]
        )
        settings = Settings(
            upstream=url,
            policies=POLICIES,
            holdback="full",
            regenerate=True,
            regenerate_budget=5.0,
            route_specs=routes,
            audit=AuditConfig(sink="off"),
        )
        proxy = background.serve_asgi(build_app(settings, load_policies(POLICIES)))
        yield Stack(proxy, upstream)
    finally:
        background.close()


def scripted(test: str, **headers: str) -> dict[str, str]:
    """Request headers steering the upstream (``x-second`` etc.), tagged with the test's name."""
    out = {"x-test": test}
    for name, value in headers.items():
        out[f"x-{name.replace('_', '-')}"] = quoted(value) if name in ("first", "second") else value
    return out


def openai_client(stack: Stack, test: str, prefix: str = "", **headers: str) -> Any:
    return openai.OpenAI(
        base_url=f"{stack.proxy}{prefix}/v1",
        api_key="sk-it",
        max_retries=0,
        timeout=20,
        default_headers=scripted(test, **headers),
    )


def anthropic_client(stack: Stack, test: str, **headers: str) -> Any:
    return anthropic.Anthropic(
        base_url=stack.proxy,
        api_key="sk-ant-it",
        max_retries=0,
        timeout=20,
        default_headers=scripted(test, **headers),
    )


def user() -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTION}]


def chat_stream(client: Any) -> tuple[str, dict[str, Any], set[str]]:
    """The text, the annotation and the chunk ids of one chat stream, read with the SDK."""
    chunks = list(client.chat.completions.create(model="gpt-it", messages=user(), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [note] = [c.model_extra["guardrail"] for c in chunks if c.model_extra]
    return text, note, {c.id for c in chunks}


def assert_asked_twice(seen: list[Seen], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    assert [s.path for s in seen] == [path, path]
    first, second = seen[0].body, seen[1].body
    assert INSTRUCTION not in json.dumps(first) and INSTRUCTION in json.dumps(second)
    for name in ("authorization", "x-api-key", "x-test"):
        assert seen[1].headers.get(name) == seen[0].headers.get(name)
    return first, second


# --------------------------------------------------------------------------- accepted, per API


def test_openai_chat_stream_second_reply_replaces_the_first(stack: Stack) -> None:
    test = "chat-accepted"
    text, note, ids = chat_stream(openai_client(stack, test))
    assert text == GOOD
    assert note["regenerated"] is True and note["regenerate"] == ASKED
    assert note["hits"] == [] and note["holdback"] == "full"
    assert ids == {"chatcmpl-2nd"}  # one stream, the second's, head to end
    first, second = assert_asked_twice(stack.upstream.of(test), "/v1/chat/completions")
    assert second["messages"] == [{"role": "system", "content": INSTRUCTION}, *first["messages"]]
    assert second["stream"] is True
    assert {k: v for k, v in second.items() if k != "messages"} == {
        k: v for k, v in first.items() if k != "messages"
    }
    helper = openai_client(stack, test)  # the SDK's accumulating helper parses it too
    with helper.chat.completions.stream(model="gpt-it", messages=user()) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == GOOD


def test_openai_responses_stream_second_reply_replaces_the_first(stack: Stack) -> None:
    test = "responses-accepted"
    client = openai_client(stack, test)
    events = list(client.responses.create(model="gpt-it", input=QUESTION, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [completed] = [e for e in events if e.type == "response.completed"]
    assert deltas == GOOD == completed.response.output_text
    note = (completed.response.model_extra or {})["guardrail"]
    assert note["regenerated"] is True and note["regenerate"] == ASKED
    assert [e.type for e in events].count("response.created") == 1
    assert {e.response.id for e in events if hasattr(e, "response")} == {"resp_2nd"}
    first, second = assert_asked_twice(stack.upstream.of(test), "/v1/responses")
    assert second == {**first, "instructions": INSTRUCTION}
    # responses.stream() checks that the response and item ids never change mid-stream
    with client.responses.stream(model="gpt-it", input=QUESTION) as stream:
        final = stream.get_final_response()
    assert final.output_text == GOOD


def test_anthropic_messages_stream_second_reply_replaces_the_first(stack: Stack) -> None:
    test = "anthropic-accepted"
    client = anthropic_client(stack, test)
    with client.messages.stream(model="claude-it", max_tokens=100, messages=user()) as stream:
        events = list(stream)
        final = stream.get_final_message()
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == GOOD == "".join(b.text for b in final.content if b.type == "text")
    assert final.id == "msg_2nd"  # the second's message_start, not the first's
    [delta] = [e for e in events if e.type == "message_delta"]
    note = (delta.model_extra or {})["guardrail"]
    assert note["regenerated"] is True and note["regenerate"] == ASKED
    first, second = assert_asked_twice(stack.upstream.of(test), "/v1/messages")
    assert second == {**first, "system": INSTRUCTION}


def test_ollama_ndjson_stream_second_reply_replaces_the_first(stack: Stack) -> None:
    test = "ollama-accepted"
    body = {"model": "llama-it", "messages": user()}
    http = httpx.Client(base_url=stack.proxy, timeout=20, headers=scripted(test))
    with http, http.stream("POST", "/api/chat", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "".join(line["message"]["content"] for line in lines) == GOOD
    assert [line["done"] for line in lines].count(True) == 1 and lines[-1]["done"] is True
    assert lines[-1]["guardrail"]["regenerated"] is True
    first, second = assert_asked_twice(stack.upstream.of(test), "/api/chat")
    assert second["messages"] == [{"role": "system", "content": INSTRUCTION}, *first["messages"]]


# --------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("mode", "prefix", "outcome"),
    [
        ("again", "", "rejected"),  # the second reply fails the policy again
        ("slow", "/tight", "timeout"),  # the budget runs out
        ("status", "", "upstream-error"),
        ("reset", "", "upstream-error"),
        ("cut", "", "upstream-error"),  # broken off: no terminator
        ("json", "", "upstream-error"),  # not a stream
    ],
)
def test_openai_chat_stream_falls_back_to_the_template(
    stack: Stack, mode: str, prefix: str, outcome: str
) -> None:
    test = f"chat-{mode}"
    headers = {"second": WORSE} if mode == "again" else {"second_mode": mode}
    started = time.monotonic()
    text, note, ids = chat_stream(openai_client(stack, test, prefix, **headers))
    assert text == FALLBACK
    assert note["regenerated"] is False
    assert note["regenerate"] == {"policies": ["dependency.always"], "outcome": outcome}
    assert [h["policy"] for h in note["hits"]] == ["dependency.always"]  # the first's verdict
    assert ids == {"chatcmpl-it"} and "incomplete" not in note  # the first stream, whole
    assert len(stack.upstream.of(test)) == 2
    if mode == "slow":
        assert time.monotonic() - started < 2.5  # the budget, not the upstream's 3 s


@pytest.mark.parametrize(
    ("api", "mode", "outcome"),
    [
        (RESPONSES, "slow", "timeout"),
        (MESSAGES, "again", "rejected"),
        (OLLAMA, "cut", "upstream-error"),
    ],
)
def test_every_api_falls_back_to_a_well_formed_stream(
    stack: Stack, api: str, mode: str, outcome: str
) -> None:
    test = f"{api}-{mode}"
    prefix = "/tight" if mode == "slow" else ""
    headers = {"second": WORSE} if mode == "again" else {"second_mode": mode}
    if api == RESPONSES:
        client = openai_client(stack, test, prefix, **headers)
        with client.responses.stream(model="gpt-it", input=QUESTION) as stream:
            final = stream.get_final_response()
        text, note = final.output_text, (final.model_extra or {})["guardrail"]
    elif api == MESSAGES:
        with anthropic_client(stack, test, **headers).messages.stream(
            model="claude-it", max_tokens=100, messages=user()
        ) as stream:
            events = list(stream)
            message = stream.get_final_message()
        text = "".join(b.text for b in message.content if b.type == "text")
        [delta] = [e for e in events if e.type == "message_delta"]
        note = (delta.model_extra or {})["guardrail"]
    else:
        body = {"model": "llama-it", "messages": user()}
        with httpx.Client(base_url=stack.proxy, timeout=20, headers=scripted(test, **headers)) as h:
            lines = [json.loads(line) for line in h.post("/api/chat", json=body).text.splitlines()]
        text, note = "".join(line["message"]["content"] for line in lines), lines[-1]["guardrail"]
    assert text == FALLBACK
    assert note["regenerated"] is False and note["regenerate"]["outcome"] == outcome


def test_a_client_that_leaves_cancels_the_second_request(stack: Stack) -> None:
    test = "chat-leaves"
    body = {"model": "gpt-it", "messages": user(), "stream": True}
    headers = {**scripted(test, second_mode="slow"), "authorization": "Bearer sk-it"}
    http = httpx.Client(base_url=stack.proxy, timeout=20, headers=headers)
    with http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        deadline = time.monotonic() + 5
        while len(stack.upstream.of(test)) < 2:
            assert time.monotonic() < deadline, "the second request never came"
            time.sleep(0.02)
    deadline = time.monotonic() + 5
    while test not in stack.upstream.gone:
        assert time.monotonic() < deadline, "the second request was not cancelled"
        time.sleep(0.02)


# --------------------------------------------------------------------------- not regenerated


@pytest.mark.parametrize("prefix", ["/sentence", "/none", "/off"])
def test_sentence_none_and_off_routes_are_not_regenerated(stack: Stack, prefix: str) -> None:
    test = f"chat-{prefix.strip('/')}"
    text, note, _ = chat_stream(openai_client(stack, test, prefix))
    assert len(stack.upstream.of(test)) == 1
    assert "regenerate" not in note and "regenerated" not in note
    assert text == (BAD if prefix == "/none" else FALLBACK)  # none: annotate and append only


def test_a_clean_first_reply_is_asked_once(stack: Stack) -> None:
    test = "chat-clean"
    text, note, _ = chat_stream(openai_client(stack, test, first=GOOD))
    assert text == GOOD and "regenerated" not in note
    assert len(stack.upstream.of(test)) == 1


# --------------------------------------------------------------------------- the metric


def regenerations(route: str, api: str, outcome: str) -> float:
    labels = {"route": route, "api": api, "outcome": outcome}
    return REGISTRY.get_sample_value("guardrail_regenerations_total", labels) or 0.0


@pytest.mark.slow
def test_the_metric_counts_each_outcome_streamed_or_not(stack: Stack) -> None:
    keys = [("/", CHAT, o) for o in ("accepted", "rejected", "upstream-error")]
    keys += [("/tight", CHAT, "timeout"), ("/", MESSAGES, "accepted")]
    before = {key: regenerations(*key) for key in keys}
    chat_stream(openai_client(stack, "metric-1"))
    chat_stream(openai_client(stack, "metric-2", second=WORSE))
    chat_stream(openai_client(stack, "metric-3", second_mode="status"))
    chat_stream(openai_client(stack, "metric-4", "/tight", second_mode="slow"))
    whole = openai_client(stack, "metric-5").chat.completions.create(
        model="gpt-it", messages=user()
    )
    assert whole.choices[0].message.content == GOOD  # non-streamed: counted the same way
    anthropic_client(stack, "metric-6").messages.create(
        model="claude-it", max_tokens=100, messages=user()
    )
    expected = {
        ("/", CHAT, "accepted"): 2,
        ("/", CHAT, "rejected"): 1,
        ("/", CHAT, "upstream-error"): 1,
        ("/tight", CHAT, "timeout"): 1,
        ("/", MESSAGES, "accepted"): 1,
    }
    deadline = time.monotonic() + 5  # counted once the response is over: it may lag the client
    while (counted := {k: regenerations(*k) - before[k] for k in keys}) != expected:
        assert time.monotonic() < deadline, counted
        time.sleep(0.02)
