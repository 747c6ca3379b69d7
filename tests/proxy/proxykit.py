"""Helpers shared by the proxy tests (imported as ``proxykit``; fixtures live in conftest.py).

The app is called through ``httpx.ASGITransport``; the upstream is an ``httpx.MockTransport``
behind the one seam (``build_app(..., transport=...)``). Mock replies use ``stream=`` bodies, as
a real transport delivers them (``httpx.Response(content=...)`` would be pre-read).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette

from guardrail.proxy.app import build_app
from guardrail.proxy.pipeline import PolicyEngine
from guardrail.config.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
UPSTREAM = "https://upstream.test"
SENTINEL = "SENTINEL-7f3a9c"


def reply(
    status: int = 200,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    """A streamed mock upstream response (JSON body unless ``raw`` is given)."""
    data = raw if raw is not None else json.dumps(body).encode()
    hdrs = {"content-type": "application/json"} if raw is None else {}
    hdrs.update(headers or {})
    return httpx.Response(status, headers=hdrs, stream=httpx.ByteStream(data))


def completion(*contents: str | None, model: str = "gpt-test") -> dict[str, Any]:
    """A Chat Completions response body with one choice per content."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i, c in enumerate(contents)
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def chat_request(*user: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": u} for u in user],
        **extra,
    }


@dataclass
class Upstream:
    """A scripted upstream: records every request and answers with ``handler``."""

    handler: Callable[[httpx.Request], httpx.Response] = field(
        default=lambda request: reply(body=completion("Hello."))
    )
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@dataclass
class Proxy:
    app: Starlette
    client: httpx.AsyncClient
    upstream: Upstream


@contextlib.asynccontextmanager
async def open_proxy(
    settings: Settings, policies: PolicyEngine, upstream: Upstream
) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling the proxy app in-process, the app's upstream being ``upstream``."""
    app = build_app(settings, policies, transport=httpx.MockTransport(upstream))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://proxy.test"
    ) as client:
        yield client
    await app.state.client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sent:
    """What an ASGI app sent for one request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_call(
    app: Any,
    method: str,
    raw_path: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    query: bytes = b"",
) -> Sent:
    """Call an ASGI app with a hand-made scope: raw targets no HTTP client would send."""
    path = raw_path.decode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers or [(b"host", b"proxy.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8787),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:

            async def run() -> None:
                await app(scope, receive, send)
                group.cancel_scope.cancel()

            group.start_soon(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Sent(start["status"], list(start["headers"]), body_out)


class _QuietServer(uvicorn.Server):
    """A uvicorn server for tests: no signal handlers of its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def live_server(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port, in this event loop; yields its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,
    )
    server = _QuietServer(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(5):
            while not server.started:
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.fail_after(5):
            await task
        sock.close()
