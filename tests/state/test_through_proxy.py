"""Containment over time, through the proxy: HTTP in, a mock upstream, a fake clock.

The session's facts come from the state store; the containment pack reads them; what the reply
got is written back once. Time only moves when the test moves the clock (no sleeping). Two apps
sharing one real redis-server stand for two replicas; a store that fails stands for Redis down.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from guardrail.config.settings import Settings
from guardrail.errors import StateUnavailable
from guardrail.observe.audit import AuditConfig
from guardrail.policy import PolicySet, load_policies
from guardrail.proxy.app import build_app
from guardrail.state import FakeClock, Identity, Observation, StateConfig, UserState
from guardrail.state.memory import MemoryStore
from guardrail.state.redisstore import RedisStore

from tests.kit.redis import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PACK: PolicySet = load_policies(ROOT / "policies")
KEY = b"a-key-replicas-share-0123456789"
DISCLOSED = "an AI, not a"
BREAK = "break"


def completion(text: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}  # fmt: skip


def chunks(text: str) -> bytes:
    out = []
    for i in range(0, len(text), 9):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": text[i:i + 9]},
                              "finish_reason": None}]}  # fmt: skip
        out.append(f"data: {json.dumps(chunk)}\n\n")
    end = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
    out.append(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n")
    return "".join(out).encode()


class Upstream:
    """A mock upstream that answers calmly and keeps the headers it was sent."""

    def __init__(self, reply: str = "Tell me more about your day.") -> None:
        self.reply = reply
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        body = json.loads(request.content)
        if body.get("stream"):
            data, kind = chunks(self.reply), "text/event-stream"
        else:
            data, kind = json.dumps(completion(self.reply)).encode(), "application/json"
        return httpx.Response(200, headers={"content-type": kind}, stream=httpx.ByteStream(data))


class Proxy:
    """One replica: the app, its client, its clock."""

    def __init__(self, store: Any, clock: FakeClock, upstream: Upstream, config: StateConfig):
        settings = Settings(upstream="https://upstream.test", policies=ROOT / "policies",
                            audit=AuditConfig("off"), state=config)  # fmt: skip
        self.app = build_app(settings, PACK, httpx.MockTransport(upstream), state_store=store,
                             clock=clock)  # fmt: skip
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://proxy.test")  # fmt: skip

    async def say(self, text: str, *, user: str | None = "user-7", stream: bool = False,
                  minor: bool = False) -> str:  # fmt: skip
        headers = {} if user is None else {"x-guardrail-user": user}
        if minor:
            headers["x-guardrail-minor"] = "true"
        body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}
        response = await self.client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        await self.app.state.state_link.settle()  # the observation is written after the reply
        if not stream:
            return str(response.json()["choices"][0]["message"]["content"])
        text_out = ""
        for block in response.text.split("\n\n"):
            data = block.removeprefix("data: ").strip()
            if data and data != "[DONE]":
                for choice in json.loads(data).get("choices", []):
                    text_out += choice.get("delta", {}).get("content") or ""
        return text_out

    async def close(self) -> None:
        await self.client.aclose()
        await self.app.state.client.aclose()


def memory_config() -> StateConfig:
    return StateConfig(key=KEY)


@pytest.mark.anyio
async def test_a_session_opens_with_an_ai_disclosure_once() -> None:
    clock, upstream = FakeClock(), Upstream()
    proxy = Proxy(MemoryStore(memory_config()), clock, upstream, memory_config())
    try:
        assert DISCLOSED in await proxy.say("Hi there")
        clock.advance(60)
        assert DISCLOSED not in await proxy.say("I had a long day")
        # guardrail's own headers never reach the upstream
        assert all("x-guardrail-user" not in h for h in upstream.headers)
    finally:
        await proxy.close()


@pytest.mark.anyio
async def test_without_a_user_the_state_policies_are_skipped_and_the_rest_works() -> None:
    clock = FakeClock()
    proxy = Proxy(MemoryStore(memory_config()), clock, Upstream(), memory_config())
    try:
        assert DISCLOSED not in await proxy.say("Hi there", user=None)
        reply = await proxy.say("I want to kill myself", user=None)
        assert "988" in reply  # the crisis line needs no identity
        assert len(proxy.app.state.state_store) == 0  # nothing stored for nobody
    finally:
        await proxy.close()


@pytest.mark.anyio
async def test_a_minor_gets_a_break_reminder_after_three_hours_once_per_interval() -> None:
    clock = FakeClock()
    proxy = Proxy(MemoryStore(memory_config()), clock, Upstream(), memory_config())
    try:
        replies = []
        for _ in range(10):  # a turn every 20 minutes: one session of 180 minutes
            replies.append(await proxy.say("what should I draw next?", minor=True))
            clock.advance(20 * 60)
        assert not any(BREAK in r for r in replies[:9])
        assert BREAK in replies[9]  # at 180 minutes
        clock.advance(20 * 60)
        assert BREAK not in await proxy.say("and then?", minor=True)  # once per interval
    finally:
        await proxy.close()


@pytest.mark.anyio
async def test_streamed_replies_get_the_disclosure_before_the_end() -> None:
    clock = FakeClock()
    proxy = Proxy(MemoryStore(memory_config()), clock, Upstream(), memory_config())
    try:
        streamed = await proxy.say("Hello", stream=True, user="streamer")
        assert streamed.startswith("Just so you know") or DISCLOSED in streamed.split("\n")[0]
        assert DISCLOSED not in await proxy.say("Hello again", stream=True, user="streamer")
    finally:
        await proxy.close()


class FailingStore:
    """A state store that is down: every call fails as Redis would."""

    def __init__(self) -> None:
        self.calls = 0

    async def load(self, identity: Identity, now: float) -> UserState:
        self.calls += 1
        raise StateUnavailable("state store unreachable", cause="connection")

    async def observe(self, identity: Identity, now: float, observation: Observation) -> None:
        self.calls += 1
        raise StateUnavailable("state store unreachable", cause="connection")

    async def erase(self, user: str) -> bool:
        raise StateUnavailable("state store unreachable", cause="connection")

    async def ping(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
async def test_a_store_that_is_down_degrades_to_the_stateless_pack() -> None:
    from guardrail.observe import metrics as m

    store = FailingStore()
    proxy = Proxy(store, FakeClock(), Upstream(), memory_config())
    before = m.STATE_ERRORS.labels("load")._value.get()
    try:
        assert DISCLOSED not in await proxy.say("Hi there")  # the state policy is skipped
        assert "988" in await proxy.say("I want to end my life")  # the crisis line is not
        assert store.calls >= 2
        assert m.STATE_ERRORS.labels("load")._value.get() - before == 2
        assert proxy.app.state.state_link.degraded
    finally:
        await proxy.close()


@pytest.mark.anyio
@pytest.mark.subprocess
async def test_two_replicas_share_one_session_through_redis(redis_server: RedisServer) -> None:
    """A session started on one replica gets its break reminder from the other."""
    config = StateConfig(backend="redis", url=redis_server.url, key=KEY, timeout=5.0)
    clock = FakeClock()
    one = Proxy(RedisStore(config), clock, Upstream(), config)
    two = Proxy(RedisStore(config), clock, Upstream(), config)
    try:
        assert DISCLOSED in await one.say("hi", minor=True, user="teen-1")
        replies = []
        for turn in range(9):
            clock.advance(20 * 60)
            replica = two if turn % 2 == 0 else one
            replies.append((replica is two, await replica.say("more?", minor=True, user="teen-1")))
        assert DISCLOSED not in replies[0][1]  # the other replica knew of the disclosure
        assert [r for r in replies if BREAK in r[1]] == [replies[-1]]
        assert replies[-1][0] is True  # ... and it was replica two that reminded
    finally:
        await one.close()
        await two.close()
        await one.app.state.state_store.aclose()
        await two.app.state.state_store.aclose()


@pytest.mark.anyio
async def test_the_built_in_page_counts_what_containment_did() -> None:
    """The dashboard's figures (the same registry as /metrics) show disclosures and the state
    policies skipped for want of a user."""
    from guardrail.observe.stats import read_sample
    from guardrail.observe.thresholds import figures

    def now() -> dict[str, Any]:
        sample = read_sample()
        return figures(sample.counts, {}, None, 0.0, None)

    before = now()
    proxy = Proxy(MemoryStore(memory_config()), FakeClock(), Upstream(), memory_config())
    try:
        await proxy.say("Hi there", user="page-user")  # a session starts: a disclosure
        await proxy.say("Hi there", user=None)  # no user: state policies skipped
    finally:
        await proxy.close()
    after = now()
    assert after["disclosures"]["value"] == (before["disclosures"]["value"] or 0) + 1
    assert after["state_skipped"]["value"] > (before["state_skipped"]["value"] or 0)
    assert after["state_errors"]["state"] in ("zero", "warn")


class _HeldStream(httpx.AsyncByteStream):
    """An upstream stream that sends one chunk and then waits for ever (until cancelled)."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    async def __aiter__(self) -> Any:
        yield self.first
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


async def _leave_mid_stream(user_text: str, user: str) -> Any:
    """A streamed reply whose client leaves after the first bytes; the user's stored state once
    the proxy has seen the disconnect and written what it observed."""
    from tests.kit.servers import live_server

    head = chunks("Tell me more about")
    first = head[: head.index(b"\n\n") + 2]

    def held(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=_HeldStream(first))  # fmt: skip

    clock, store = FakeClock(), MemoryStore(memory_config())
    settings = Settings(upstream="https://upstream.test", policies=ROOT / "policies",
                        audit=AuditConfig("off"), state=memory_config())  # fmt: skip
    app = build_app(settings, PACK, httpx.MockTransport(held), state_store=store, clock=clock)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": user_text}]}
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"x-guardrail-user": user}) as response:  # fmt: skip
            async for _ in response.aiter_raw():
                break  # the client leaves after the first bytes
        link = app.state.state_link
        identity = link.identify({"x-guardrail-user": user}, None)
        with anyio.fail_after(10):  # waiting for the proxy to see the disconnect
            while True:
                await link.settle()
                if (await store.load(identity, clock.now())).turns:
                    break
                await anyio.sleep(0.01)
        await anyio.sleep(0)  # nothing more comes: the observation was written once
        await link.settle()
        return await store.load(identity, clock.now())


@pytest.mark.anyio
async def test_a_stream_the_client_leaves_is_still_observed_once() -> None:
    """State is written once per reply, also when the client disconnects mid-stream."""
    state = await _leave_mid_stream("hello", "leaver")
    assert state.turns == 1  # one turn of the session, however the reply ended
    assert state.last_crisis is None and state.distress_bits == 0


@pytest.mark.anyio
async def test_a_crisis_told_before_the_client_left_is_still_known() -> None:
    """The person left before the reply was judged: what they said still counts (a crisis, a
    distressed turn), but nothing the reply would have done is recorded as done."""
    state = await _leave_mid_stream(
        "Everything feels hopeless and tonight I want to kill myself.", "crisis-leaver"
    )
    assert state.turns == 1
    assert state.last_crisis is not None  # the crisis is known to the next request
    assert state.distress_bits & 1  # this turn was a distressed one
    assert state.last_referral is None and state.referrals == 0  # no referral known to be read
