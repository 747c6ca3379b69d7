"""A scripted upstream and the proxy in front of it, on real loopback sockets, for stream attacks.

:class:`Scripted` is an ASGI upstream (served by uvicorn) that answers every request with what
the test put in :attr:`Scripted.reply`: a status, headers, and the body as a list of byte chunks
(each its own write) or an async generator (lazy, paced or endless). The proxy is the real app
(``build_app``) under uvicorn, on the same background loop (``tests/kit/servers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from guardrail.proxy.app import build_app
from guardrail.observe.audit import AuditConfig
from guardrail.observe.metrics import REGISTRY
from guardrail.config.settings import Settings

from tests.kit.paths import STACK_FIXTURES
from tests.kit.policysets import STACK_POLICIES
from tests.kit.servers import Background, lifespan
from tests.kit.wire import MEDIA, MESSAGES, PATHS, RESPONSES

USER = "I feel hopeless tonight"
Body = Callable[[], AsyncIterator[bytes]]


@dataclass
class Reply:
    """What the scripted upstream sends next."""

    chunks: Iterable[bytes] | Body = ()
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


class Scripted:
    """ASGI upstream answering every request with :attr:`reply` (see the module docstring)."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.finished: list[float] = []  # when a body ended or its client went away

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        reply = self.reply
        headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        chunks = reply.chunks() if callable(reply.chunks) else _aiter(reply.chunks)
        gone = asyncio.Event()  # the proxy closed the connection: stop producing
        watch = asyncio.ensure_future(_watch(receive, gone))
        try:
            async for chunk in chunks:
                if gone.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            self.finished.append(time.monotonic())


async def _watch(receive: Any, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@dataclass
class Proxy:
    """The proxy (real app, real uvicorn) in front of a :class:`Scripted` upstream."""

    background: Background
    upstream: Scripted
    url: str

    def send(self, api: str, chunks: Iterable[bytes] | Body, **headers: str) -> None:
        """Script the upstream's next reply: a stream of ``api``'s media type."""
        self.upstream.reply = Reply(chunks, {"content-type": MEDIA[api], **headers})


@contextlib.contextmanager
def running(**settings: Any) -> Iterator[Proxy]:
    """A scripted upstream and the proxy in front of it, with ``settings`` on top of the test
    defaults (fixture policies, audit off); all closed at the end."""
    background = Background()
    try:
        upstream = Scripted()
        upstream_url = background.serve_asgi(upstream)
        options: dict[str, Any] = {
            "upstream": upstream_url,
            "policies": STACK_FIXTURES / "policies",
            "audit": AuditConfig(sink="off"),
            **settings,
        }
        app = build_app(Settings(**options), STACK_POLICIES)
        yield Proxy(background, upstream, background.serve_asgi(app))
    finally:
        background.close()


def request_body(api: str, user: str = USER) -> dict[str, Any]:
    """A streamed request of ``api`` with one user message."""
    body: dict[str, Any] = {"model": "m", "stream": True}
    if api == RESPONSES:
        return {**body, "input": user}
    if api == MESSAGES:
        return {**body, "max_tokens": 50, "messages": [{"role": "user", "content": user}]}
    return {**body, "messages": [{"role": "user", "content": user}]}


def post(proxy: Proxy, api: str, timeout: float = 30) -> httpx.Response:
    """POST a streamed request of ``api`` through the proxy; the whole response, read."""
    with httpx.Client(base_url=proxy.url, timeout=timeout) as client:
        return client.post(PATHS[api], json=request_body(api))


def counted(metric: str, **labels: str) -> float:
    """The current value of a counter sample (0 when it was never touched)."""
    return REGISTRY.get_sample_value(metric, {"route": "/", **labels}) or 0.0


def eventually(check: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)
