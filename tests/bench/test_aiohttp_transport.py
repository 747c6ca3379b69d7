"""The recommended aiohttp transport prototype keeps build_client's guarantees (bench/README.md)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from bench.procs import Proc, free_port, start

pytest.importorskip("aiohttp", reason="aiohttp is a benchmark-only dependency today")
from bench.aiohttp_transport import AiohttpTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def mock() -> Iterator[Proc]:
    port = free_port()
    proc = start(
        "mock", [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)], port, cpu=None
    )
    yield proc
    proc.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=4)) as c:
        yield c


async def test_sends_the_target_and_headers_unchanged(
    mock: Proc, client: httpx.AsyncClient
) -> None:
    url = httpx.URL(mock.url).copy_with(raw_path=b"/echo/a%41b%2Fc?q=%41")
    request = httpx.Request("POST", url, headers=[(b"x-probe", b"1")], content=b"{}")
    response = await client.send(request)
    head = response.text.split("\r\n")
    assert head[0] == "POST /echo/a%41b%2Fc?q=%41 HTTP/1.1"
    names = {line.split(":", 1)[0].lower() for line in head[1:] if line}
    assert names == {"host", "x-probe", "content-length"}


async def test_streams_a_body_and_frees_the_connection(
    mock: Proc, client: httpx.AsyncClient
) -> None:
    body = b'{"stream": true, "messages": []}'
    for _ in range(3):
        async with client.stream("POST", mock.url + "/v1/chat/completions", content=body) as r:
            chunks = [chunk async for chunk in r.aiter_raw()]
        assert r.status_code == 200
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


async def test_streamed_request_body_is_sent(mock: Proc, client: httpx.AsyncClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"{}"

    request = httpx.Request(
        "POST", mock.url + "/echo", content=pieces(), headers={"content-length": "2"}
    )
    response = await client.send(request)
    assert response.status_code == 200
    assert "content-length: 2" in response.text


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{free_port()}/")
