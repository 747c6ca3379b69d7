"""POST /v1/chat/completions, non-streamed: evaluated, rewritten, annotated (through HTTP)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from guardrail import __version__
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.config.settings import Settings

from tests.kit.proxyapp import Proxy, Upstream, open_proxy, reply
from tests.kit.wire import chat_request, completion

pytestmark = pytest.mark.anyio


async def post(proxy: Proxy, body: Any, **kwargs: Any) -> httpx.Response:
    return await proxy.client.post("/v1/chat/completions", json=body, **kwargs)


async def test_reply_is_rewritten_and_annotated(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body=completion("Sure. I will always be here. Bye."))
    response = await post(proxy, chat_request("Will you stay?"))
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == (
        "Sure. I'm glad to talk now, and the people in your life matter too. Bye."
    )
    assert body["guardrail"] == {
        "version": __version__,
        "inspected": True,
        "locale": "en-US",
        "action": "replace",
        "changed": True,
        "blocked": False,
        "hits": [
            {
                "policy": "dependency.always",
                "category": "dependency",
                "severity": "high",
                "action": "replace",
                "mode": "enforce",
                "choice": 0,
            }
        ],
        "signals": body["guardrail"]["signals"],
    }
    assert body["guardrail"]["signals"]["reply.always"] is True
    assert response.headers["x-guardrail-inspected"] == "true"
    assert response.headers["x-guardrail-policies"] == "dependency.always"
    assert response.headers["x-guardrail-action"] == "replace"
    assert "x-guardrail-reason" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    # every other field of the completion is kept
    expected = completion("x")
    for key in ("id", "object", "created", "model", "usage"):
        assert body[key] == expected[key]
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_clean_reply_is_annotated_without_hits(proxy: Proxy) -> None:
    response = await post(proxy, chat_request("Hi"))
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello."
    assert body["guardrail"]["hits"] == [] and body["guardrail"]["action"] == "none"
    assert response.headers["x-guardrail-inspected"] == "true"
    assert response.headers["x-guardrail-action"] == "none"
    assert "x-guardrail-policies" not in response.headers


async def test_conversation_is_the_context(proxy: Proxy) -> None:
    """Context detectors read the request's messages, not the reply."""
    proxy.upstream.handler = lambda r: reply(body=completion("Take a walk."))
    response = await post(proxy, chat_request("I want to end it all"))
    content = response.json()["choices"][0]["message"]["content"]
    assert content == "Please reach out now: call or text 988 (988 Lifeline).\n\nTake a walk."
    assert response.headers["x-guardrail-action"] == "prepend"


async def test_locale_header_selects_resources(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body=completion("Take a walk."))
    response = await post(
        proxy, chat_request("I want to end it all"), headers={"x-guardrail-locale": "en-GB"}
    )
    assert response.json()["choices"][0]["message"]["content"].startswith(
        "Please reach out now: call 116 123"
    )
    assert response.json()["guardrail"]["locale"] == "en-GB"
    assert "x-guardrail-locale" not in proxy.upstream.last.headers  # addressed to the proxy only


async def test_locale_default_comes_from_settings(fixture_policies: PolicySet) -> None:
    upstream = Upstream(lambda r: reply(body=completion("Take a walk.")))
    settings = Settings(upstream="https://upstream.test", locale="en-GB")
    async with open_proxy(settings, fixture_policies, upstream) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_request("I want to end it all")
        )
    assert "116 123" in response.json()["choices"][0]["message"]["content"]


async def test_every_choice_is_evaluated(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(
        body=completion("Fine.", "I will always be here.", None)
    )
    body = (await post(proxy, chat_request("Hi", n=3))).json()
    contents = [c["message"]["content"] for c in body["choices"]]
    assert contents == [
        "Fine.",
        "I'm glad to talk now, and the people in your life matter too.",
        None,
    ]
    assert [(h["policy"], h["choice"]) for h in body["guardrail"]["hits"]] == [
        ("dependency.always", 1)
    ]


async def test_block_and_shadow(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body=completion("blockme please"))
    response = await post(proxy, chat_request("Hi"))
    assert response.json()["choices"][0]["message"]["content"] == "This reply was withheld."
    assert response.json()["guardrail"]["blocked"] is True
    assert response.headers["x-guardrail-action"] == "block"

    proxy.upstream.handler = lambda r: reply(body=completion("A shadow word here."))
    response = await post(proxy, chat_request("Hi"))
    body = response.json()
    assert (
        body["choices"][0]["message"]["content"] == "A shadow word here."
    )  # shadow changes nothing
    assert body["guardrail"]["hits"][0]["mode"] == "shadow"
    assert response.headers["x-guardrail-policies"] == "validation.shadow"
    assert response.headers["x-guardrail-action"] == "none"


async def test_request_goes_upstream_unchanged_except_encoding(proxy: Proxy) -> None:
    raw = json.dumps(chat_request("Hi", temperature=0.2)).encode()
    await proxy.client.post(
        "/v1/chat/completions?api-version=1",
        content=raw,
        headers={
            "authorization": "Bearer sk-secret",
            "content-type": "application/json",
            "accept-encoding": "br",
        },
    )
    sent = proxy.upstream.last
    assert proxy.upstream.bodies[-1] == raw
    assert str(sent.url) == "https://upstream.test/v1/chat/completions?api-version=1"
    assert sent.headers["authorization"] == "Bearer sk-secret"
    assert sent.headers["accept-encoding"] == "identity"  # so no coding can dodge inspection


async def test_compressed_reply_is_decoded_and_encoding_dropped(proxy: Proxy) -> None:
    data = gzip.compress(json.dumps(completion("I will always be here.")).encode())
    proxy.upstream.handler = lambda r: reply(
        raw=data,
        headers={"content-encoding": "gzip", "content-type": "application/json", "etag": '"abc"'},
    )
    response = await post(proxy, chat_request("Hi"))
    assert "content-encoding" not in response.headers and "etag" not in response.headers
    assert response.json()["guardrail"]["inspected"] is True
    assert int(response.headers["content-length"]) == len(response.content)


async def test_upstream_cannot_forge_annotations(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(
        body=completion("I will always be here."),
        headers={"x-guardrail-inspected": "forged", "x-guardrail-policies": "forged"},
    )
    response = await post(proxy, chat_request("Hi"))
    assert response.headers.get_list("x-guardrail-inspected") == ["true"]
    assert response.headers.get_list("x-guardrail-policies") == ["dependency.always"]


async def test_an_unchanged_reply_keeps_the_upstream_bytes_plus_the_annotation(
    proxy: Proxy,
) -> None:
    raw = json.dumps(completion("The café opens at nine."), indent=2).encode() + b"\n"
    proxy.upstream.handler = lambda r: reply(raw=raw, headers={"content-type": "application/json"})
    response = await post(proxy, chat_request("When does it open?"))
    assert response.content.startswith(raw.strip()[:-1])  # the upstream's spacing and escapes
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "The café opens at nine."
    assert body["guardrail"]["inspected"] is True and body["guardrail"]["hits"] == []
    assert int(response.headers["content-length"]) == len(response.content)


async def test_an_upstream_guardrail_member_is_replaced_not_kept(proxy: Proxy) -> None:
    forged = {**completion("The café opens at nine."), "guardrail": {"hits": ["forged"]}}
    proxy.upstream.handler = lambda r: reply(body=forged)
    response = await post(proxy, chat_request("When does it open?"))
    assert response.content.count(b'"guardrail"') == 1
    assert response.json()["guardrail"]["hits"] == []


async def test_policy_swap_applies_to_new_requests(proxy: Proxy, tmp_path: Any) -> None:
    holder = proxy.app.state.policies
    proxy.upstream.handler = lambda r: reply(body=completion("I will always be here."))

    class Nothing:
        digest = "empty"

        def evaluate(self, conv: Conversation, reply: str, *, locale: str | None = None) -> Verdict:
            return Verdict(reply, (), {}, False, False, "none", locale or "en-US")

    previous = holder.swap(Nothing())
    body = (await post(proxy, chat_request("Hi"))).json()
    assert body["guardrail"]["hits"] == []
    holder.swap(previous)
    assert (await post(proxy, chat_request("Hi"))).json()["guardrail"]["hits"]


# ------------------------------------------------------------------ not inspected


async def test_stream_request_is_guarded_and_forwarded_as_sent(proxy: Proxy) -> None:
    sse = (
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"I will always"}}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" be here. Bye."}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    proxy.upstream.handler = lambda r: reply(
        raw=sse, headers={"content-type": "text/event-stream", "content-length": str(len(sse))}
    )
    sent = json.dumps(chat_request("Hi", stream=True)).encode()
    response = await proxy.client.post("/v1/chat/completions", content=sent)
    assert response.headers["x-guardrail-inspected"] == "true"
    assert response.headers["x-guardrail-holdback"] == "sentence"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers  # it described the upstream's bytes
    assert b"will always" not in response.content and b"glad to talk now" in response.content
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert proxy.upstream.bodies[-1] == sent
    assert proxy.upstream.last.headers["accept-encoding"] == "identity"


async def test_a_compressed_stream_is_decoded_and_guarded(proxy: Proxy) -> None:
    """An upstream that compresses anyway (identity was asked for): decoded, guarded, sent
    without its Content-Encoding."""
    chunk = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
    sse = (chunk % "I will always be here. " + chunk % "Bye." + "data: [DONE]\n\n").encode()
    proxy.upstream.handler = lambda r: reply(
        raw=gzip.compress(sse),
        headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
    )
    response = await post(proxy, chat_request("Hi", stream=True))
    assert "content-encoding" not in response.headers
    assert b"glad to talk now" in response.content and b"will always" not in response.content
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_event_stream_reply_is_guarded_whatever_the_stream_flag(proxy: Proxy) -> None:
    """A reply that turns out to be SSE (a non-boolean stream flag, say) is guarded as a stream,
    never buffered whole: an unknown event passes untouched, and a clean end is added."""
    proxy.upstream.handler = lambda r: reply(
        raw=b"data: {}\n\n", headers={"content-type": "text/event-stream"}
    )
    response = await post(proxy, chat_request("Hi", stream="yes"))
    assert response.headers["x-guardrail-inspected"] == "true"
    assert response.content.startswith(b"data: {}\n\n")
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert b'"incomplete":"upstream-unterminated"' in response.content


async def test_stream_of_another_media_type_passes_through(proxy: Proxy) -> None:
    ndjson = b'{"message": {"content": "I will always be here."}}\n'
    proxy.upstream.handler = lambda r: reply(
        raw=ndjson, headers={"content-type": "application/x-ndjson"}
    )
    response = await post(proxy, chat_request("Hi", stream=True))
    assert response.headers["x-guardrail-reason"] == "stream"
    assert response.content == ndjson


@pytest.mark.parametrize(
    ("raw", "headers", "reason"),
    [
        (b"<html>oops</html>", {"content-type": "text/html"}, "not-json"),
        (b'{"object": "list", "data": []}', {"content-type": "application/json"}, "unparseable"),
        (
            b'{"choices": [{"message": "nope"}]}',
            {"content-type": "application/json"},
            "unparseable",
        ),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, "not-json"),
        (b"{}", {"content-encoding": "br"}, "not-json"),
    ],
)
async def test_uninspectable_replies_pass_through_unchanged(
    proxy: Proxy, raw: bytes, headers: dict[str, str], reason: str
) -> None:
    proxy.upstream.handler = lambda r: reply(raw=raw, headers=headers)
    request = proxy.client.build_request("POST", "/v1/chat/completions", json=chat_request("Hi"))
    response = await proxy.client.send(request, stream=True)
    received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200
    assert response.headers["x-guardrail-inspected"] == "false"
    assert response.headers["x-guardrail-reason"] == reason
    assert received == raw
    assert response.headers.get("content-encoding") == headers.get("content-encoding")


async def test_too_large_reply_passes_through(fixture_policies: PolicySet) -> None:
    big = json.dumps(completion("I will always be here. " + "x" * 5000)).encode()
    upstream = Upstream(lambda r: reply(raw=big))
    settings = Settings(upstream="https://upstream.test", max_inspect_bytes=1000)
    async with open_proxy(settings, fixture_policies, upstream) as client:
        response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
        assert response.content == big
        assert response.headers["x-guardrail-reason"] == "too-large"
        # declared too large up front: not read at all
        upstream.handler = lambda r: reply(raw=big, headers={"content-length": str(len(big))})
        response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
        assert response.content == big and response.headers["x-guardrail-reason"] == "too-large"
        # a small body that inflates past the cap
        bomb = gzip.compress(big)
        upstream.handler = lambda r: reply(raw=bomb, headers={"content-encoding": "gzip"})
        response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
        assert response.headers["x-guardrail-reason"] == "too-large"
        assert response.headers["content-encoding"] == "gzip" and response.json() == json.loads(big)


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
async def test_upstream_error_status_passes_through(proxy: Proxy, status: int) -> None:
    error = {"error": {"message": "nope", "type": "invalid_request_error", "code": "x"}}
    proxy.upstream.handler = lambda r: reply(status, error, headers={"retry-after": "3"})
    response = await post(proxy, chat_request("Hi"))
    assert response.status_code == status
    assert response.json() == error
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-guardrail-reason"] == "upstream-error"


@pytest.mark.parametrize("raw", [b"{not json", b'{"messages": "x"}', b"[1,2]", b"\xff\xfe"])
async def test_malformed_request_is_forwarded_unchanged(proxy: Proxy, raw: bytes) -> None:
    proxy.upstream.handler = lambda r: reply(
        400, {"error": {"message": "bad", "type": "x", "code": None}}
    )
    response = await proxy.client.post("/v1/chat/completions", content=raw)
    assert proxy.upstream.bodies[-1] == raw
    assert response.status_code == 400
    assert response.headers["x-guardrail-inspected"] == "false"


async def test_malformed_request_with_ok_reply_is_marked_unparseable(proxy: Proxy) -> None:
    response = await proxy.client.post("/v1/chat/completions", content=b"{oops")
    assert response.headers["x-guardrail-reason"] == "unparseable"
    assert response.json() == completion("Hello.")


class Exploding:
    digest = "boom"

    def evaluate(self, conv: Conversation, reply: str, *, locale: str | None = None) -> Verdict:
        raise RuntimeError("engine bug " + reply)


async def test_engine_exception_fails_open(upstream: Upstream, settings: Settings) -> None:
    upstream.handler = lambda r: reply(body=completion("I will always be here."))
    async with open_proxy(settings, Exploding(), upstream) as client:
        response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
    assert response.status_code == 200
    body = response.json()
    assert body["choices"] == completion("I will always be here.")["choices"]
    assert body["guardrail"] == {
        "version": __version__,
        "inspected": False,
        "reason": "engine-error",
        "locale": "en-US",
    }
    assert response.headers["x-guardrail-inspected"] == "false"
    assert response.headers["x-guardrail-reason"] == "engine-error"
    assert "Traceback" not in response.text and "engine bug" not in response.text


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/v1/chat/completions",
        b"/chat/completions",
        b"/v1/chat/completions/",
        b"/v1/Chat/Completions",
        b"/v1//chat/completions",
        b"/v1/chat/%63ompletions",
        b"/v1/chat\\completions",
        b"/v1/chat/completions;x=1",
        b"/openai/deployments/gpt/chat/completions",
    ],
)
async def test_no_spelling_of_the_endpoint_dodges_inspection(proxy: Proxy, raw_path: bytes) -> None:
    from tests.kit.clients import asgi_call

    proxy.upstream.handler = lambda r: reply(body=completion("I will always be here."))
    body = json.dumps(chat_request("Hi")).encode()
    sent = await asgi_call(proxy.app, "POST", raw_path, body=body)
    assert dict(sent.raw_headers)[b"x-guardrail-inspected"] == b"true"
    assert sent.json()["guardrail"]["hits"][0]["policy"] == "dependency.always"


async def test_compressed_request_is_read_and_forwarded_as_sent(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body=completion("Take a walk."))
    raw = gzip.compress(json.dumps(chat_request("I want to end it all")).encode())
    response = await proxy.client.post(
        "/v1/chat/completions", content=raw, headers={"content-encoding": "gzip"}
    )
    assert proxy.upstream.bodies[-1] == raw
    assert proxy.upstream.last.headers["content-encoding"] == "gzip"
    assert response.json()["guardrail"]["hits"][0]["policy"] == "referral.crisis"


async def test_no_content_reply_passes_through(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: httpx.Response(204, stream=httpx.ByteStream(b""))
    response = await post(proxy, chat_request("Hi"))
    assert response.status_code == 204 and "content-length" not in response.headers
    assert response.headers["x-guardrail-reason"] == "not-json"
