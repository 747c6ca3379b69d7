"""Helpers of the security tests: raw HTTP/1.1 over a socket (targets and framings no client
library would send), a recording upstream, and ``guardrail serve`` in front of it."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from guardrail.config.settings import DEFAULT_POLICIES
from tests.ops.opskit import Served, ThreadedServer, guardrail_serve


def connect(url: str, timeout: float = 10.0, source: str | None = None) -> socket.socket:
    """A TCP connection to ``url``'s host and port (from ``source`` address if given)."""
    parts = urlsplit(url)
    address = (source, 0) if source else None
    return socket.create_connection((parts.hostname, parts.port), timeout, address)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after data counts as a close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def exchange(url: str, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` bytes on a fresh connection and parse the one response to them."""
    with connect(url, timeout) as sock:
        sock.sendall(raw)
        data = read_all(sock)
    return parse(data)


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    status_line, _, rest = data.partition(b"\r\n")
    block, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def request(method: str, target: str, body: bytes = b"", **headers: str) -> bytes:
    """A request with ``Connection: close`` and a Content-Length (unless headers set framing)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: proxy.test", "Connection: close"]
    if "transfer_encoding" not in headers and "content_length" not in headers:
        headers["content_length"] = str(len(body))
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


class Recorder:
    """An upstream that records every request that reached it, whole (path and body size),
    and answers a Chat Completions reply (or ``{"ok": true}`` on other paths)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        self.seen.append((request.method, scope["raw_path"].decode("latin-1"), len(body)))
        if request.url.path.endswith("/chat/completions"):
            message = {"role": "assistant", "content": "Thanks for telling me."}
            reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                     "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            await JSONResponse(reply)(scope, receive, send)
            return
        await JSONResponse({"ok": True})(scope, receive, send)


@contextlib.contextmanager
def served(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Served, Recorder]]:
    """``guardrail serve`` (default pack) in front of a :class:`Recorder` upstream."""
    recorder = Recorder()
    with ThreadedServer(recorder) as upstream:
        with guardrail_serve(tmp_path, upstream.url, DEFAULT_POLICIES, env=env) as proc:
            yield proc, recorder
