"""Real sockets: uvicorn serving the proxy in front of a real upstream server on loopback.

ASGITransport gathers whole bodies, so what is streamed and when is only observable here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.policy import PolicySet
from guardrail.config.settings import Settings

from tests.kit.servers import live_server
from tests.kit.wire import chat_request

pytestmark = pytest.mark.anyio


class GatedUpstream:
    """An ASGI upstream that sends one chunk, then waits for ``release`` before the rest."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.saw_disconnect = asyncio.Event()
        self.finished = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        asyncio.ensure_future(self._watch(receive))
        stream = (
            b"text/event-stream" if b"stream" in scope["raw_path"] else b"application/octet-stream"
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", stream)]}
        )
        await send({"type": "http.response.body", "body": b"first-chunk|", "more_body": True})
        if scope["raw_path"].endswith(b"/endless"):
            while not self.saw_disconnect.is_set():
                await send({"type": "http.response.body", "body": b"tick|", "more_body": True})
                await asyncio.sleep(0.02)
            return
        await self.release.wait()
        await send({"type": "http.response.body", "body": b"x" * 1_000_000, "more_body": True})
        await send({"type": "http.response.body", "body": b"|last-chunk", "more_body": False})
        self.finished = True

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.saw_disconnect.set()


async def read_until(chunks: AsyncIterator[bytes], marker: bytes) -> bytes:
    seen = b""
    async for chunk in chunks:
        seen += chunk
        if marker in seen:
            return seen
    raise AssertionError("stream ended early")


@pytest.mark.parametrize("path", ["/v1/files/f/content", "/v1/embeddings?stream"])
async def test_bodies_stream_through_without_buffering(
    fixture_policies: PolicySet, path: str
) -> None:
    upstream = GatedUpstream()
    async with live_server(upstream) as upstream_url:
        app = build_app(Settings(upstream=upstream_url), fixture_policies)
        async with live_server(app) as proxy_url, httpx.AsyncClient(base_url=proxy_url) as client:
            method = "POST" if "embeddings" in path else "GET"
            body = chat_request("Hi", stream=True) if method == "POST" else None
            async with client.stream(method, path, json=body) as response:
                chunks = response.aiter_raw()
                with anyio.fail_after(5):
                    # the first chunk arrives while the upstream has not yet produced the last
                    first = await read_until(chunks, b"first-chunk|")
                assert first == b"first-chunk|" and not upstream.finished
                upstream.release.set()
                rest = b"".join([chunk async for chunk in chunks])
            assert rest == b"x" * 1_000_000 + b"|last-chunk" and upstream.finished
            assert "x-guardrail-inspected" not in response.headers  # not a chat endpoint


async def test_client_disconnect_stops_the_upstream_read(fixture_policies: PolicySet) -> None:
    upstream = GatedUpstream()
    async with live_server(upstream) as upstream_url:
        app = build_app(Settings(upstream=upstream_url), fixture_policies)
        async with live_server(app) as proxy_url, httpx.AsyncClient(base_url=proxy_url) as client:
            async with client.stream("GET", "/v1/endless") as response:
                with anyio.fail_after(5):
                    await read_until(response.aiter_raw(), b"tick|")
            with anyio.fail_after(5):
                await upstream.saw_disconnect.wait()


async def test_crafted_targets_never_leave_the_configured_upstream(
    fixture_policies: PolicySet,
) -> None:
    """Absolute-form, scheme-relative and dot-segment targets, sent raw on the wire.

    Dot segments and ``//host`` are refused with 400. For the absolute form, RFC 9112 (3.2.2)
    lets a server accept it and ignore the authority: h11 hands the whole target to the app,
    which refuses it; httptools (the parser installed with guardrail) hands over only the path,
    which then goes to the configured upstream like any origin-form path. Either way
    ``evil.test`` is never contacted and never named in what the upstream receives.
    """
    calls: list[tuple[str, bytes]] = []

    async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append((scope["path"], dict(scope["headers"]).get(b"host", b"")))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"upstream"})

    async with live_server(upstream) as upstream_url:
        app = build_app(Settings(upstream=upstream_url), fixture_policies)
        async with live_server(app) as proxy_url:
            host, port = proxy_url.removeprefix("http://").split(":")
            answers = []
            for target in (
                b"//evil.test/v1/models",
                b"/v1/../admin",
                b"http://evil.test/v1/models",
            ):
                stream = await anyio.connect_tcp(host, int(port))
                async with stream:
                    await stream.send(
                        b"GET "
                        + target
                        + b" HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
                    )
                    data = b""
                    with anyio.fail_after(5):
                        try:
                            while True:
                                data += await stream.receive()
                        except anyio.EndOfStream:
                            pass
                answers.append(data)
    for data in answers[:2]:
        assert data.startswith(b"HTTP/1.1 400"), data[:80]
        assert (
            json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "invalid_request_target"
        )
    absolute = answers[2]
    if absolute.startswith(b"HTTP/1.1 400"):  # h11: the whole target reached the app
        assert calls == []
    else:  # httptools: only the path did, and it went where the configuration says
        head, _, body = absolute.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"upstream" in body
        upstream_host = upstream_url.removeprefix("http://").encode()
        assert calls == [("/v1/models", upstream_host)]
