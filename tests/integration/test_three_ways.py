"""One engine, one place: the library, the proxy and the middleware give the same verdicts.

Every case goes three ways: ``guardrail.check`` (and ``TextGuard`` for streams); the proxy app
(``build_app``) in front of a mock upstream that answers with the reply; and a Starlette app that
answers with the same reply, wrapped by ``GuardrailMiddleware``. Hits, signals and the rewritten
text must agree, for whole replies and streams, in each API the proxy handles (OpenAI Chat
Completions and Responses, Anthropic Messages, Ollama chat).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from guardrail import GuardrailMiddleware, TextGuard, Verdict, check, conversation
from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.policy.model import Case
from guardrail.policy.testing import collect_cases
from guardrail.config.settings import Settings

from tests.kit.clients import asgi_post
from tests.kit.paths import ROOT
from tests.kit.policysets import PACK
from tests.kit.upstreams import Answer, chat_app
from tests.kit.wire import (
    MEDIA,
    PATHS,
    pieces,
    read_stream,
    read_whole,
    request_body,
    stream_events,
    whole_reply,
)


UPSTREAM = "https://upstream.test"

# every hit case of the pack, four APIs, three ways: the exhaustive table (about 30 s); the
# parity table (test_parity.py) keeps the fast tier honest about the same promise
pytestmark = pytest.mark.slow


def _cases() -> list[Case]:
    """Every hit case of the pack that changes the reply, a few that do not, each locale once."""
    cases = collect_cases(PACK)
    changed = [c for c in cases if c.kind == "hit" and c.expect is not None]
    calm = [c for c in cases if c.kind == "ok"][::10]
    return changed + calm


CASES = _cases()


def dicts(case: Case) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in case.conversation.messages]


def summary(text: str, note: dict[str, Any] | None) -> dict[str, Any]:
    assert note is not None and note["inspected"] is True, note
    hits = [{k: h[k] for k in ("policy", "category", "severity", "action", "mode")}
            for h in note["hits"]]  # fmt: skip
    return {"reply": text, "hits": hits, "signals": note["signals"], "locale": note["locale"]}


def library(verdict: Verdict) -> dict[str, Any]:
    return {
        "reply": verdict.reply,
        "hits": [h.to_dict() for h in verdict.hits],
        "signals": dict(verdict.signals),
        "locale": verdict.locale,
    }


def headers(case: Case) -> list[tuple[bytes, bytes]]:
    return [(b"x-guardrail-locale", case.locale.encode())] if case.locale else []


async def through_proxy(api: str, case: Case, upstream: Answer) -> tuple[bytes, dict[str, str]]:
    def handler(request: httpx.Request) -> httpx.Response:
        body = upstream.body
        data = b"".join(body) if isinstance(body, list) else body
        kind = {"content-type": upstream.media_type}
        return httpx.Response(200, headers=kind, stream=httpx.ByteStream(data))

    settings = Settings(upstream=UPSTREAM, policies=ROOT / "policies", audit=AuditConfig("off"))
    app = build_app(settings, PACK, transport=httpx.MockTransport(handler))
    body = request_body(api, dicts(case), stream=isinstance(upstream.body, list))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
        ) as client:
            wanted = {k.decode(): v.decode() for k, v in headers(case)}
            response = await client.post(PATHS[api], content=json.dumps(body), headers=wanted)
    finally:
        await app.state.client.aclose()
    return response.content, dict(response.headers)


async def through_middleware(
    api: str, case: Case, upstream: Answer
) -> tuple[bytes, dict[str, str]]:
    app = chat_app(lambda request, body: upstream)
    app.add_middleware(GuardrailMiddleware, policies=PACK, audit="off", route="/three-ways")
    body = request_body(api, dicts(case), stream=isinstance(upstream.body, list))
    sent = await asgi_post(app, PATHS[api], json.dumps(body).encode(), headers(case))
    return sent.body, sent.headers


def same_headers(proxy: dict[str, str], middleware: dict[str, str]) -> None:
    for name in ("x-guardrail-inspected", "x-guardrail-policies", "x-guardrail-action",
                 "x-guardrail-holdback"):  # fmt: skip
        assert proxy.get(name) == middleware.get(name), name


@pytest.mark.anyio
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_whole_replies_agree_three_ways(api: str, case: Case) -> None:
    expected = library(check(PACK, dicts(case), case.reply, locale=case.locale))
    answer = Answer(whole_reply(api, case.reply))
    proxy_body, proxy_headers = await through_proxy(api, case, answer)
    mw_body, mw_headers = await through_middleware(api, case, answer)
    assert summary(*read_whole(api, proxy_body)) == expected
    assert summary(*read_whole(api, mw_body)) == expected
    same_headers(proxy_headers, mw_headers)


@pytest.mark.anyio
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: c.id)
async def test_streamed_replies_agree_three_ways(api: str, case: Case) -> None:
    verdict = check(PACK, dicts(case), case.reply, locale=case.locale)
    guard = TextGuard(PACK, conversation(dicts(case)), locale=case.locale, holdback="sentence")
    cuts = pieces(case.reply, 7)
    released = "".join(guard.feed(p) for p in cuts)
    result = guard.finish()
    assert result.verdict is not None
    streamed = library(result.verdict) | {"reply": released + result.tail + result.append}
    whole = library(verdict)
    assert {k: streamed[k] for k in ("hits", "signals", "locale")} == {
        k: whole[k] for k in ("hits", "signals", "locale")
    }  # the text may differ from check's in documented cases (test_stream_pieces.py)
    answer = Answer(stream_events(api, cuts), media_type=MEDIA[api])
    proxy_body, proxy_headers = await through_proxy(api, case, answer)
    mw_body, mw_headers = await through_middleware(api, case, answer)
    assert proxy_body == mw_body  # the same bytes on the wire
    assert summary(*read_stream(api, mw_body)) == streamed
    same_headers(proxy_headers, mw_headers)
