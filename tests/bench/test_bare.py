"""The bare pass-through of issue 12 (bench/bare.py): started as ``bench.run`` starts it, in
front of the mock upstream, it answers whole and streamed replies with the upstream's content,
every JSON body parsed and re-serialised, and forwards requests to the path guardrail would.

No timing is asserted: the bounds (guardrail against this target) live in bench/README.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import httpx
import pytest

from bench.bare import reserialised, reserialised_event
from bench.procs import Proc, free_port, proxy_command, start
from bench.texts import REPLIES, chat_body, pad_reply
from guardrail.formats.sse import SSEDecoder, SSEEvent


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Proc, Proc]]:
    mport = free_port()
    mock_cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(mport), "--script", "0"]
    mock = start("mock", [*mock_cmd, "--reply-bytes", "400"], mport, cpu=None)
    try:
        port = free_port()
        bare = start("bare", proxy_command(sys.executable, "bare", mock.url, port), port, cpu=None)
        try:
            yield mock, bare
        finally:
            bare.stop()
    finally:
        mock.stop()


def test_whole_reply_is_the_upstreams_reserialised(servers: tuple[Proc, Proc]) -> None:
    mock, bare = servers
    body = chat_body("Can you help me plan meals?", stream=False, turns=3)
    with httpx.Client(timeout=10) as client:
        direct = client.post(mock.url + "/v1/chat/completions", json=body)
        through = client.post(bare.url + "/v1/chat/completions", json=body)
    assert through.status_code == 200
    assert through.json() == direct.json()
    assert through.json()["choices"][0]["message"]["content"] == pad_reply(REPLIES[0].text, 400)
    # re-serialised compactly, with a Content-Length that fits the new bytes
    assert through.content == json.dumps(direct.json(), separators=(",", ":")).encode()
    assert int(through.headers["content-length"]) == len(through.content)
    assert not any(name.startswith("x-guardrail-") for name in through.headers)


def test_streamed_reply_carries_the_same_events(servers: tuple[Proc, Proc]) -> None:
    mock, bare = servers
    body = chat_body("Can you help me plan meals?", stream=True, turns=3)
    with httpx.Client(timeout=10) as client:
        direct = client.post(mock.url + "/v1/chat/completions", json=body)
        through = client.post(bare.url + "/v1/chat/completions", json=body)
    assert through.status_code == 200
    assert through.headers["content-type"].startswith("text/event-stream")

    def datas(raw: bytes) -> list[object]:
        events = SSEDecoder().feed(raw)
        return [json.loads(e.data) if e.data != "[DONE]" else e.data for e in events if e.data]

    assert datas(through.content) == datas(direct.content)
    assert len(datas(through.content)) > 32  # the role event, 32 text chunks, the end, [DONE]


def test_request_reaches_the_path_guardrail_would_use(servers: tuple[Proc, Proc]) -> None:
    _, bare = servers
    r = httpx.post(bare.url + "/echo/x?y=1", content=b'{"a": 1}', timeout=10)
    assert r.status_code == 200
    assert r.text.startswith("POST /echo/x?y=1 HTTP/1.1")
    assert "content-length: 7" in r.text.lower()  # the body re-serialised: {"a":1}


def test_unsafe_target_is_refused_not_forwarded(servers: tuple[Proc, Proc]) -> None:
    _, bare = servers
    r = httpx.post(bare.url + "/v1/%2e%2e/admin", content=b"{}", timeout=10)
    assert r.status_code == 500  # guardrail's target check raises; the bare app has no 400 page


def test_reserialising_keeps_non_json_bytes_and_events() -> None:
    assert reserialised(b"not json") == b"not json"
    assert reserialised(b'{ "a" : [1, 2] }') == b'{"a":[1,2]}'
    done = SSEEvent(data="[DONE]", raw=b"data: [DONE]\n\n")
    assert reserialised_event(done) == done.raw
    comment = SSEEvent(raw=b": keep-alive\n\n")
    assert reserialised_event(comment) == comment.raw
    event = SSEEvent(event="delta", data='{"t": "x"}', raw=b'event: delta\ndata: {"t": "x"}\n\n')
    assert reserialised_event(event) == b'event: delta\ndata: {"t":"x"}\n\n'
