"""Connections are bounded in time and number, and no client can take the whole upstream pool
(issue 11, defects 8 and 9, item 6): idle and slowloris connections are closed after the
header timeout, idle keep-alive connections after the keep-alive timeout, connections over
``max_client_connections`` get 503, on the proxy and the admin listener alike; one client
address gets at most ``max_upstream_per_client`` requests in flight, and streams at most three
quarters of the pool, so a client holding streams does not lock the others out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from guardrail.proxy.app import build_app
from guardrail.errors import ConfigError
from guardrail.observe.metrics import REGISTRY
from guardrail.policy import load_policies
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings

from tests.kit.clients import closed_within, connect, exchange, parse, read_all, request
from tests.kit.paths import PROXY_FIXTURES
from tests.kit.proxyapp import UPSTREAM, reply
from tests.kit.serve import Served, served
from tests.kit.wire import chat_request, completion


LIMITS = {
    "GUARDRAIL_HEADER_TIMEOUT": "1",
    "GUARDRAIL_KEEPALIVE_TIMEOUT": "1",
    "GUARDRAIL_MAX_CLIENT_CONNECTIONS": "40",
}


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("guardrail_refused_total", {"reason": reason}) or 0.0


def scraped(proc: Served, reason: str) -> float:
    text = httpx.get(f"{proc.admin}/metrics", timeout=10).text
    line = f'guardrail_refused_total{{reason="{reason}"}}'
    return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("limited"), LIMITS) as (proc, _):
        yield proc


@pytest.mark.slow
@pytest.mark.subprocess
def test_idle_and_dribbling_connections_are_closed_after_the_header_timeout(
    limited: Served,
) -> None:
    """Attack: slowloris. Many connections that send nothing, and request heads dribbled a
    byte at a time, each hold a socket forever (the review had 2,000 idle and 1,000 dribbling
    connections all open after 60 s). With ``header_timeout`` 1 s, every one is closed within
    a few seconds (a partial head with 408), and an honest client is still served."""
    idle = [connect(limited.proxy) for _ in range(20)]
    dribbling = [connect(limited.proxy) for _ in range(10)]
    stalled = connect(limited.proxy)
    head = request("GET", "/v1/models")
    stalled.sendall(head[:12])
    cut = dribble(dribbling, head, seconds=3)  # one byte each every 0.25 s, never a whole head
    assert len(cut) == len(dribbling)  # the proxy cut every one off while it was dribbling
    for sock in idle + dribbling:
        closed, sent = closed_within(sock, 3)
        assert closed and (sent == b"" or sent.startswith(b"HTTP/1.1 408 ")), sent[:40]
    closed, sent = closed_within(stalled, 3)
    assert closed and sent.startswith(b"HTTP/1.1 408 "), sent[:40]
    assert json.loads(parse(sent)[2])["error"]["code"] == "header_timeout"
    for sock in [*idle, *dribbling, stalled]:
        sock.close()
    assert exchange(limited.proxy, head)[0] == 200
    assert scraped(limited, "header_timeout") >= 31


def dribble(socks: list[socket.socket], data: bytes, seconds: float) -> set[int]:
    """Send ``data`` one byte per socket every 0.25 s for ``seconds``; the sockets the server
    closed meanwhile (by index)."""
    cut: set[int] = set()
    for step in range(int(seconds / 0.25)):
        for index, sock in enumerate(socks):
            if index not in cut:
                try:
                    sock.sendall(data[step : step + 1])
                except OSError:
                    cut.add(index)
        time.sleep(0.25)
    return cut


@pytest.mark.slow
@pytest.mark.subprocess
def test_idle_keepalive_connections_are_closed(limited: Served) -> None:
    """Bad luck or attack: a client keeps its connection after a response and goes quiet, or
    dribbles its next head. ``keepalive_timeout`` closes the quiet one, ``header_timeout`` the
    dribbling one."""
    keep = request("GET", "/v1/models").replace(b"Connection: close", b"Connection: keep-alive")
    quiet, slow = connect(limited.proxy), connect(limited.proxy)
    for sock in (quiet, slow):
        sock.sendall(keep)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert dribble([slow], keep, seconds=3) == {0}  # cut off while dribbling its next head
    assert closed_within(quiet, 3)[0]
    assert closed_within(slow, 3)[0]


@pytest.mark.slow
@pytest.mark.subprocess
def test_connections_over_the_cap_get_503_and_slots_come_back(tmp_path: Path) -> None:
    """Attack: open more connections than the proxy can hold (file descriptors, memory). Over
    ``max_client_connections`` a new connection is answered 503 with ``Retry-After`` and an
    error body at once and closed; the connections already open keep working, and a slot
    freed is a slot the next client gets."""
    env = {"GUARDRAIL_MAX_CLIENT_CONNECTIONS": "5", "GUARDRAIL_HEADER_TIMEOUT": "30"}
    with served(tmp_path, env) as (proc, _):
        held = [connect(proc.proxy) for _ in range(5)]
        time.sleep(0.3)
        status, headers, body = exchange(proc.proxy, request("GET", "/v1/models"))
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "connections_full"
        held[0].sendall(request("GET", "/v1/models"))
        assert parse(read_all(held[0]))[0] == 200  # an open connection is still served
        time.sleep(0.3)
        assert exchange(proc.proxy, request("GET", "/v1/models"))[0] == 200
        assert scraped(proc, "connections_full") == 1
        for sock in held:
            sock.close()


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_admin_listener_has_the_same_protection(limited: Served) -> None:
    """Attack: slowloris against the admin listener (metrics, reload): idle and partial heads
    are closed there too."""
    idle = connect(limited.admin)
    partial = connect(limited.admin)
    partial.sendall(b"GET /metr")
    assert closed_within(idle, 4)[0]
    closed, sent = closed_within(partial, 4)
    assert closed and sent.startswith(b"HTTP/1.1 408 ")
    assert httpx.get(f"{limited.admin}/-/healthy", timeout=5).status_code == 200


# --------------------------------------------------------------------------- the upstream pool


class SlowUpstream:
    """An upstream whose streams and whole replies wait until :attr:`go` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        if json.loads(await request.aread()).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_Held(self.go))
        await self.go.wait()
        return reply(body=completion("Hello."))


class _Held(httpx.AsyncByteStream):
    def __init__(self, go: asyncio.Event) -> None:
        self.go = go

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",' \
              b'"choices":[{"index":0,"delta":{"content":"Hi."},"finish_reason":null}]}\n\n'
        await self.go.wait()
        yield b"data: [DONE]\n\n"


def _client(app: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://proxy.test", timeout=10)


@pytest.mark.slow
@pytest.mark.anyio
async def test_one_client_cannot_take_the_whole_upstream_pool() -> None:
    """Attack: one client opens stream after stream to a slow upstream until the shared
    upstream pool is gone (the review: 256 streams locked everyone out). With a pool of 8, a
    client address gets 2 requests in flight (a quarter), the third gets 429 with
    ``Retry-After`` in its API's format; streams together get 6 (three quarters), the next
    stream gets 503; another client's whole request still goes through throughout, and every
    slot comes back when the streams end."""
    policies = load_policies(PROXY_FIXTURES / "policies")
    upstream = SlowUpstream()
    settings = Settings(upstream=UPSTREAM, policies=PROXY_FIXTURES / "policies", max_connections=8,
                        max_upstream_per_client=2)
    app = build_app(settings, policies, transport=httpx.MockTransport(upstream))
    stream = chat_request("I feel alone.", stream=True)
    clients = {name: _client(app, f"10.0.0.{n}") for n, name in enumerate("abcde", 1)}
    before = (refused("client_busy"), refused("streams_busy"))
    async with anyio.create_task_group() as group:
        for name in "abc":
            for _ in range(2):
                group.start_soon(functools.partial(clients[name].post, "/v1/chat/completions",
                                                   json=stream))
        with anyio.fail_after(5):
            while upstream.started < 6:
                await anyio.sleep(0.01)
        busy = await clients["a"].post("/v1/messages", json={
            "model": "m", "max_tokens": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["type"] == "error"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        full = await clients["d"].post("/v1/chat/completions", json=stream)
        assert full.status_code == 503 and full.json()["error"]["code"] == "streams_busy"
        whole = functools.partial(clients["e"].post, "/v1/chat/completions",
                                  json=chat_request("Hello"))
        group.start_soon(whole)  # a whole request from another client is not starved
        with anyio.fail_after(5):
            while upstream.started < 7:
                await anyio.sleep(0.01)
        upstream.go.set()
    after = await clients["a"].post("/v1/chat/completions", json=stream)
    assert after.status_code == 200  # every slot came back
    assert (refused("client_busy"), refused("streams_busy")) == (before[0] + 1, before[1] + 1)
    assert (app.state.pipeline.gate.streams, app.state.pipeline.gate.others) == (0, 0)
    for client in clients.values():
        await client.aclose()
    await app.state.client.aclose()


@pytest.mark.anyio
async def test_whole_requests_cannot_starve_streams() -> None:
    """Bad luck or attack, the other way round: slow whole requests from many clients fill the
    pool. They get three quarters of it at most (the next gets 503 ``requests_busy``), so a
    stream still finds a connection."""
    policies = load_policies(PROXY_FIXTURES / "policies")
    upstream = SlowUpstream()
    settings = Settings(upstream=UPSTREAM, policies=PROXY_FIXTURES / "policies", max_connections=8,
                        max_upstream_per_client=2)
    app = build_app(settings, policies, transport=httpx.MockTransport(upstream))
    clients = {name: _client(app, f"10.0.1.{n}") for n, name in enumerate("abcde", 1)}
    whole = chat_request("Hello")
    before = refused("requests_busy")
    async with anyio.create_task_group() as group:
        for name in "abc":
            for _ in range(2):
                group.start_soon(functools.partial(clients[name].post, "/v1/chat/completions",
                                                   json=whole))
        with anyio.fail_after(5):
            while upstream.started < 6:
                await anyio.sleep(0.01)
        busy = await clients["d"].post("/api/chat", json={
            "model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "request slots" in busy.json()["error"]  # Ollama's format: a string
        stream = functools.partial(clients["e"].post, "/v1/chat/completions",
                                   json=chat_request("Hello", stream=True))
        group.start_soon(stream)  # a stream still finds a connection
        with anyio.fail_after(5):
            while upstream.started < 7:
                await anyio.sleep(0.01)
        upstream.go.set()
    assert refused("requests_busy") == before + 1
    assert (app.state.pipeline.gate.streams, app.state.pipeline.gate.others) == (0, 0)
    for client in clients.values():
        await client.aclose()
    await app.state.client.aclose()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUARDRAIL_HEADER_TIMEOUT": "0"}, "header_timeout: must be a number of seconds > 0"),
        ({"GUARDRAIL_HEADER_TIMEOUT": "soon"}, "header_timeout: must be a number"),
        ({"GUARDRAIL_KEEPALIVE_TIMEOUT": "-1"}, "keepalive_timeout: must be a number"),
        ({"GUARDRAIL_MAX_CLIENT_CONNECTIONS": "0"}, "max_client_connections: must be an int"),
        ({"GUARDRAIL_MAX_CLIENT_CONNECTIONS": "many"}, "max_client_connections: must be an"),
        ({"GUARDRAIL_MAX_UPSTREAM_PER_CLIENT": "0"}, "max_upstream_per_client: must be an"),
        ({"GUARDRAIL_MAX_UPSTREAM_PER_CLIENT": "300"},
         "max_upstream_per_client: must be at most max_connections \\(256\\)"),
    ],
)
def test_bad_connection_limits_are_refused_at_start(env: dict[str, str], message: str) -> None:
    """Bad config: a limit that is not a positive number (or a per-client share larger than
    the pool) stops start-up with the key named."""
    with pytest.raises(ConfigError, match=message):
        load_settings(env={"GUARDRAIL_UPSTREAM": "http://u.test", **env})


def test_connection_limit_defaults() -> None:
    """The documented defaults: 10 s head, 20 s keep-alive, 1024 connections, a quarter of the
    upstream pool per client address."""
    s = load_settings(env={"GUARDRAIL_UPSTREAM": "http://u.test"})
    assert (s.header_timeout, s.keepalive_timeout, s.max_client_connections) == (10, 20, 1024)
    assert s.max_upstream_per_client == s.max_connections // 4 == 64
    s = load_settings(env={"GUARDRAIL_UPSTREAM": "http://u.test", "GUARDRAIL_MAX_CONNECTIONS": "2"})
    assert s.max_upstream_per_client == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_serve_raises_the_open_file_limit_to_fit_the_connection_cap() -> None:
    """Bad luck: a soft limit of 1024 open files (a common default) would refuse connections
    (EMFILE) long before ``max_client_connections``; serve raises it as far as the hard limit
    allows."""
    import subprocess
    import sys

    code = (
        "import resource; from guardrail.cli.process import raise_file_limit as r\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); r(1000)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    soft, hard = (int(x) for x in out.stdout.split())
    assert soft == (1000 if hard < 0 or hard >= 1000 else hard)


@pytest.mark.slow
@pytest.mark.subprocess
def test_streams_of_one_client_leave_room_for_another_on_the_wire(tmp_path: Path) -> None:
    """Attack, end to end: one client opens stream after stream to an upstream that never stops
    (before, with the pool full, everyone else waited for a connection until a 504). Through a
    real ``guardrail serve`` with a pool of 8: the client's first 2 streams flow, the rest get
    429 at once; a second client (another source address) still gets its reply."""
    from tests.kit.servers import Background
    from tests.kit.upstreams import RawUpstream

    background = Background()
    try:
        upstream = background.serve_raw(RawUpstream())
        env = {"GUARDRAIL_MAX_CONNECTIONS": "8"}
        with served_at(tmp_path, upstream, env) as proc:
            body = json.dumps(chat_request("I feel alone.", stream=True)).encode()
            endless = request("POST", "/v1/chat/completions", body, x_raw_mode="endless",
                              content_type="application/json")
            streams = [connect(proc.proxy) for _ in range(8)]
            statuses = []
            for sock in streams:
                sock.sendall(endless)
                statuses.append(int(sock.recv(64).split()[1]))
            assert statuses == [200, 200] + [429] * 6
            other = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(transport=other, base_url=proc.proxy, timeout=8) as client:
                response = client.post("/v1/chat/completions",
                                       json=chat_request("Hello", stream=True))
            assert response.status_code == 200 and "data:" in response.text
            for sock in streams:
                sock.close()
    finally:
        background.close()


@contextlib.contextmanager
def served_at(tmp_path: Path, upstream: str, env: dict[str, str]) -> Iterator[Served]:
    from guardrail.config.settings import DEFAULT_POLICIES
    from tests.kit.serve import guardrail_serve

    with guardrail_serve(tmp_path, upstream, DEFAULT_POLICIES, env=env) as proc:
        yield proc


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_stalled_pipelined_head_never_writes_into_a_stream_in_progress(tmp_path: Path) -> None:
    """Attack: while a stream is being sent, the client starts a pipelined second request and
    never finishes its head. The header timeout closes the connection, but the 408 is not
    written into the middle of the stream (which would corrupt it): the stream just ends."""
    from tests.kit.servers import Background
    from tests.kit.upstreams import RawUpstream

    background = Background()
    try:
        upstream = background.serve_raw(RawUpstream())
        env = {"GUARDRAIL_HEADER_TIMEOUT": "1"}
        with served_at(tmp_path, upstream, env) as proc, connect(proc.proxy) as sock:
            body = json.dumps(chat_request("Hello", stream=True)).encode()
            first = request("POST", "/v1/chat/completions", body, x_raw_mode="endless",
                            content_type="application/json")
            sock.sendall(first.replace(b"Connection: close", b"Connection: keep-alive"))
            assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /v1/mo")
            closed, sent = closed_within(sock, 5)
            assert closed and b"HTTP/1.1 408" not in sent and b"data: " in sent, (closed, sent[-300:])
    finally:
        background.close()
