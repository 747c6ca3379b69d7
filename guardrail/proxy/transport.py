"""The upstream transport: httpx's interface over aiohttp's connection pool.

``upstream.build_client`` puts this transport behind the one ``httpx.AsyncClient`` the proxy
uses (tests pass ``httpx.MockTransport`` instead). Chosen by measurement (bench/README.md,
"Upstream transport"): httpx's own pool checks every pooled connection on every request and
gets slower, not faster, with 16 concurrent clients; behind the same client, aiohttp's pool
doubled the proxy's throughput there and cut its p99 by three quarters.

Why not the ``httpx-aiohttp`` package as it is: measured against the mock, it
(1) maps "connection refused" to ``httpx.ConnectTimeout``, so guardrail answers 504
``upstream_timeout`` instead of 502 ``upstream_unavailable``; (2) re-quotes the target URL
through yarl (``/a%41`` reaches the upstream as ``/aA``), so the upstream does not get the bytes
``upstream.target_url`` decided on; (3) by default adds ``User-Agent``, ``Accept``,
``Accept-Encoding`` and ``Content-Type`` and keeps a cookie jar shared by all users. This
transport keeps ``build_client``'s guarantees: the URL is sent as encoded, no header is added,
no cookie is stored, no environment proxy is used, bodies stay as the upstream encoded them,
and failures map onto the httpx exceptions guardrail already turns into 502/504.

Everything else stays httpx: the client, ``MockTransport`` in tests, ``upstream.send``.

Timeouts: httpx's ``pool`` becomes aiohttp's ``connect`` (which includes waiting for a pooled
connection), ``connect`` becomes ``sock_connect`` and ``read`` becomes ``sock_read``. aiohttp has
no per-write timeout, so ``timeouts.write`` is not enforced here; ``timeouts.total`` still is,
by the pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict

__all__ = ["AiohttpTransport"]

_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@contextmanager
def _mapped(request: httpx.Request, *, reading: bool) -> Iterator[None]:
    """aiohttp failures as the httpx exceptions ``upstream.upstream_error`` understands."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except TimeoutError as exc:  # sock_read, or aiohttp.ServerTimeoutError
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # malformed response
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        error = httpx.ReadError if reading else httpx.WriteError
        raise error(str(exc) or type(exc).__name__, request=request) from exc
    except ValueError as exc:  # aiohttp refusing a request it cannot put on the wire
        raise httpx.LocalProtocolError(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    """The upstream body as it arrives; closing it frees or drops the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request, reading=True):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool
        else:
            self._response.close()  # partly read: the connection cannot be reused


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the upstream through one lazily created ``aiohttp.ClientSession``."""

    def __init__(self, *, max_connections: int = 256, keepalive_expiry: float = 15.0) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop, on first use
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive,
                ssl=httpx.create_ssl_context(trust_env=False),  # same CA bundle as httpx
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                requote_redirect_url=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            connect=t.get("pool"), sock_connect=t.get("connect"), sock_read=t.get("read")
        )
        headers = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() != b"transfer-encoding"  # aiohttp frames a streamed body itself
        )
        stream = request.stream
        data = b"".join(stream) if isinstance(stream, httpx.ByteStream) else _aiter(stream)
        with _mapped(request, reading=False):
            response = await self._client().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=data or None,
                allow_redirects=False,
                timeout=timeout,
            )
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _aiter(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for chunk in stream:
            yield chunk
    else:
        for chunk in stream:
            yield chunk
