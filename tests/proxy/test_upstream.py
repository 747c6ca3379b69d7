"""The upstream seam's pure parts: URL joining, header filtering, bounded decoding."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from guardrail.config.settings import Settings, Timeouts
from guardrail.proxy.respond import client_headers
from guardrail.proxy.upstream import (
    TooLarge,
    Undecodable,
    UnsafeTarget,
    build_client,
    decode_body,
    join_path,
    request_headers,
    response_headers,
    target_url,
)


@pytest.mark.parametrize(
    ("base", "path", "joined"),
    [
        ("", "/v1/models", "/v1/models"),
        ("", "/", "/"),
        ("/v1", "/v1/chat/completions", "/v1/chat/completions"),
        ("/v1", "/chat/completions", "/v1/chat/completions"),
        ("/v1", "/v1", "/v1"),
        ("/v1", "/v1/", "/v1/"),
        ("/openai/v1", "/v1/models", "/openai/v1/models"),
        ("/openai/v1", "/openai/v1/models", "/openai/v1/models"),
        ("/openai/v1", "/models", "/openai/v1/models"),
        ("/api", "/v1/x", "/api/v1/x"),
        ("/a/b", "/b/a/x", "/a/b/a/x"),
    ],
)
def test_join_path(base: str, path: str, joined: str) -> None:
    assert join_path(base, path) == joined


def test_target_url_keeps_query_and_escapes() -> None:
    base = httpx.URL("https://api.test/openai/v1")
    url = target_url(base, b"/v1/files/a%2Fb", b"x=%20y&z=\xc3\xa9")
    assert url.host == "api.test" and url.scheme == "https"
    assert url.raw_path == b"/openai/v1/files/a%2Fb?x=%20y&z=%C3%A9"


@pytest.mark.parametrize(
    "target",
    [
        b"http://evil.test/",
        b"evil.test:443",
        b"*",
        b"",
        b"//evil.test/x",
        b"/a/../b",
        b"/a/%2E%2e/b",
        b"/a/.",
        b"/a\\..\\b",
        b"/a/%0d%0aX: y",
        b"/a/\x00",
    ],
)
def test_unsafe_targets(target: bytes) -> None:
    with pytest.raises(UnsafeTarget):
        target_url(httpx.URL("https://api.test"), target)


def test_request_headers_drop_hop_by_hop_and_named() -> None:
    raw = [
        (b"Host", b"proxy"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Keep-Alive", b"5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"x"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Proxy-Connection", b"x"),
        (b"Expect", b"100-continue"),
        (b"Authorization", b"Bearer k"),
        (b"api-key", b"k"),
        (b"X-Guardrail-Locale", b"en-GB"),
        (b"Cookie", b"a=1"),
    ]
    kept = request_headers(raw, drop=[b"x-guardrail-locale"])
    assert kept == [(b"authorization", b"Bearer k"), (b"api-key", b"k"), (b"cookie", b"a=1")]


def test_response_headers() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"connection", b"close, x-a"),
        (b"x-a", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"a"),
        (b"set-cookie", b"b"),
    ]
    assert response_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a"),
        (b"set-cookie", b"b"),
    ]
    out = client_headers(
        [(b"x-request-id", b"up"), (b"x-guardrail-action", b"forged")],
        "ours",
        [(b"x-guardrail-inspected", b"true")],
    )
    assert out == [
        (b"x-upstream-request-id", b"up"),
        (b"x-guardrail-inspected", b"true"),
        (b"x-request-id", b"ours"),
    ]


def test_decode_body() -> None:
    data = b'{"a": 1}' * 10
    assert decode_body(data, "", 1000) == data
    assert decode_body(gzip.compress(data), "gzip", 1000) == data
    assert decode_body(zlib.compress(data), "deflate", 1000) == data
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(raw_deflate.compress(data) + raw_deflate.flush(), "deflate", 1000) == data
    assert decode_body(gzip.compress(gzip.compress(data)), "gzip, gzip", 1000) == data
    with pytest.raises(TooLarge):
        decode_body(gzip.compress(b"x" * 10_000), "gzip", 1000)
    with pytest.raises(Undecodable):
        decode_body(data, "br", 1000)
    with pytest.raises(Undecodable):
        decode_body(gzip.compress(data)[:-10], "gzip", 1000)  # truncated


def test_build_client_uses_settings_and_no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://corporate-proxy.test:3128")
    settings = Settings(
        upstream="https://x.test",
        timeouts=Timeouts(connect=1, read=2, write=3, pool=4),
        max_connections=7,
    )
    client = build_client(settings)
    assert client.timeout == httpx.Timeout(connect=1, read=2, write=3, pool=4)
    assert client.follow_redirects is False and client.trust_env is False
    client.cookies.extract_cookies(
        httpx.Response(
            200,
            headers={"set-cookie": "a=1; Domain=x.test"},
            request=httpx.Request("GET", "https://x.test/"),
        )
    )
    assert len(client.cookies) == 0  # one user's cookies never stick for another
