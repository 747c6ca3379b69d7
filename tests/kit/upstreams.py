"""Mock upstreams for every test folder: what the proxy or the middleware sits in front of.

* :class:`MockAPI`: an ASGI upstream speaking the four chat APIs, whole and streamed. Request
  headers steer it: ``x-mock-reply`` (the reply text, percent-encoded UTF-8), ``x-mock-n``,
  ``x-mock-extras`` (``logprobs,tools,usage``), ``x-mock-blocks`` (Anthropic text blocks),
  ``x-mock-pace`` (seconds between events), ``x-mock-size`` (repeat the reply to this many
  bytes, generated lazily) and ``x-mock-piece`` (characters per text event).
* :class:`RawUpstream`: a raw asyncio HTTP/1.1 server for what a well-behaved server never does.
  ``x-raw-mode``: ``cuts`` (the stream written as separate TCP writes at the byte offsets in
  ``x-raw-cuts``), ``drop`` (half the stream, then the connection is reset), ``stall`` (half the
  stream, then silence), ``garbage`` (junk lines and text, then a clean end without the
  terminator), ``endless`` (paced events until the client goes away; the time it went is kept).
* :func:`chat_app`: a Starlette app whose chat routes answer what the test hands it (the app
  under the middleware).
* :func:`mock_upstream`: an OpenAI-like upstream steered by the last user message.
* :class:`Recorder`: an upstream that records every request that reached it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .servers import lifespan, read_body
from .wire import BODIES, CHAT, MEDIA, MESSAGES, OLLAMA, PATHS, SSE, STREAMS, api_of, chat_stream
from .wire import completion

REPLY = "Hello there. Tea helps."


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
    return quote(text, safe="")


# --------------------------------------------------------------------------- the app under test


@dataclass
class Answer:
    """What :func:`chat_app`'s chat route sends: a body (or a list of stream events) with a
    status and a media type."""

    body: bytes | list[bytes]
    status: int = 200
    media_type: str = "application/json"
    headers: dict[str, str] | None = None


Answerer = Callable[[Request, bytes], Answer]


def chat_app(answer: Answerer, *, paths: Iterable[str] = PATHS.values()) -> Starlette:
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


# --------------------------------------------------------------------------- steered by the user

MOCK_HEADER = "x-mock-upstream"


async def mock_upstream(scope: Any, receive: Any, send: Any) -> None:
    """An OpenAI-like upstream driven by the last user message.

    ``reply: TEXT`` -> the assistant reply is TEXT; ``upstream-fail`` -> a 500 whose error body
    repeats the user's message; ``stream: true`` in the request -> the reply as SSE, a word per
    event. Any other path answers 200 ``{"mock": path}``. Every answer carries the
    ``x-mock-upstream`` header.
    """
    if scope["type"] != "http":
        return
    request = Request(scope, receive)
    body = await request.body()
    marker = {MOCK_HEADER: "1"}
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        raw = scope.get("raw_path", b"").decode("latin-1")
        response: Response = JSONResponse({"mock": raw}, headers=marker)
        await response(scope, receive, send)
        return
    try:
        data = json.loads(body)
    except ValueError:  # a careless upstream that quotes what it could not parse
        error = {"error": {"message": f"bad JSON: {body.decode(errors='replace')}"}}
        await JSONResponse(error, status_code=400, headers=marker)(scope, receive, send)
        return
    last = next((m["content"] for m in reversed(data["messages"]) if m["role"] == "user"), "")
    if "upstream-fail" in last:
        error = {"error": {"message": f"cannot serve: {last}", "type": "server_error"}}
        response = JSONResponse(error, status_code=500, headers=marker)
    else:
        text = last.split("reply:", 1)[1].strip() if "reply:" in last else "Thanks for sharing."
        if data.get("stream"):
            words = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
            stream = b"".join(chat_stream(words))
            response = Response(stream, media_type=SSE, headers=marker)
        else:
            response = JSONResponse(completion(text), headers=marker)
    await response(scope, receive, send)


# --------------------------------------------------------------------------- recording


class Recorder:
    """An upstream that records every request that reached it, whole (method, raw path, body
    size), and answers a Chat Completions reply (or ``{"ok": true}`` on other paths)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        self.seen.append((request.method, scope["raw_path"].decode("latin-1"), len(body)))
        if request.url.path.endswith(PATHS[CHAT]):
            reply = completion("Thanks for telling me.")
            await JSONResponse(reply)(scope, receive, send)
            return
        await JSONResponse({"ok": True})(scope, receive, send)
