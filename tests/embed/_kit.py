"""Helpers for the embedding tests: the default pack, a chat app, servers, an ASGI caller.

``chat_app`` is the app under the middleware: a Starlette app whose chat routes answer with
whatever body the test hands it, as the proxy's upstream would. Wire bodies are in ``_wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from guardrail.policy import PolicySet, load_policies

from ._wire import ALL_PATHS

ROOT = Path(__file__).resolve().parents[2]
PACK: PolicySet = load_policies(ROOT / "policies")


# --------------------------------------------------------------------------- the app


@dataclass
class Answer:
    """What the app's chat route sends: a body (or SSE events) with a status and media type."""

    body: bytes | list[bytes]
    status: int = 200
    media_type: str = "application/json"
    headers: dict[str, str] | None = None


Answerer = Callable[[Request, bytes], Answer]


def chat_app(answer: Answerer, *, paths: Iterable[str] = ALL_PATHS.values()) -> Starlette:
    """A Starlette app whose chat routes answer with ``answer(request, body)``; ``/health``
    answers ``ok``. Stream answers (lists of events) go out one event per body message."""

    async def chat(request: Request) -> Response:
        body = await request.body()
        out = answer(request, body)
        if isinstance(out.body, list):
            events = out.body

            async def gen() -> AsyncIterator[bytes]:
                for event in events:
                    yield event

            return StreamingResponse(
                gen(), status_code=out.status, media_type=out.media_type, headers=out.headers
            )
        return Response(out.body, out.status, out.headers, media_type=out.media_type)

    async def health(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    routes = [Route(path, chat, methods=["POST"]) for path in paths]
    routes.append(Route("/health", health, methods=["GET", "POST"]))
    return Starlette(routes=routes)


# --------------------------------------------------------------------------- servers


class _QuietServer(uvicorn.Server):
    """A uvicorn server for tests: no signal handlers of its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def live_server(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port in this loop; yield its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = _QuietServer(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.fail_after(10):
            await task
        sock.close()


@dataclass
class Sent:
    """What an ASGI app sent for one request, every message kept in order."""

    messages: list[dict[str, Any]]

    @property
    def start(self) -> dict[str, Any]:
        return next(m for m in self.messages if m["type"] == "http.response.start")

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.start["headers"]}

    @property
    def bodies(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)


async def asgi_post(
    app: Any, path: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Sent:
    """POST ``body`` to ``app`` with a hand-made scope; every message the app sends is kept."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"app.test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:

            async def run() -> None:
                await app(scope, receive, send)
                group.cancel_scope.cancel()

            group.start_soon(run)
    return Sent(sent)
