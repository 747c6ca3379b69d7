"""A fast mock LLM API for benchmarks: OpenAI Chat Completions and Anthropic Messages.

    python -m bench.mock_upstream --port 9100 [--reply-bytes 1000] [--chunks 32]
                                  [--ttft-ms 0] [--token-ms 0] [--script N]

Routes: ``POST .../chat/completions`` (OpenAI) and ``POST .../messages`` (Anthropic), each
whole or streamed (``"stream": true`` in the body); ``GET /health``; ``POST /echo`` answers with
the request head it received (to check what a client adds or changes). Replies cycle through
:data:`bench.texts.REPLIES`, about half of which trip the default policies, each padded to
``--reply-bytes``; streams cut them into ``--chunks`` text events. ``--script N`` answers every
request with entry N of that list instead (issue 12 measures one reply the default pack rewrites).

Pacing: with ``--ttft-ms`` / ``--token-ms`` at 0 a stream is written in one go (a CPU-bound
test of whoever reads it); otherwise the first text event waits ``ttft-ms`` and each later one
``token-ms``, like a model generating. A request header ``x-mock-pace: TTFT_MS,TOKEN_MS``
overrides both for that request (proxies forward it, so one mock serves paced and unpaced
benchmarks through the same proxy).

Why so fast: a raw asyncio protocol (uvloop when installed) with a minimal HTTP/1.1 parser, all
responses prebuilt at start-up; per request it finds the end of the head, reads
``Content-Length`` (or de-chunks), looks for ``"stream": true`` and writes prebuilt bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from bench.texts import REPLIES, pad_reply
from bench.wire import LAST_CHUNK, Reply, build_reply, http_response

__all__ = ["MockConfig", "MockProtocol", "build_replies", "main", "serve"]

_STREAM = re.compile(rb'"stream"\s*:\s*true')
_NOT_FOUND = http_response("404 Not Found", "application/json", b'{"error":"not found"}')
_OK = http_response("200 OK", "text/plain", b"ok")


@dataclass(frozen=True)
class MockConfig:
    """How the mock answers: reply size, stream granularity and pacing (milliseconds)."""

    reply_bytes: int = 1000
    chunks: int = 32
    ttft_ms: float = 0.0
    token_ms: float = 0.0
    script: int | None = None


def build_replies(config: MockConfig) -> dict[str, tuple[Reply, ...]]:
    """All scripted replies, per API, prebuilt as response bytes."""
    texts = [pad_reply(script.text, config.reply_bytes) for script in REPLIES]
    return {
        api: tuple(build_reply(api, text, n, config.chunks) for n, text in enumerate(texts))
        for api in ("openai", "anthropic")
    }


class _Request:
    """One parsed request: just what the mock routes on."""

    __slots__ = ("body", "close", "head", "method", "pace", "path")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        head: bytes,
        body: bytes,
        close: bool,
        pace: tuple[float, float] | None,
    ) -> None:
        self.method, self.path, self.head, self.body = method, path, head, body
        self.close, self.pace = close, pace


def _parse(buf: bytearray) -> tuple[_Request, int] | None:
    """The first complete request in ``buf`` and its length, or None if more bytes are needed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].split(b" ", 2)
    length, chunked, close = 0, False, False
    pace: tuple[float, float] | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
        elif name == b"x-mock-pace":
            ttft, _, token = value.partition(b",")
            pace = (float(ttft), float(token or b"0"))
    start = end + 4
    if chunked:
        decoded = _dechunk(buf, start)
        if decoded is None:
            return None
        body, stop = decoded
    else:
        if len(buf) < start + length:
            return None
        body, stop = bytes(buf[start : start + length]), start + length
    return _Request(method, path, head, body, close, pace), stop


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``pos``; None while incomplete. Trailers are skipped."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class MockProtocol(asyncio.Protocol):
    """One client connection; requests are answered in order (pipelining works)."""

    def __init__(self, replies: dict[str, tuple[Reply, ...]], config: MockConfig) -> None:
        self.replies = replies
        self.config = config
        self.counter = itertools.count()
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being written; later requests wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            parsed = _parse(self.buf)
            if parsed is None:
                return
            request, used = parsed
            del self.buf[:used]
            self._answer(request)

    def _answer(self, request: _Request) -> None:
        assert self.transport is not None
        api = _api(request.path)
        if request.method == b"GET" and request.path == b"/health":
            self.transport.write(_OK)
        elif request.method == b"POST" and request.path.startswith(b"/echo"):
            self.transport.write(http_response("200 OK", "text/plain", request.head))
        elif request.method != b"POST" or api is None:
            self.transport.write(_NOT_FOUND)
        else:
            choices = self.replies[api]
            pick = self.config.script
            reply = choices[(next(self.counter) if pick is None else pick) % len(choices)]
            pace = request.pace or (self.config.ttft_ms, self.config.token_ms)
            if not _STREAM.search(request.body):
                self.transport.write(reply.whole)
            elif pace[0] or pace[1]:
                self.busy = True
                loop = asyncio.get_running_loop()
                loop.create_task(self._paced(reply, pace, request.close))
                return
            else:
                self.transport.writelines([reply.head, *reply.events, LAST_CHUNK])
        if request.close:
            self.transport.close()

    async def _paced(self, reply: Reply, pace: tuple[float, float], close: bool) -> None:
        ttft, gap = pace[0] / 1000, pace[1] / 1000
        try:
            for i, event in enumerate((reply.head, *reply.events)):
                if self.transport is None:
                    return
                if i == reply.first_text + 1:
                    await asyncio.sleep(ttft)
                elif i > reply.first_text + 1 and gap:
                    await asyncio.sleep(gap)
                if self.transport is None:
                    return
                self.transport.write(event)
            if self.transport is not None:
                self.transport.write(LAST_CHUNK)
                if close:
                    self.transport.close()
        finally:
            self.busy = False
        self._drain()


def _api(path: bytes) -> str | None:
    path = path.split(b"?", 1)[0]
    if path.endswith(b"/chat/completions"):
        return "openai"
    if path.endswith(b"/messages"):
        return "anthropic"
    return None


async def serve(host: str, port: int, config: MockConfig) -> None:
    """Serve until SIGINT/SIGTERM; prints ``ready <port>`` once listening."""
    loop = asyncio.get_running_loop()
    replies = build_replies(config)
    server = await loop.create_server(
        lambda: MockProtocol(replies, config), host, port, backlog=2048, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _install_uvloop() -> str:
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mock_upstream", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--reply-bytes", type=int, default=MockConfig.reply_bytes)
    parser.add_argument(
        "--chunks", type=int, default=MockConfig.chunks, help="text events per stream"
    )
    parser.add_argument(
        "--ttft-ms", type=float, default=0.0, help="wait before the first text event"
    )
    parser.add_argument("--token-ms", type=float, default=0.0, help="wait between text events")
    parser.add_argument(
        "--script", type=int, default=None, help="always answer with this entry of texts.REPLIES"
    )
    parser.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    args = parser.parse_args(argv)
    if args.loop == "auto":
        _install_uvloop()
    config = MockConfig(args.reply_bytes, args.chunks, args.ttft_ms, args.token_ms, args.script)
    asyncio.run(serve(args.host, args.port, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
