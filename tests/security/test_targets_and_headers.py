"""Where requests go and what the upstream may say: request targets that could leave the
configured upstream get the documented 400 (absolute-form, servlet-style ``..;`` segments), and
``x-guardrail-*`` headers reach a client only when guardrail set them (issue 11, defects 10, 12,
13)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.policy import PolicySet, load_policies
from guardrail.proxy.serverproto import protocol_class
from guardrail.config.settings import Settings

from tests.kit.clients import asgi_call, exchange, request
from tests.kit.paths import PROXY_FIXTURES
from tests.kit.proxyapp import UPSTREAM, Upstream, open_proxy, reply
from tests.kit.serve import served
from tests.kit.servers import Background
from tests.kit.upstreams import Recorder
from tests.kit.wire import chat_request, completion, sse


FORGED = {
    "x-guardrail-inspected": "true",
    "X-Guardrail-Policies": "forged.policy",
    "x-guardrail-action": "forged-action",
    "x-guardrail-reason": "forged-reason",
    "x-guardrail-custom": "forged",
}
OURS = {"x-guardrail-inspected", "x-guardrail-reason", "x-guardrail-policies",
        "x-guardrail-action", "x-guardrail-holdback"}


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(PROXY_FIXTURES / "policies")


def _sse(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return sse(None, chunk) + sse(None, "[DONE]")


SSE = {"content-type": "text/event-stream", **FORGED}
CASES: dict[str, tuple[str, str, bytes, Callable[[httpx.Request], httpx.Response]]] = {
    "pass-through": ("GET", "/v1/models", b"", lambda r: reply(body={"data": []}, headers=FORGED)),
    "whole reply": ("POST", "/v1/chat/completions", json.dumps(chat_request("Hi")).encode(),
                    lambda r: reply(body=completion("Hello."), headers=FORGED)),
    "upstream error": ("POST", "/v1/chat/completions", json.dumps(chat_request("Hi")).encode(),
                       lambda r: reply(500, {"error": {"message": "down"}}, headers=FORGED)),
    "not json": ("POST", "/v1/chat/completions", json.dumps(chat_request("Hi")).encode(),
                 lambda r: reply(raw=b"plain text", headers={"content-type": "text/plain",
                                                             **FORGED})),
    "unparseable request": ("POST", "/v1/chat/completions", b"{not json",
                            lambda r: reply(body=completion("Hello."), headers=FORGED)),
    "guarded stream": ("POST", "/v1/chat/completions",
                       json.dumps(chat_request("Hi", stream=True)).encode(),
                       lambda r: reply(raw=_sse("Hello there."), headers=SSE)),
    "stream of another type": ("POST", "/v1/chat/completions",
                               json.dumps(chat_request("Hi", stream=True)).encode(),
                               lambda r: reply(raw=b'{"x":1}\n', headers={
                                   "content-type": "application/x-ndjson", **FORGED})),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(CASES))
async def test_upstream_guardrail_headers_never_reach_the_client(
    case: str, policies: PolicySet
) -> None:
    """Attack: an upstream (or anything between it and guardrail) sends its own
    ``x-guardrail-*`` headers, claiming a reply was inspected or naming policies, on paths
    guardrail does not annotate; the client must only ever see guardrail's own annotation."""
    method, path, body, answer = CASES[case]
    upstream = Upstream(answer)
    settings = Settings(upstream=UPSTREAM, policies=PROXY_FIXTURES / "policies")
    async with open_proxy(settings, policies, upstream) as client:
        response = await client.request(method, path, content=body,
                                        headers={"content-type": "application/json"})
    assert upstream.requests, "the request reached the upstream"
    theirs = {name: value for name, value in response.headers.items()
              if name.startswith("x-guardrail-")}
    assert set(theirs) <= OURS, theirs
    assert not any("forged" in value for value in theirs.values()), theirs
    if case == "pass-through":
        assert theirs == {}
    else:
        assert "x-guardrail-inspected" in theirs  # guardrail's own annotation is still there


ABSOLUTE = [
    "http://evil.test/v1/models",
    "HTTP://evil.test/v1/chat/completions?x=1",
    "https://evil.test:443/v1/models",
    "http://127.0.0.1:1/v1/models",
]
DOT_PARAMS = [
    "/v1/..;/admin",
    "/v1/..;jsessionid=1/models",
    "/.;/v1/models",
    "/v1/%2e%2e;/models",
    "/v1/%2E%2E%3B/models",
    "/v1/..%3bx=1/models",
    "/v1/.%3B/models",
    "/v1\\..;\\models",
]


@pytest.mark.slow
@pytest.mark.subprocess
def test_absolute_form_and_dot_param_targets_get_400_on_the_wire(tmp_path: Path) -> None:
    """Attack: request targets written so that the server's parser and the upstream's disagree.
    llhttp reduces ``GET http://evil.test/v1/models`` to ``/v1/models`` (which was then
    forwarded), and servlet-style upstreams read ``/..;/`` as ``/../``. Through a real
    ``guardrail serve`` each gets the README's 400 and the upstream sees nothing."""
    with served(tmp_path) as (proc, upstream):
        for target in ABSOLUTE + DOT_PARAMS:
            status, headers, body = exchange(proc.proxy, request("GET", target))
            assert status == 400, (target, status, body)
            assert json.loads(body)["error"]["code"] == "invalid_request_target", target
            assert headers["content-type"] == "application/json"
        status, _, _ = exchange(proc.proxy, request("GET", "/v1/models;v=2"))
        assert status == 200  # a ;param on an ordinary segment is not refused
    assert upstream.seen == [("GET", "/v1/models;v=2", 0)]


@contextlib.contextmanager
def _h11_proxy(upstream_url: str, policies: PolicySet) -> Iterator[str]:
    """The proxy app on a real uvicorn with guardrail's h11 protocol, in a thread."""
    app = build_app(Settings(upstream=upstream_url), policies)
    background = Background()
    try:
        yield background.serve_asgi(
            app, http=protocol_class(header_timeout=5, max_connections=100, http="h11")
        )
    finally:
        background.close()


def test_absolute_form_is_refused_with_the_h11_protocol_too(policies: PolicySet) -> None:
    """The same absolute-form targets through guardrail's h11 protocol (used where httptools
    is not installed): still the 400, nothing forwarded."""
    from tests.kit.servers import ThreadedServer

    recorder = Recorder()
    with ThreadedServer(recorder) as upstream, _h11_proxy(upstream.url, policies) as proxy:
        for target in ABSOLUTE + DOT_PARAMS[:3]:
            status, _, body = exchange(proxy, request("GET", target))
            assert status == 400, (target, body)
    assert recorder.seen == []


@pytest.mark.anyio
@pytest.mark.parametrize("raw_path", [p.encode("latin-1") for p in DOT_PARAMS])
async def test_dot_segments_with_params_are_refused_in_the_app(
    raw_path: bytes, policies: PolicySet
) -> None:
    """Attack: ``..;`` and ``.;`` segments, percent-encoded or not, as an ASGI server hands them
    to the app (the embedded proxy behind any server): 400, nothing forwarded."""
    upstream = Upstream()
    settings = Settings(upstream=UPSTREAM, policies=PROXY_FIXTURES / "policies")
    app = build_app(settings, policies, transport=httpx.MockTransport(upstream))
    sent = await asgi_call(app, "GET", raw_path)
    assert sent.status == 400
    assert sent.json()["error"]["code"] == "invalid_request_target"
    assert upstream.requests == []
