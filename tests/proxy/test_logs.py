"""Logs: one canonical JSON line per request, and never any text or credential."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.observe.logs import REQUEST_FIELDS, configure_logging, new_request_id
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.config.settings import Settings

from tests.kit.paths import PROXY_FIXTURES
from tests.kit.proxyapp import SENTINEL, Upstream, open_proxy, reply
from tests.kit.servers import live_server
from tests.kit.wire import chat_request, completion

pytestmark = pytest.mark.anyio


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    configure_logging("info", "auto")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


SECRET_HEADERS = {
    "authorization": f"Bearer sk-{SENTINEL}",
    "api-key": SENTINEL,
    "cookie": f"session={SENTINEL}",
    "x-api-key": SENTINEL,
}


def secret_reply(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/fail"):
        return reply(
            500, {"error": {"message": f"upstream says {SENTINEL}", "type": "x", "code": None}}
        )
    return reply(
        body=completion(f"I will always be here. {SENTINEL}"),
        headers={"set-cookie": f"s={SENTINEL}", "x-request-id": "req_up_1"},
    )


class LeakyEngine:
    digest = "leaky"

    def evaluate(self, conv: Conversation, reply: str, *, locale: str | None = None) -> Verdict:
        raise ValueError(f"cannot handle {reply} after {conv.messages[-1].content}")


async def test_canonical_line_has_metadata_only(
    log_stream: io.StringIO, settings: Settings, fixture_policies: PolicySet
) -> None:
    upstream = Upstream(secret_reply)
    async with open_proxy(settings, fixture_policies, upstream) as client:
        response = await client.post(
            f"/v1/chat/completions?key={SENTINEL}",
            headers=SECRET_HEADERS,
            json=chat_request(f"I feel {SENTINEL} and overwhelmed", model=f"gpt-{SENTINEL[:4]}"),
        )
    assert SENTINEL in response.text  # the client gets its reply...
    output = log_stream.getvalue()
    assert SENTINEL not in output  # ...the log never sees it
    records = [r for r in lines(log_stream) if r.get("event") == "request"]
    assert len(records) == 1
    line = records[0]
    assert set(line) <= {*REQUEST_FIELDS, "event", "level", "timestamp", "logger"}
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["api"] == "openai.chat" and line["route"] == "/"
    assert line["status"] == 200 and line["upstream_status"] == 200
    assert line["upstream_request_id"] == "req_up_1"
    assert line["inspected"] is True and line["action"] == "replace"
    assert line["policies"] == ["dependency.always", "referral.distress"]
    assert isinstance(line["upstream_ms"], float) and isinstance(line["guardrail_ms"], float)
    assert line["policy_digest"] == fixture_policies.digest


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/fail", "/v1/chat/fail/x"])
async def test_no_text_in_logs_on_any_path(
    log_stream: io.StringIO, settings: Settings, fixture_policies: PolicySet, path: str
) -> None:
    for policies in (fixture_policies, LeakyEngine()):
        async with open_proxy(settings, policies, Upstream(secret_reply)) as client:
            await client.post(path, headers=SECRET_HEADERS, json=chat_request(f"help {SENTINEL}"))
            await client.post(path, headers=SECRET_HEADERS, content=f"{{broken {SENTINEL}".encode())
    assert SENTINEL not in log_stream.getvalue()
    assert any(r.get("error") == "engine_error" for r in lines(log_stream)) or "fail" in path


async def test_no_text_in_logs_on_upstream_failures(
    log_stream: io.StringIO, settings: Settings, fixture_policies: PolicySet
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    async with open_proxy(settings, fixture_policies, Upstream(broken)) as client:
        response = await client.post(
            f"/v1/chat/completions?k={SENTINEL}",
            headers=SECRET_HEADERS,
            json=chat_request(SENTINEL),
        )
    assert response.status_code == 502 and SENTINEL not in response.text
    assert SENTINEL not in log_stream.getvalue()
    (line,) = [r for r in lines(log_stream) if r.get("event") == "request"]
    assert line["status"] == 502 and line["error"] == "upstream_unavailable"


async def test_no_text_in_server_logs_when_upstream_breaks_mid_body(
    log_stream: io.StringIO, fixture_policies: PolicySet
) -> None:
    async def breaks(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"100000")],
            }
        )
        await send({"type": "http.response.body", "body": SENTINEL.encode(), "more_body": True})
        raise RuntimeError(SENTINEL)  # the upstream server drops the connection

    async with live_server(breaks) as upstream_url:
        app = build_app(Settings(upstream=upstream_url), fixture_policies)
        async with live_server(app) as proxy_url, httpx.AsyncClient(base_url=proxy_url) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/v1/files/x/content", headers=SECRET_HEADERS)
    records = lines(log_stream)
    assert any(
        r.get("error", "").startswith("upstream_body_")
        for r in records
        if r.get("logger") == "guardrail.request"
    )
    # even the server's own "Exception in ASGI application" records carry no exception message
    assert any(r.get("error_type") == "RuntimeError" for r in records)
    assert SENTINEL not in log_stream.getvalue()


def test_request_ids() -> None:
    assert new_request_id({"x-request-id": "abc-123_x.y:z"}) == "abc-123_x.y:z"
    generated = new_request_id({"x-request-id": "has space"})
    assert generated != "has space" and len(generated) == 32
    assert new_request_id({"x-request-id": "a" * 129}) != "a" * 129


def test_console_format_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    logging.getLogger("guardrail.test").info("hello")
    configure_logging("info", "auto")
    assert "hello" in stream.getvalue() and not stream.getvalue().startswith("{")


@pytest.mark.parametrize(
    ("upstream", "status", "cause"),
    [
        ("http://127.0.0.1:{closed}", 502, "refused"),  # nothing listens there
        ("http://guardrail-no-such-host.invalid", 502, "dns"),  # .invalid never resolves
    ],
)
async def test_an_upstream_failure_names_the_host_and_the_cause(
    log_stream: io.StringIO, fixture_policies: PolicySet, upstream: str, status: int, cause: str
) -> None:
    """First-run friction (issue 13): a 502 logged only ``upstream_unavailable``, with no host and
    no cause, even at debug level. The line now says which configured host and why (a real
    connection through the production transport, no mock)."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: connecting is refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url = upstream.format(closed=closed)
    settings = Settings(upstream=url, policies=PROXY_FIXTURES / "policies")
    app = build_app(settings, fixture_policies)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        response = await client.post("/v1/chat/completions", json=chat_request("hi"))
    await app.state.client.aclose()
    assert response.status_code == status
    (line,) = [r for r in lines(log_stream) if r.get("event") == "request"]
    assert line["upstream_host"] == httpx.URL(url).host
    assert line["upstream_cause"] == cause
    assert "upstream_host" not in response.text  # for the log, not the client


async def test_an_upstream_timeout_names_the_host_and_the_cause(
    log_stream: io.StringIO, settings: Settings, fixture_policies: PolicySet
) -> None:
    """A read timeout is logged as such, with the host it went to."""

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    async with open_proxy(settings, fixture_policies, Upstream(slow)) as client:
        response = await client.post("/v1/chat/completions", json=chat_request("hi"))
    assert response.status_code == 504
    (line,) = [r for r in lines(log_stream) if r.get("event") == "request"]
    assert (line["upstream_host"], line["upstream_cause"]) == ("upstream.test", "read-timeout")
