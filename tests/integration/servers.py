"""Real servers on loopback for the integration tests, all on one background event loop.

* :class:`Background`: a thread running an asyncio loop; servers started on it live until
  :meth:`Background.close`, so synchronous tests (the SDKs' sync clients, hypothesis) can call
  them over real sockets.
* :class:`MockAPI`: an ASGI upstream (served by uvicorn) speaking the four chat APIs, whole and
  streamed. Request headers steer it: ``x-mock-reply`` (the reply text, percent-encoded UTF-8),
  ``x-mock-n``, ``x-mock-extras`` (``logprobs,tools,usage``), ``x-mock-blocks`` (Anthropic text
  blocks), ``x-mock-pace`` (seconds between events), ``x-mock-size`` (repeat the reply to this
  many bytes, generated lazily) and ``x-mock-piece`` (characters per text event).
* :class:`RawUpstream`: a raw asyncio HTTP/1.1 server for what a well-behaved server never does.
  ``x-raw-mode``: ``cuts`` (the stream written as separate TCP writes at the byte offsets in
  ``x-raw-cuts``), ``drop`` (half the stream, then the connection is reset), ``stall`` (half the
  stream, then silence), ``garbage`` (junk lines and text, then a clean end without the
  terminator), ``endless`` (paced events until the client goes away; the time it went is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import unquote

import uvicorn

from .wire import BODIES, MEDIA, MESSAGES, OLLAMA, STREAMS, api_of

T = TypeVar("T")
REPLY = "Hello there. Tea helps."


class _Quiet(uvicorn.Server):
    """No signal handlers of its own (it runs in a thread)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


class Background:
    """One event loop in a thread, hosting every server of a test module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._servers: list[tuple[uvicorn.Server, Future[None]]] = []
        self._raw: list[asyncio.AbstractServer] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve_asgi(self, app: Any) -> str:
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                server_header=False, date_header=False)
        server = _Quiet(config)
        done = asyncio.run_coroutine_threadsafe(server.serve([sock]), self.loop)
        self._servers.append((server, done))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and not done.done(), "server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def serve_raw(self, upstream: RawUpstream) -> str:
        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(upstream.handle, "127.0.0.1", 0)

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


# --------------------------------------------------------------------------- the ASGI mock


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _reply_text(headers: dict[str, str]) -> str:
    text = unquote(headers.get("x-mock-reply", "")) or REPLY
    size = int(headers.get("x-mock-size", "0"))
    if size > len(text):
        text = (text + " ") * (size // (len(text) + 1) + 1)
    return text


def stream_for(api: str, text: str, headers: dict[str, str]) -> Iterator[bytes]:
    """The upstream stream of ``api`` the headers ask for."""
    opts: dict[str, Any] = {"size": int(headers.get("x-mock-piece", "7"))}
    extras = set(filter(None, headers.get("x-mock-extras", "").split(",")))
    if api == "openai.chat":
        opts.update(n=int(headers.get("x-mock-n", "1")), logprobs="logprobs" in extras,
                    tools="tools" in extras, usage="usage" in extras)
    if api == MESSAGES:
        opts["blocks"] = int(headers.get("x-mock-blocks", "1"))
    return STREAMS[api](text, **opts)



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

class MockAPI:
    """The four chat APIs, scripted by request headers (see the module docstring)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = _headers(scope)
        self.seen.append((scope["path"], headers, body))
        api = api_of(scope["path"])
        if api is None or scope["method"] != "POST":
            await _send(send, 404, "application/json", [b'{"error": "not found"}'])
            return
        request = json.loads(body)
        text = _reply_text(headers)
        streamed = request.get("stream") is not False if api == OLLAMA else bool(
            request.get("stream")
        )
        if not streamed:
            n = int(headers.get("x-mock-n", "1"))
            whole = BODIES[api](text, n) if api == "openai.chat" else BODIES[api](text)
            await _send(send, 200, "application/json", [json.dumps(whole).encode()])
            return
        pace = float(headers.get("x-mock-pace", "0"))
        await _send(send, 200, MEDIA[api], _paced(stream_for(api, text, headers), pace))


async def _paced(chunks: Iterator[bytes], pace: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pace:
            await asyncio.sleep(pace)
        yield chunk


async def _send(send: Any, status: int, media: str, chunks: Any) -> None:
    headers = [(b"content-type", media.encode()), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if isinstance(chunks, list):
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    else:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# --------------------------------------------------------------------------- the raw server


class RawUpstream:
    """A minimal HTTP/1.1 server that misbehaves on request (see the module docstring)."""

    def __init__(self) -> None:
        self.disconnected: list[float] = []  # when an ``endless`` client went away
        self.writes: list[int] = []  # number of TCP writes of the last ``cuts`` reply
        self._ids = itertools.count()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            await self._answer(path, headers, json.loads(body or b"{}"), reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, headers: dict[str, str], request: dict[str, Any],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        api = api_of(path) or "openai.chat"
        mode = headers.get("x-raw-mode", "cuts")
        data = b"".join(stream_for(api, _reply_text(headers), headers))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + MEDIA[api].encode()
                     + b"\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        if mode == "cuts":
            cuts = sorted({int(c) % (len(data) + 1) for c in
                           headers.get("x-raw-cuts", "").split(",") if c})
            bounds = [0, *cuts, len(data)]
            parts = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
            self.writes.append(len(parts))
            for part in parts:
                writer.write(_chunked(part))
                await writer.drain()
                await asyncio.sleep(0.001)  # separate writes, separate segments
            writer.write(b"0\r\n\r\n")
        elif mode in ("drop", "stall"):
            writer.write(_chunked(data[: len(data) // 2]))
            await writer.drain()
            if mode == "drop":
                await asyncio.sleep(0.05)
                writer.transport.abort()  # reset mid-body: no terminating chunk
                return
            await reader.read()  # silence until the proxy gives up and closes
        elif mode == "garbage":
            junk = b"data: {not json\n\n\x00\xff\xfe garbage\n: comment\n\nevent: weird\ndata: 1\n\n"
            writer.write(_chunked(junk + data[: len(data) // 2] + b"\xc3"))
            writer.write(b"0\r\n\r\n")  # a clean end, but the stream has no terminator
        elif mode == "endless":
            await self._endless(data, reader, writer)
        await writer.drain()

    async def _endless(self, data: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        first = data.split(b"\n\n")[0] + b"\n\n"
        more = asyncio.ensure_future(reader.read())
        text = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",' \
               b'"choices":[{"index":0,"delta":{"content":"tick. "},"finish_reason":null}]}\n\n'
        writer.write(_chunked(first))
        while not more.done():
            writer.write(_chunked(text))
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([more], timeout=0.02)
        self.disconnected.append(time.monotonic())


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def quoted(text: str) -> str:
    """``text`` as an ``x-mock-reply`` header value."""
    from urllib.parse import quote

    return quote(text, safe="")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
