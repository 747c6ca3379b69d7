"""A stream in a content coding guardrail cannot undo (issue 11, defect 11).

An upstream (or a misconfigured gateway in front of it) answers a streamed chat request with
``Content-Encoding: br`` although guardrail asked for ``identity``. Read as plain event bytes the
stream was garbage: its text was lost, the coding header dropped, and the reply still marked
inspected. Now such a stream passes through byte for byte, coding header kept, marked
``x-guardrail-inspected: false`` with ``x-guardrail-reason: encoding``, and is counted in
``guardrail_not_inspected_total{reason="encoding"}``. A gzip stream is still guarded.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator

import httpx
import pytest
import structlog

from tests.kit.wire import CHAT, OLLAMA, PATHS, STREAMS


from ._streamkit import Proxy, counted, eventually, request_body, running

TEXT = "You are absolutely right. Tea helps."


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    with running() as proxy:
        yield proxy


def raw_post(proxy: Proxy, api: str) -> tuple[httpx.Response, bytes]:
    """POST through the proxy; the response and its body exactly as sent (not decoded)."""
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        with client.stream("POST", PATHS[api], json=request_body(api)) as response:
            return response, b"".join(response.iter_raw())


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br", "x-unknown"])
@pytest.mark.parametrize("api", [CHAT, OLLAMA])
def test_an_undecodable_stream_passes_byte_for_byte_marked(
    proxy: Proxy, api: str, coding: str
) -> None:
    """The stream's bytes (opaque: compressed data guardrail cannot read) reach the client
    unchanged, with their coding, marked not inspected for ``encoding``, and counted."""
    body = os.urandom(3000) + b"".join(STREAMS[api](TEXT))
    proxy.send(api, [body[:1000], body[1000:]], **{"content-encoding": coding})
    before = counted("guardrail_not_inspected_total", api=api, reason="encoding")
    with structlog.testing.capture_logs() as logs:
        response, raw = raw_post(proxy, api)
        eventually(
            lambda: counted("guardrail_not_inspected_total", api=api, reason="encoding") > before
        )
    assert raw == body
    assert response.headers["content-encoding"] == coding
    assert response.headers["x-guardrail-inspected"] == "false"
    assert response.headers["x-guardrail-reason"] == "encoding"
    [line] = [e for e in logs if e.get("event") == "request"]
    assert line["inspected"] is False and line["reason"] == "encoding"


def test_a_gzip_stream_is_still_guarded(proxy: Proxy) -> None:
    """gzip is undone as the stream arrives: the text is guarded, the coding header dropped."""
    body = gzip.compress(b"".join(STREAMS[CHAT](TEXT)))
    proxy.send(CHAT, [body[:40], body[40:]], **{"content-encoding": "gzip"})
    response, raw = raw_post(proxy, CHAT)
    assert response.headers["x-guardrail-inspected"] == "true"
    assert "content-encoding" not in response.headers
    assert b"REFERRAL" in raw and b"absolutely right" not in raw  # rewritten, referral appended
