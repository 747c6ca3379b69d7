"""The aiohttp transport keeps build_client's guarantees against a real socket server.

The server here is a raw asyncio protocol, so what the transport puts on the wire is seen
byte for byte: the request target as encoded, no header added, bodies as sent.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from guardrail.config.loading import load_settings
from guardrail.proxy.transport import AiohttpTransport
from guardrail.proxy.upstream import build_client

pytestmark = pytest.mark.anyio

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A keep-alive HTTP/1.1 server: ``handler`` gets each request (head + body) and answers.

    Returns the server, its base URL and a list that counts accepted connections.
    """
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                body = b""
                if b"content-length:" in lower:
                    size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(size)
                elif b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        body += (await reader.readexactly(size + 2))[:-2]
                        if size == 0:
                            break
                await handler(head + body, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _echo(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(_answer(request))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=4)) as c:
        yield c


async def test_sends_the_target_and_headers_unchanged(client: httpx.AsyncClient) -> None:
    server, base, _ = await _serve(_echo)
    async with server:
        url = httpx.URL(base).copy_with(raw_path=b"/echo/a%41b%2Fc?q=%41")
        request = httpx.Request("POST", url, headers=[(b"x-probe", b"1")], content=b"{}")
        response = await client.send(request)
    head, _, body = response.content.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /echo/a%41b%2Fc?q=%41 HTTP/1.1"
    names = {line.split(":", 1)[0].lower() for line in lines[1:]}
    assert names == {"host", "x-probe", "content-length"}
    assert body == b"{}"


async def test_a_streamed_request_body_is_sent_whole(client: httpx.AsyncClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b"1}"

    server, base, _ = await _serve(_echo)
    async with server:
        response = await client.send(httpx.Request("POST", base + "/echo", content=pieces()))
    assert response.content.endswith(b'{"a":1}')


async def test_a_read_body_frees_its_connection_for_the_next_request(
    client: httpx.AsyncClient,
) -> None:
    server, base, connections = await _serve(_echo)
    async with server:
        for _ in range(5):
            async with client.stream("POST", base + "/x", content=b"{}") as response:
                assert [c async for c in response.aiter_raw()]
    assert len(connections) == 1


async def test_bodies_stay_as_the_upstream_encoded_them(client: httpx.AsyncClient) -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def gzipped(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(packed, b"content-encoding: gzip", b"set-cookie: s=1"))

    server, base, _ = await _serve(gzipped)
    async with server, client.stream("GET", base + "/") as response:
        raw = b"".join([c async for c in response.aiter_raw()])
    assert raw == packed
    assert response.headers["content-encoding"] == "gzip"


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    server, base, _ = await _serve(_echo)
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await client.get(base + "/")


async def test_a_silent_upstream_is_a_read_timeout() -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    transport = AiohttpTransport()
    timeout = httpx.Timeout(5.0, read=0.2)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        server, base, _ = await _serve(silent)
        async with server:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(base + "/")


@pytest.mark.parametrize(
    ("answer", "errors"),
    [
        # a body cut short: a read error (or a protocol error, as aiohttp sees it)
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
            (httpx.ReadError, httpx.RemoteProtocolError),
        ),
        (b"\x00\x01 not http at all\r\n\r\n", (httpx.HTTPError,)),  # garbage, not a response
    ],
    ids=["cut-short", "garbage"],
)
async def test_a_broken_answer_is_an_httpx_error(
    client: httpx.AsyncClient, answer: bytes, errors: tuple[type[Exception], ...]
) -> None:
    async def broken(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    server, base, _ = await _serve(broken)
    async with server:
        with pytest.raises(errors):
            await client.get(base + "/")


async def test_build_client_uses_it_and_stores_no_cookie() -> None:
    async def cookie(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(request, b"set-cookie: session=secret"))

    settings = load_settings(cli={"upstream": "http://127.0.0.1:1"})
    async with build_client(settings) as client:
        assert isinstance(client._transport, AiohttpTransport)
        server, base, _ = await _serve(cookie)
        async with server:
            await client.get(base + "/")
            second = await client.get(base + "/")
    assert b"cookie" not in second.content.lower().split(b"\r\n\r\n")[0]
    assert not client.cookies
