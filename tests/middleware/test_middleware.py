"""GuardrailMiddleware on a Starlette app: what it rewrites, leaves alone and records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from guardrail import GuardrailMiddleware, PolicyError, check
from guardrail.errors import ConfigError
from guardrail.observe.audit import AuditConfig

from tests.kit.clients import asgi_post
from tests.kit.policysets import PACK
from tests.kit.upstreams import Answer, chat_app
from tests.kit.wire import SSE_PATHS, completion, read_whole, request_body, whole_reply

from .mwkit import EXPECTED, REPLY, USER, guarded, post_body, sample, whole


def test_the_verdict_changes_the_reply() -> None:
    assert EXPECTED.changed and EXPECTED.hits  # the case the tests below rely on


# --------------------------------------------------------------------------- whole replies


@pytest.mark.anyio
@pytest.mark.parametrize("api", list(SSE_PATHS))
async def test_a_json_reply_is_rewritten_annotated_and_counted(api: str) -> None:
    app = guarded(whole(api), route="/t-json")
    before = sample("guardrail_requests_total", route="/t-json", api=api, outcome="rewritten")
    sent = await asgi_post(app, SSE_PATHS[api], post_body(api))
    text, note = read_whole(api, sent.body)
    assert sent.status == 200
    assert text == EXPECTED.reply
    assert note is not None and note["inspected"] is True
    assert [h["policy"] for h in note["hits"]] == [h.policy for h in EXPECTED.hits]
    assert note["signals"] == dict(EXPECTED.signals)
    assert sent.headers["content-length"] == str(len(sent.body))
    assert sent.headers["x-guardrail-inspected"] == "true"
    assert sent.headers["x-guardrail-policies"] == ",".join(h.policy for h in EXPECTED.hits)
    assert sent.headers["x-guardrail-action"] == EXPECTED.strongest_action
    after = sample("guardrail_requests_total", route="/t-json", api=api, outcome="rewritten")
    assert after == before + 1


@pytest.mark.anyio
async def test_the_response_start_is_held_until_the_body_is_known() -> None:
    sent = await asgi_post(
        guarded(whole("openai.chat"), "/t-held"), SSE_PATHS["openai.chat"], post_body()
    )
    kinds = [m["type"] for m in sent.messages]
    assert kinds == ["http.response.start", "http.response.body"]  # one start, one final body
    assert sent.messages[1].get("more_body", False) is False


@pytest.mark.anyio
async def test_a_gzipped_reply_of_the_app_is_decoded_and_sent_plain() -> None:
    app = chat_app(whole("openai.chat"))
    app.add_middleware(GZipMiddleware, minimum_size=10)  # inner: the app's own compression
    app.add_middleware(GuardrailMiddleware, policies=PACK, route="/t-gzip", audit="off")
    headers = [(b"accept-encoding", b"gzip")]
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body(), headers)
    assert "content-encoding" not in sent.headers
    assert read_whole("openai.chat", sent.body)[0] == EXPECTED.reply
    assert sent.headers["content-length"] == str(len(sent.body))


@pytest.mark.anyio
async def test_the_request_body_reaches_the_app_exactly_as_sent() -> None:
    seen: list[bytes] = []

    def answer(request: Request, body: bytes) -> Answer:
        seen.append(body)
        return Answer(whole_reply("openai.chat", "Hello there."))

    raw = b'{"model": "m",   "messages": [{"role": "user", "content": "hi \\u00e9"}]}'
    await asgi_post(guarded(answer, "/t-replay"), SSE_PATHS["openai.chat"], raw)
    assert seen == [raw]


# --------------------------------------------------------------------------- left alone


@pytest.mark.anyio
async def test_other_routes_pass_untouched_and_uncounted() -> None:
    app = guarded(whole("openai.chat"), route="/t-other")
    before = sample("guardrail_requests_in_flight", route="/t-other")
    total = sum(
        sample("guardrail_requests_total", route="/t-other", api=a, outcome="passthrough")
        for a in (*SSE_PATHS, "passthrough")
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as client:
        got = await client.get("/health")
        posted = await client.post("/health", json=request_body("openai.chat", USER, stream=False))
        missing = await client.get(SSE_PATHS["openai.chat"])  # not a POST: not a chat request
    for response in (got, posted):
        assert response.text == "ok"
        assert not any(k.startswith("x-guardrail-") for k in response.headers)
    assert missing.status_code == 405 and "x-guardrail-inspected" not in missing.headers
    assert sample("guardrail_requests_in_flight", route="/t-other") == before
    assert total == sum(
        sample("guardrail_requests_total", route="/t-other", api=a, outcome="passthrough")
        for a in (*SSE_PATHS, "passthrough")
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Answer(b"not json at all"), "not-json"),
        (Answer(json.dumps({"choices": "nope"}).encode()), "unparseable"),
        (Answer(json.dumps({"error": {"message": "boom"}}).encode(), status=500), "upstream-error"),
        (Answer(b"event: x\ndata: 1\n\n", media_type="application/x-ndjson"), "stream"),
    ],
)
async def test_a_reply_it_cannot_parse_passes_unchanged_and_counts(
    reply: Answer, reason: str
) -> None:
    route = f"/t-unparsed-{reason}"
    app = guarded(lambda request, body: reply, route=route)
    before = sample("guardrail_not_inspected_total", route=route, api="openai.chat", reason=reason)
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    assert sent.body == reply.body
    assert sent.status == reply.status
    assert sent.headers["x-guardrail-inspected"] == "false"
    assert sent.headers["x-guardrail-reason"] == reason
    after = sample("guardrail_not_inspected_total", route=route, api="openai.chat", reason=reason)
    assert after == before + 1


@pytest.mark.anyio
async def test_a_request_that_is_not_a_chat_request_leaves_the_reply_alone() -> None:
    app = guarded(whole("openai.chat"), route="/t-badreq")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], b'{"messages": "not a list"}')
    assert sent.body == whole_reply("openai.chat", REPLY)
    assert sent.headers["x-guardrail-reason"] == "unparseable"
    assert (
        sample(
            "guardrail_not_inspected_total",
            route="/t-badreq",
            api="openai.chat",
            reason="unparseable",
        )
        >= 1
    )


@pytest.mark.anyio
async def test_a_too_large_reply_is_sent_on_as_it_is() -> None:
    big = whole_reply("openai.chat", "A calm reply. " * 400)
    app = guarded(lambda request, body: Answer(big), route="/t-large", max_inspect_bytes=4096)
    body = post_body()
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], body)
    assert sent.body == big
    assert sent.headers["x-guardrail-reason"] == "too-large"


@pytest.mark.anyio
async def test_an_engine_error_fails_open(monkeypatch: pytest.MonkeyPatch) -> None:
    from guardrail.policy import load_policies

    broken = load_policies(PACK.source)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(broken, "evaluate", boom)
    app = chat_app(whole("openai.chat"))
    app.add_middleware(GuardrailMiddleware, policies=broken, route="/t-engine", audit="off")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    text, note = read_whole("openai.chat", sent.body)
    assert text == REPLY
    assert note is not None and note["reason"] == "engine-error"
    assert sent.headers["x-guardrail-reason"] == "engine-error"
    assert sent.headers["content-length"] == str(len(sent.body))


@pytest.mark.anyio
async def test_an_exception_in_the_app_still_gets_starlettes_500() -> None:
    async def chat(request: Request) -> Response:
        await request.body()
        raise RuntimeError("the app's own bug")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.add_middleware(GuardrailMiddleware, policies=PACK, route="/t-apperr", audit="off")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://app.test",
    ) as client:
        response = await client.post("/v1/chat/completions", content=post_body())
    assert response.status_code == 500
    assert sample("guardrail_requests_total", route="/t-apperr", api="openai.chat",
                  outcome="error") >= 1  # fmt: skip


# --------------------------------------------------------------------------- options


@pytest.mark.anyio
async def test_a_path_map_names_the_api_of_an_app_route() -> None:
    app = chat_app(whole("anthropic.messages"), paths=["/chat"])
    app.add_middleware(
        GuardrailMiddleware,
        policies=PACK,
        paths={"/Chat/": "anthropic.messages"},
        detect=False,
        route="/t-paths",
        audit="off",
    )
    sent = await asgi_post(app, "/chat", post_body("anthropic.messages"))
    assert read_whole("anthropic.messages", sent.body)[0] == EXPECTED.reply


def test_bad_options_fail_when_the_app_is_built(tmp_path: Path) -> None:
    app = Starlette()
    with pytest.raises(ConfigError, match="unknown API"):
        GuardrailMiddleware(app, policies=PACK, paths={"/chat": "gemini"})
    with pytest.raises(ConfigError, match="holdback"):
        GuardrailMiddleware(app, policies=PACK, holdback="most")  # type: ignore[arg-type]
    (tmp_path / "bad.yaml").write_text("policies:\n  - id: x\n    colour: red\n")
    with pytest.raises(PolicyError) as info:
        GuardrailMiddleware(app, policies=tmp_path)
    assert info.value.file is not None and info.value.file.endswith("bad.yaml")
    assert info.value.line is not None


@pytest.mark.anyio
async def test_the_locale_header_picks_the_crisis_resources() -> None:
    crisis = [{"role": "user", "content": "I want to end my life."}]
    body = json.dumps(request_body("openai.chat", crisis, stream=False)).encode()
    app = guarded(whole("openai.chat", "I hear how much pain you're in."), route="/t-locale")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], body, [(b"x-guardrail-locale", b"en-GB")])
    expected = check(PACK, crisis, "I hear how much pain you're in.", locale="en-GB")
    text, note = read_whole("openai.chat", sent.body)
    assert text == expected.reply and note is not None and note["locale"] == "en-GB"


@pytest.mark.anyio
async def test_metrics_path_serves_the_prometheus_metrics() -> None:
    app = guarded(whole("openai.chat"), route="/t-metrics", metrics_path="/metrics")
    await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert (
        'guardrail_replies_inspected_total{api="openai.chat",route="/t-metrics"}' in response.text
    )


@pytest.mark.anyio
async def test_audit_events_and_logs_carry_no_text(tmp_path: Path) -> None:
    audit = AuditConfig(sink="file", path=tmp_path / "audit.jsonl")
    app = chat_app(whole("openai.chat"))
    app.add_middleware(
        GuardrailMiddleware, policies=PACK, route="/t-audit", audit=audit, log_requests=True
    )
    with capture_logs() as logs:
        await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    assert audit.path is not None
    events = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert [e["policy"] for e in events] == [h.policy for h in EXPECTED.hits]
    assert {e["route"] for e in events} == {"/t-audit"} and events[0]["stream"] is False
    request_lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(request_lines) == 1 and request_lines[0]["inspected"] is True
    dumped = json.dumps(events) + json.dumps(logs, default=str)
    for secret in ("panic attacks", "alone", "always be here", "Slow breathing"):
        assert secret not in dumped


@pytest.mark.anyio
async def test_a_json_reply_to_a_stream_request_is_still_inspected() -> None:
    app = guarded(lambda request, body: Answer(json.dumps(completion(REPLY)).encode()), "/t-mix")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body(stream=True))
    assert read_whole("openai.chat", sent.body)[0] == EXPECTED.reply


@pytest.mark.anyio
async def test_a_fastapi_style_json_response_works_too() -> None:
    async def chat(request: Request) -> Response:
        await request.json()
        return JSONResponse(completion(REPLY))

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.add_middleware(GuardrailMiddleware, policies=PACK, route="/t-jsonresp", audit="off")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    assert read_whole("openai.chat", sent.body)[0] == EXPECTED.reply


@pytest.mark.anyio
async def test_a_large_request_reaches_the_app_whole_and_is_not_inspected() -> None:
    seen: list[bytes] = []

    def answer(request: Request, body: bytes) -> Answer:
        seen.append(body)
        return Answer(whole_reply("openai.chat", REPLY))

    app = guarded(answer, route="/t-bigreq", max_inspect_bytes=2048)
    big = json.dumps(request_body("openai.chat", USER * 40, stream=False)).encode()
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], big)
    assert seen == [big]
    assert sent.body == whole_reply("openai.chat", REPLY)
    assert sent.headers["x-guardrail-reason"] == "too-large"


@pytest.mark.anyio
async def test_a_reply_sent_by_path_is_passed_on() -> None:
    async def app_(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/dev/null"})

    app = GuardrailMiddleware(app_, policies=PACK, route="/t-pathsend", audit="off")
    sent = await asgi_post(app, SSE_PATHS["openai.chat"], post_body())
    assert [m["type"] for m in sent.messages] == ["http.response.start", "http.response.pathsend"]
    assert sent.headers["x-guardrail-reason"] == "not-json"
