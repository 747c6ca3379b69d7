"""The one seam to the upstream API: client construction, target URLs, headers, errors.

What goes back to the client (``Relay``, ``Buffered``, its headers) is :mod:`guardrail.proxy.respond`.

Only :func:`build_client` creates an ``httpx.AsyncClient``; behind it sits aiohttp's connection
pool (:mod:`guardrail.proxy.transport`, chosen by measurement), and tests pass ``transport=`` (an
``httpx.MockTransport``).

Target URL rule (no open proxy)
    The upstream scheme, host and port come only from settings. The request's path is joined onto
    the configured base path; if the request path begins with the last segment(s) of the base path,
    those segments are not repeated (longest overlap wins). With base ``https://host/openai/v1``:
    ``/v1/chat/completions`` and ``/chat/completions`` both go to
    ``https://host/openai/v1/chat/completions``; with base ``https://api.openai.com``,
    ``/v1/models`` goes to ``https://api.openai.com/v1/models``. The query string is appended
    unchanged. Refused with 400 (:class:`UnsafeTarget`): a target that is not origin-form
    (``http://evil.com/...``, ``evil.com:443``, ``*``), a path starting with ``//``, a ``.`` or
    ``..`` segment (also percent-encoded or with backslashes), and control characters.

Headers (RFC 9110 section 7.6.1)
    Hop-by-hop headers are dropped in both directions: ``Connection`` and every header it names,
    ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``. ``Host``
    is the upstream's. ``Expect`` is answered by our server, not forwarded. Everything else,
    including ``Authorization``, ``api-key`` and ``Cookie``, passes untouched, and no header is
    added (no ``User-Agent``, no ``X-Forwarded-For``: the client's address is not disclosed).
"""

from __future__ import annotations

import functools
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx

from guardrail.formats.codings import TooLarge, Undecodable, decode_body
from guardrail.errors import (
    RelayAborted,
    UnsafeTarget,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from guardrail.config.settings import Settings
from guardrail.proxy.transport import AiohttpTransport

__all__ = [
    "HOP_BY_HOP",
    "RelayAborted",
    "TooLarge",
    "Undecodable",
    "UnsafeTarget",
    "build_client",
    "check_path",
    "decode_body",
    "join_path",
    "read_capped",
    "request_headers",
    "response_headers",
    "send",
    "target_url",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
_NOT_FORWARDED = frozenset({b"host", b"expect"})


def build_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """Build the shared upstream client: settings' timeouts and limits, nothing implicit.

    The transport is :class:`guardrail.proxy.transport.AiohttpTransport` (aiohttp's connection pool,
    chosen by measurement) unless one is given; tests give an ``httpx.MockTransport``. No
    environment proxies or ``.netrc`` (``trust_env=False``), no redirects followed (a 3xx goes
    back to the client), and no cookie ever stored, so one user's cookies never reach another.
    Requests are sent with :func:`send`, which adds no default headers.
    """
    t = settings.timeouts
    if transport is None:
        transport = AiohttpTransport(max_connections=settings.max_connections)
    return UpstreamClient(
        transport=transport,  # the connection limit lives in the transport
        timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=_RefuseCookies()),
    )


class UpstreamClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose ``send`` hands the request straight to its transport.

    The proxy's upstream requests need none of the client's per-request machinery: no auth
    flow, no redirects (never followed), no cookie extraction (never stored), no event hooks.
    Skipping it saves about a tenth of the proxy's own time per request (bench/README.md). The
    request's timeouts are still the client's, and everything else (``get``, ``stream``,
    ``aclose``, the transport seam) is httpx's.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._direct = transport

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = None,
        follow_redirects: Any = None,
    ) -> httpx.Response:
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request.extensions.setdefault("timeout", self.timeout.as_dict())
        response = await self._direct.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


class _RefuseCookies(DefaultCookiePolicy):
    """The upstream client is shared by all users: it must never store a Set-Cookie."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


# --------------------------------------------------------------------------- target URL

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def check_path(raw_path: bytes) -> None:
    """Raise UnsafeTarget for a request path that could leave the upstream (see module doc)."""
    if not raw_path.startswith(b"/"):
        raise UnsafeTarget("request target must be a path starting with '/'")
    if raw_path.startswith(b"//"):
        raise UnsafeTarget("request path must not start with '//'")
    decoded = unquote_to_bytes(raw_path)
    if _CONTROL.search(raw_path) or _CONTROL.search(decoded):
        raise UnsafeTarget("request path must not contain control characters")
    segments = re.split(rb"[/\\]", decoded)
    if any(segment.split(b";", 1)[0] in (b".", b"..") for segment in segments):
        raise UnsafeTarget("request path must not contain '.' or '..' segments")


def _escape(raw: bytes) -> str:
    """ASCII form of a raw target: existing %XX kept, other non-printable bytes percent-encoded."""
    return "".join(chr(b) if 0x20 < b < 0x7F else f"%{b:02X}" for b in raw)


def join_path(base_path: str, request_path: str) -> str:
    """Join a request path onto the base path without repeating their overlap (see module doc)."""
    base = [segment for segment in base_path.split("/") if segment]
    rest = request_path.split("/")[1:]
    for n in range(min(len(base), len(rest)), 0, -1):
        if base[-n:] == rest[:n]:
            rest = rest[n:]
            break
    return "/" + "/".join(base + rest)


def target_url(base: httpx.URL, raw_path: bytes, query: bytes = b"") -> httpx.URL:
    """The upstream URL for a client request target; raises UnsafeTarget for refused targets.

    Short targets are remembered (a chat API sees a handful of paths; building an httpx.URL
    costs about 30 us), at most :data:`_CACHED_TARGETS` of them; refusals are not remembered.
    """
    if len(raw_path) + len(query) <= _CACHEABLE_TARGET:
        return _cached_target(base, raw_path, query)
    return _target(base, raw_path, query)


_CACHED_TARGETS = 512
_CACHEABLE_TARGET = 512


@functools.lru_cache(maxsize=_CACHED_TARGETS)
def _cached_target(base: httpx.URL, raw_path: bytes, query: bytes) -> httpx.URL:
    return _target(base, raw_path, query)


def _target(base: httpx.URL, raw_path: bytes, query: bytes) -> httpx.URL:
    check_path(raw_path)
    path = join_path(base.raw_path.decode("ascii").split("?")[0], _escape(raw_path))
    raw = path + ("?" + _escape(query) if query else "")
    return base.copy_with(raw_path=raw.encode("ascii"))


# --------------------------------------------------------------------------- headers


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _is_hop_by_hop(name: bytes, named: frozenset[bytes]) -> bool:
    return name in HOP_BY_HOP or name in named or name.startswith(b"proxy-")


def request_headers(raw: Iterable[tuple[bytes, bytes]], *, drop: Iterable[bytes] = ()) -> Headers:
    """Client request headers to forward: hop-by-hop, Host, Expect and ``drop`` removed."""
    items = [(name.lower(), value) for name, value in raw]
    named = _connection_named(items)
    dropped = _NOT_FORWARDED | {name.lower() for name in drop}
    return [(n, v) for n, v in items if not _is_hop_by_hop(n, named) and n not in dropped]


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Upstream response headers to return: hop-by-hop removed, everything else in order."""
    items = [(name.lower(), value) for name, value in raw]
    named = _connection_named(items)
    return [(n, v) for n, v in items if not _is_hop_by_hop(n, named)]


# --------------------------------------------------------------------------- exchange


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    headers: Headers,
    content: bytes | AsyncIterator[bytes] | None,
) -> httpx.Response:
    """Send one request and return the response with its body not yet read.

    Builds the request directly (the client's default headers are not merged in). Raises
    UpstreamUnavailable or UpstreamTimeout instead of httpx's exceptions; the caller must close
    the response (``aclose``).
    """
    request = httpx.Request(method, url, headers=headers, content=content)
    try:
        return await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise upstream_error(exc) from exc


def upstream_error(exc: httpx.HTTPError) -> UpstreamError:
    """The guardrail error for an httpx failure; its message names only the failure kind, its
    ``host`` and ``cause`` say where it went and what went wrong (for the log line)."""
    try:
        host: str | None = exc.request.url.host
    except RuntimeError:  # an error raised without its request
        host = None
    cause = failure_cause(exc)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})", host=host, cause=cause)
    message = f"upstream unreachable ({type(exc).__name__})"
    return UpstreamUnavailable(message, host=host, cause=cause)


_TIMEOUTS: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectTimeout, "connect-timeout"),
    (httpx.ReadTimeout, "read-timeout"),
    (httpx.WriteTimeout, "write-timeout"),
    (httpx.PoolTimeout, "pool-timeout"),
)
_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (socket.gaierror, "dns"),
    (ssl.SSLError, "tls"),
    (ssl.CertificateError, "tls"),
    (ConnectionRefusedError, "refused"),
    (ConnectionResetError, "reset"),
    (ConnectionAbortedError, "reset"),
    (TimeoutError, "timeout"),
)


def failure_cause(exc: BaseException) -> str:
    """One word for why an upstream call failed, read from the exception and what it wraps."""
    for timeout, name in _TIMEOUTS:
        if isinstance(exc, timeout):
            return name
    seen: set[int] = set()
    inner: BaseException | None = exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        for kind, cause in _CAUSES:
            if isinstance(inner, kind):
                return cause
        if "ssl" in type(inner).__name__.lower() or "certificate" in type(inner).__name__.lower():
            return "tls"  # aiohttp's ClientSSLError and ClientConnectorCertificateError
        if type(inner).__name__ == "ClientConnectorDNSError":
            return "dns"
        inner = inner.__cause__ or inner.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "network"


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """Read raw (still encoded) body chunks until the end or until more than ``limit`` bytes.

    Returns the chunks read and whether the body is complete. After an incomplete read the rest
    is still in ``chunks``, so the caller can relay the whole body unchanged.
    """
    read: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            read.append(chunk)
            size += len(chunk)
            if size > limit:
                return read, False
    except httpx.HTTPError as exc:
        raise upstream_error(exc) from exc
    return read, True
