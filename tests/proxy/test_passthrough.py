"""Every other request passes through unchanged; failures become OpenAI-format 502/504/400."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from guardrail.policy import PolicySet
from guardrail.config.settings import Settings, Timeouts

from tests.kit.clients import asgi_call
from tests.kit.proxyapp import Proxy, Upstream, open_proxy, reply
from tests.kit.servers import free_port
from tests.kit.wire import chat_request

pytestmark = pytest.mark.anyio


async def test_method_path_query_headers_and_body_pass_through(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(
        201,
        {"ok": True},
        headers={
            "x-upstream": "1",
            "set-cookie": "a=1",
            "cache-control": "no-store",
            "keep-alive": "timeout=5",
            "connection": "keep-alive, x-hop",
            "x-hop": "secret-hop",
        },
    )
    response = await proxy.client.patch(
        "/v1/files/file-1?purpose=fine-tune&x=%2Fy",
        content=b"payload bytes",
        headers={
            "authorization": "Bearer sk-live",
            "api-key": "azure-key",
            "x-custom": "kept",
            "connection": "x-drop",
            "x-drop": "hop",
            "te": "trailers",
            "keep-alive": "1",
            "proxy-authorization": "Basic cHJveHk=",
            "upgrade": "h2c",
            "host": "proxy.test",
        },
    )
    sent = proxy.upstream.last
    assert sent.method == "PATCH"
    assert sent.url.raw_path == b"/v1/files/file-1?purpose=fine-tune&x=%2Fy"
    assert sent.url.host == "upstream.test" and sent.headers["host"] == "upstream.test"
    assert sent.headers["authorization"] == "Bearer sk-live"
    assert sent.headers["api-key"] == "azure-key"
    assert sent.headers["x-custom"] == "kept"
    for hop in ("connection", "x-drop", "te", "keep-alive", "proxy-authorization", "upgrade"):
        assert hop not in sent.headers
    assert proxy.upstream.bodies[-1] == b"payload bytes"
    assert response.status_code == 201
    assert response.json() == {"ok": True}
    assert response.headers["x-upstream"] == "1" and response.headers["set-cookie"] == "a=1"
    assert response.headers["cache-control"] == "no-store"
    for hop in ("keep-alive", "connection", "x-hop"):
        assert hop not in response.headers
    assert "x-guardrail-inspected" not in response.headers  # not the inspected endpoint
    assert response.headers["x-request-id"]


async def test_no_headers_are_added_upstream(proxy: Proxy) -> None:
    await asgi_call(
        proxy.app, "GET", b"/v1/models", headers=[(b"host", b"proxy.test"), (b"x-only", b"1")]
    )
    assert sorted(proxy.upstream.last.headers.keys()) == ["host", "x-only"]


async def test_repeated_headers_and_status_codes(proxy: Proxy) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            302,
            headers=[
                ("location", "https://elsewhere.test/"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
            ],
            stream=httpx.ByteStream(b""),
        )

    proxy.upstream.handler = handler
    response = await proxy.client.get("/v1/anything")
    assert response.status_code == 302  # redirects are the client's business
    assert response.headers["location"] == "https://elsewhere.test/"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert len(proxy.upstream.requests) == 1


async def test_get_chat_completions_is_not_inspected(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body={"object": "list", "data": []})
    response = await proxy.client.get("/v1/chat/completions?limit=2")
    assert response.json() == {"object": "list", "data": []}
    assert "x-guardrail-inspected" not in response.headers


async def test_chunked_upload_streams_through(proxy: Proxy) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    await proxy.client.post("/v1/uploads/u1/parts", content=body())
    assert proxy.upstream.bodies[-1] == b"one,two,three"
    assert proxy.upstream.last.headers["transfer-encoding"] == "chunked"


async def test_upstream_request_id_is_kept_beside_ours(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: reply(body={}, headers={"x-request-id": "req_upstream"})
    response = await proxy.client.get("/v1/models", headers={"x-request-id": "client-abc.1"})
    assert response.headers["x-request-id"] == "client-abc.1"
    assert response.headers["x-upstream-request-id"] == "req_upstream"
    assert proxy.upstream.last.headers["x-request-id"] == "client-abc.1"  # forwarded as sent
    response = await proxy.client.get("/v1/models", headers={"x-request-id": "bad id\twith junk"})
    assert response.headers["x-request-id"] != "bad id\twith junk"


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://upstream.test", "/v1/chat/completions", "/v1/chat/completions"),
        ("https://upstream.test/v1", "/v1/chat/completions", "/v1/chat/completions"),
        ("https://upstream.test/v1", "/chat/completions", "/v1/chat/completions"),
        ("https://upstream.test/openai/v1", "/v1/models", "/openai/v1/models"),
        (
            "https://upstream.test/openai",
            "/openai/deployments/d/chat/completions",
            "/openai/deployments/d/chat/completions",
        ),
    ],
)
async def test_base_path_joining(
    fixture_policies: PolicySet, base: str, path: str, expected: str
) -> None:
    upstream = Upstream()
    async with open_proxy(Settings(upstream=base), fixture_policies, upstream) as client:
        response = await client.post(path, json=chat_request("Hi"))
    assert upstream.last.url.path == expected
    if expected.endswith("/chat/completions"):
        assert response.headers["x-guardrail-inspected"] == "true"


# ------------------------------------------------------------------ no open proxy


@pytest.mark.parametrize(
    "target",
    [
        b"http://evil.test/v1/models",
        b"https://evil.test/v1/chat/completions",
        b"//evil.test/v1/models",
        b"evil.test:443",
        b"*",
        b"/v1/../../admin",
        b"/v1/%2e%2e/%2E%2E/admin",
        b"/v1/..%2f..%2fadmin",
        b"/v1/..\\..\\admin",
        b"/v1/./models",
        b"/v1/models%00",
    ],
)
async def test_targets_that_could_leave_the_upstream_are_refused(
    proxy: Proxy, target: bytes
) -> None:
    sent = await asgi_call(proxy.app, "GET", target, headers=[(b"host", b"evil.test")])
    assert sent.status == 400
    error = sent.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request_target"
    assert proxy.upstream.requests == []


async def test_host_header_never_picks_the_upstream(proxy: Proxy) -> None:
    await asgi_call(
        proxy.app,
        "GET",
        b"/v1/models",
        headers=[(b"host", b"evil.test"), (b"x-forwarded-host", b"evil.test")],
    )
    assert proxy.upstream.last.url.host == "upstream.test"
    assert proxy.upstream.last.headers["host"] == "upstream.test"


async def test_encoded_slash_inside_a_segment_is_kept_not_traversed(proxy: Proxy) -> None:
    await asgi_call(proxy.app, "GET", b"/v1/files/a%2Fb")
    assert proxy.upstream.last.url.raw_path == b"/v1/files/a%2Fb"


# ------------------------------------------------------------------ upstream failures


def raising(exc: Exception) -> Upstream:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return Upstream(handler)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), 502, "upstream_unavailable"),
        (httpx.RemoteProtocolError("Server disconnected"), 502, "upstream_unavailable"),
        (httpx.ConnectTimeout("timed out"), 504, "upstream_timeout"),
        (httpx.ReadTimeout("timed out"), 504, "upstream_timeout"),
        (httpx.PoolTimeout("timed out"), 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
async def test_upstream_failures_become_openai_errors(
    settings: Settings,
    fixture_policies: PolicySet,
    exc: Exception,
    status: int,
    code: str,
    path: str,
) -> None:
    async with open_proxy(settings, fixture_policies, raising(exc)) as client:
        response = await client.post(path, json=chat_request("Hi"))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "upstream_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and "Errno" not in response.text
    assert response.headers["x-request-id"] in error["message"]
    if path == "/v1/chat/completions":
        assert response.headers["x-guardrail-inspected"] == "false"
        assert response.headers["x-guardrail-reason"] == "upstream-error"


async def test_connection_refused_by_a_real_socket_is_502(fixture_policies: PolicySet) -> None:
    settings = Settings(upstream=f"http://127.0.0.1:{free_port()}", timeouts=Timeouts(connect=2))
    from guardrail.proxy.app import build_app

    app = build_app(settings, fixture_policies)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://p"
    ) as client:
        response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
    await app.state.client.aclose()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


async def test_total_deadline_gives_504(fixture_policies: PolicySet) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return reply(body={})

    settings = Settings(upstream="https://upstream.test", timeouts=Timeouts(total=0.2))
    app = __import__("guardrail.proxy.app", fromlist=["build_app"]).build_app(
        settings, fixture_policies, transport=httpx.MockTransport(slow)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://p"
    ) as client:
        with anyio.fail_after(3):
            response = await client.post("/v1/chat/completions", json=chat_request("Hi"))
    assert response.status_code == 504
    assert json.loads(response.content)["error"]["code"] == "upstream_timeout"


async def test_head_passes_through(proxy: Proxy) -> None:
    proxy.upstream.handler = lambda r: httpx.Response(
        200, headers={"content-length": "42", "x-a": "1"}, stream=httpx.ByteStream(b"")
    )
    response = await proxy.client.head("/v1/models")
    assert proxy.upstream.last.method == "HEAD"
    assert response.status_code == 200 and response.headers["content-length"] == "42"


async def test_internal_errors_never_show_a_traceback(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bug(*args: object) -> None:
        raise KeyError("secret detail")

    monkeypatch.setattr(proxy.app.state.pipeline, "handle", bug)
    response = await proxy.client.post("/v1/chat/completions", json=chat_request("Hi"))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] in response.json()["error"]["message"]


async def test_websocket_is_closed(proxy: Proxy) -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/v1/realtime",
        "raw_path": b"/v1/realtime",
        "query_string": b"",
        "headers": [],
        "asgi": {"version": "3.0"},
    }
    await proxy.app(scope, receive, send)
    assert sent and sent[0]["type"] == "websocket.close"
    assert proxy.upstream.requests == []
