"""Clients for every test folder: an ASGI caller with a hand-made scope, raw HTTP/1.1 over a
socket (targets and framings no client library would send), and the official SDKs reading a
canned body through a mock transport.

The ASGI caller keeps every message the app sent, in order; the raw-socket helpers send exactly
the bytes given; the SDK clients never retry, so what they parse is what they were given.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anthropic
import anyio
import httpx2
import openai

from .wire import SSE

# --------------------------------------------------------------------------- the ASGI caller


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
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.start["headers"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}

    @property
    def bodies(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_call(
    app: Any,
    method: str,
    raw_path: bytes,
    headers: Sequence[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    query: bytes = b"",
    timeout: float = 10,
) -> Sent:
    """Call an ASGI app with a hand-made scope (raw targets no HTTP client would send); the app
    is stopped once it returns, so a reply that never ends fails the test after ``timeout``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(headers or [(b"host", b"proxy.test")]),
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8787),
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

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as group:

            async def run() -> None:
                await app(scope, receive, send)
                group.cancel_scope.cancel()

            group.start_soon(run)
    return Sent(sent)


async def asgi_post(
    app: Any, path: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Sent:
    """POST a JSON ``body`` to ``app`` (host ``app.test``), with ``headers`` added."""
    base = [(b"host", b"app.test"), (b"content-type", b"application/json")]
    return await asgi_call(app, "POST", path.encode(), [*base, *headers], body)


# --------------------------------------------------------------------------- raw sockets


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
    """Status, headers (lower-cased names) and body of one raw HTTP/1.1 response."""
    status_line, _, rest = data.partition(b"\r\n")
    block, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def request(
    method: str, target: str, body: bytes = b"", host: str = "proxy.test", **headers: str
) -> bytes:
    """A request with ``Connection: close`` and a Content-Length (unless headers set framing)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
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


# --------------------------------------------------------------------------- SDK clients


def _transport(body: bytes, content_type: str) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return httpx2.MockTransport(handler)


def openai_client(body: bytes, content_type: str = SSE) -> openai.OpenAI:
    """The openai SDK, answered ``body`` for every request."""
    http = httpx2.Client(transport=_transport(body, content_type))
    return openai.OpenAI(api_key="test", base_url="http://upstream.test/v1", http_client=http,
                         max_retries=0)


def anthropic_client(body: bytes, content_type: str = SSE) -> anthropic.Anthropic:
    """The anthropic SDK, answered ``body`` for every request."""
    http = httpx2.Client(transport=_transport(body, content_type))
    return anthropic.Anthropic(api_key="test", base_url="http://upstream.test", http_client=http,
                               max_retries=0)
