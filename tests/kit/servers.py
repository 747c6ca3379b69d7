"""Real uvicorn servers on loopback for every test folder.

* :func:`live_server`: serve an ASGI app in the test's own event loop (async tests); yields its
  URL and stops it at the end of the block.
* :class:`Background`: one event loop in a thread hosting any number of servers (ASGI apps under
  uvicorn, raw asyncio handlers), so synchronous tests (the SDKs' sync clients, hypothesis,
  subprocesses) can call them over real sockets; all stop at :meth:`Background.close`.
* :class:`ThreadedServer`: one app on a :class:`Background`, as a context manager.

Every server binds a free port on 127.0.0.1 itself (no port is guessed), installs no signal
handlers, sends no ``server`` or ``date`` header, and writes no access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Self, TypeVar

import anyio
import uvicorn

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""A raw connection handler (``asyncio.start_server``'s callback)."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class QuietServer(uvicorn.Server):
    """A uvicorn server for tests: no signal handlers of its own (it may run in a thread)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def _server(app: Any, lifespan: str, **options: Any) -> QuietServer:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan,
                            server_header=False, date_header=False, **options)
    return QuietServer(config)


@contextlib.asynccontextmanager
async def live_server(app: Any, lifespan: str = "auto", timeout: float = 10) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port in this loop; yield its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = _server(app, lifespan)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(timeout):
            while not server.started:
                assert not task.done(), "server did not start"
                await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with anyio.fail_after(timeout):
            await task
        sock.close()


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope: every startup and shutdown message completes."""
    while (message := await receive())["type"] != "lifespan.shutdown":
        await send({"type": message["type"] + ".complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def read_body(receive: Any) -> bytes:
    """The whole request body of an ASGI ``http`` scope."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class Background:
    """One event loop in a thread, hosting every server of a test (or a test module)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._servers: list[tuple[uvicorn.Server, Future[None]]] = []
        self._raw: list[asyncio.AbstractServer] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve_asgi(self, app: Any, lifespan: str = "on", **options: Any) -> str:
        """Serve ``app`` under uvicorn on a free loopback port; its URL. ``options`` go to
        ``uvicorn.Config`` (``http=`` a protocol class, for instance)."""
        sock = socket.create_server(("127.0.0.1", 0))
        server = _server(app, lifespan, **options)
        done = asyncio.run_coroutine_threadsafe(server.serve([sock]), self.loop)
        self._servers.append((server, done))
        deadline = time.monotonic() + 10  # a start-up wait, not an assertion about speed
        while not server.started:
            assert time.monotonic() < deadline and not done.done(), "server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def serve_raw(self, handler: Handler | Any) -> str:
        """Serve a raw connection handler (or an object with a ``handle`` one); its URL."""
        callback = getattr(handler, "handle", handler)

        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(callback, "127.0.0.1", 0)

        server = self.run(start())
        self._raw.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        for server, done in self._servers:
            done.result(10)
        for raw in self._raw:
            self.loop.call_soon_threadsafe(raw.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class ThreadedServer:
    """One app under uvicorn on a :class:`Background` of its own, for ``with`` blocks."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        self.app, self.lifespan = app, lifespan
        self.background: Background | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self.background = Background()
        self.url = self.background.serve_asgi(self.app, self.lifespan)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.background is not None
        self.background.close()
