"""A mock judge: an OpenAI-compatible Chat Completions server on loopback, served by uvicorn.

The requested ``model`` picks the behaviour (one endpoint per behaviour in a test):

==============  ===========================================================================
``yes``/``no``  answers ``Yes.`` / ``no``
``json``        answers ``{"answer": "yes"}`` inside a code fence
``keyword``     yes when the text shown contains "unalive" (a stand-in for a semantic model)
``gate``        answers yes once :meth:`MockJudge.open_gate` was called
``hang``        never answers while the test runs (timeouts)
``error``       500 with an error object
``garbage``     200 with a body that is not JSON
``maybe``       200 whose answer is neither yes nor no
``huge``        200 with a 200 KB body
``sse``         200 with a streamed (``text/event-stream``) completion, which was not asked for
``redirect``    307 to another path, which is not followed
``flaky``       500 the first time, yes afterwards
==============  ===========================================================================

Every request is recorded whole (:class:`Seen`): the exact system prompt and text the judge was
shown, and the ``Authorization`` header. :meth:`MockJudge.calls` waits for a number of calls by
condition, never by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import uvicorn

from guardrail.judge.endpoints import JudgeEndpoint


@dataclass(frozen=True)
class Spec:
    """A judge detector as the engine hands it to the runner (``JudgeSpec``'s four fields)."""

    id: str
    rubric: str
    reads: str
    endpoint: str


@dataclass
class Seen:
    model: str
    authorization: str | None
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data

    @property
    def system(self) -> str:
        return str(self.body["messages"][0]["content"])

    @property
    def shown(self) -> str:
        """The text the judge was shown (the user message of the request)."""
        return str(self.body["messages"][1]["content"])


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": "mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


class MockJudge:
    """The ASGI app (see the module docstring)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._gate = asyncio.Event()
        self._release = asyncio.Event()  # set at teardown: ``hang`` calls end

    def by_model(self, model: str) -> list[Seen]:
        return [s for s in self.seen if s.model == model]

    async def calls(self, n: int, model: str | None = None) -> None:
        """Wait until ``n`` calls (of ``model``) have arrived."""
        with anyio.fail_after(10):
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self.seen if model is None else self.by_model(model)) >= n
                )

    def open_gate(self) -> None:
        self._gate.set()

    def release(self) -> None:
        self._gate.set()
        self._release.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        model = str(json.loads(raw).get("model")) if raw.startswith(b"{") else "?"
        seen = Seen(model, headers.get("authorization"), raw)
        self.in_flight += 1
        async with self._changed:
            self.seen.append(seen)
            self._changed.notify_all()
        try:
            status, media, chunks = await self._answer(model, seen)
        finally:
            self.in_flight -= 1
        extra = [(b"location", b"/elsewhere")] if status == 307 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", media.encode()), *extra],
            }
        )
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _answer(self, model: str, seen: Seen) -> tuple[int, str, list[bytes]]:
        js = "application/json"
        if model in ("yes", "no"):
            return 200, js, [completion("Yes." if model == "yes" else "no")]
        if model == "json":
            return 200, js, [completion('```json\n{"answer": "yes"}\n```')]
        if model == "keyword":
            return 200, js, [completion("yes" if "unalive" in seen.shown.lower() else "no")]
        if model == "gate":
            await self._gate.wait()
            return 200, js, [completion("yes")]
        if model == "hang":
            await self._release.wait()
            return 200, js, [completion("yes")]
        if model == "error":
            return 500, js, [b'{"error": {"message": "overloaded"}}']
        if model == "garbage":
            return 200, js, [b"<html>upstream proxy error</html>"]
        if model == "maybe":
            return 200, js, [completion("Maybe; it is hard to say.")]
        if model == "huge":
            return 200, js, [completion("yes" + " " * 200_000)]
        if model == "sse":
            events = [
                b'data: {"choices": [{"delta": {"content": "yes"}}]}\n\n',
                b"data: [DONE]\n\n",
            ]
            return 200, "text/event-stream", events
        if model == "redirect":
            return 307, js, [b""]
        if model == "flaky":
            first = len(self.by_model("flaky")) == 1
            return (500, js, [b"{}"]) if first else (200, js, [completion("yes")])
        return 404, js, [b'{"error": "unknown model"}']


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this loop; yield its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = _Quiet(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:  # readiness, polled: uvicorn offers no event for it
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if isinstance(app, MockJudge):
            app.release()
        server.should_exit = True
        with anyio.fail_after(10):
            await task
        sock.close()


def endpoint(url: str, model: str, **options: Any) -> JudgeEndpoint:
    """An endpoint of the mock named after its behaviour, with a short timeout by default."""
    options.setdefault("timeout", 5.0)
    return JudgeEndpoint(name=model, url=url + "/v1", model=model, **options)


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real HTTP transport that counts the requests it is sending at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super().handle_async_request(request)
        finally:
            self.in_flight -= 1


class ServerThread:
    """The mock judge served from its own event loop in a thread, for synchronous tests
    (``guardrail check`` runs its own loop)."""

    def __init__(self, app: MockJudge) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None

    def __enter__(self) -> str:
        self._thread.start()
        ready: Future[str] = Future()

        async def run() -> None:
            self._stop = asyncio.Event()
            async with serve(self.app) as url:
                ready.set_result(url)
                await self._stop.wait()

        self._done = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return ready.result(10)

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None and self._done is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._done.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
