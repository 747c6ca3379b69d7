"""The Redis backend against a real redis-server: the same state as the memory backend, atomic
under two replicas, nothing personal stored, expiry, and outages it survives."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import replace

import pytest

from guardrail.state import (
    FakeClock,
    Identity,
    Observation,
    StateConfig,
    StateUnavailable,
    identify,
    open_store,
)
from guardrail.state.memory import MemoryStore
from guardrail.state.model import RECORDS
from guardrail.state.redisstore import KEY_PREFIX, RedisStore

from tests.kit.redis import RedisServer


pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

KEY = b"shared-replica-key-0123456789abcdef"


def config(server: RedisServer, **changes: object) -> StateConfig:
    base = StateConfig(backend="redis", url=server.url, key=KEY, key_source="state.key")
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_open_store_picks_the_configured_backend(redis_server: RedisServer) -> None:
    store = open_store(config(redis_server))
    assert isinstance(store, RedisStore) and await store.ping()
    await store.aclose()
    assert isinstance(open_store(StateConfig()), MemoryStore)
    with pytest.raises(ValueError, match="state.url"):
        RedisStore(StateConfig(backend="redis"))


async def test_redis_and_memory_agree_on_every_step_of_a_random_history(
    redis_server: RedisServer,
) -> None:
    """The Lua script mirrors model.observed: one random history, both stores, every load."""
    settings = config(redis_server, session_gap=1800.0, retention=90 * 86400.0, timeout=5.0)
    redis_store, memory = RedisStore(settings), MemoryStore(settings)
    rng = random.Random(14)
    clock = FakeClock(1_780_000_000)
    users = [f"{n:032x}" for n in range(3)]
    sessions = [None, None, "s" * 32, "t" * 32]
    try:
        for _ in range(400):
            clock.advance(rng.choice([1, 60, 900, 1799, 1801, 3 * 3600, 20 * 3600, 3 * 86400]))
            identity = Identity(rng.choice(users), session=rng.choice(sessions))
            observation = Observation(
                distress=rng.random() < 0.4,
                crisis=rng.random() < 0.1,
                dependency=rng.random() < 0.3,
                records=frozenset(r for r in RECORDS if rng.random() < 0.15),
            )
            before = await redis_store.load(identity, clock.now())
            assert before == await memory.load(identity, clock.now())
            await redis_store.observe(identity, clock.now(), observation)
            await memory.observe(identity, clock.now(), observation)
            after = await redis_store.load(identity, clock.now())
            assert after == await memory.load(identity, clock.now())
        assert after.turns > 0
    finally:
        await redis_store.aclose()


async def test_two_replicas_observing_one_user_at_once_lose_no_count(
    redis_server: RedisServer,
) -> None:
    settings = config(redis_server, timeout=10.0)
    replicas = [RedisStore(settings), RedisStore(settings)]
    alice = Identity("a" * 32)
    now = FakeClock().now()
    referral = Observation(records=frozenset({"referral"}), distress=True)
    try:
        await asyncio.gather(
            *(replicas[n % 2].observe(alice, now, referral) for n in range(400))
        )
        state = await replicas[0].load(alice, now)
        assert state.turns == 400 and state.referrals == 400
        assert await replicas[1].load(alice, now) == state
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_state_expires_retention_after_the_last_activity(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    store = RedisStore(config(redis_server, retention=3600.0, timeout=5.0))
    raw = aioredis.Redis.from_url(redis_server.url)
    alice = Identity("a" * 32)
    try:
        await store.observe(alice, FakeClock().now(), Observation())
        ttl = await raw.pttl(KEY_PREFIX + alice.user)
        assert 0 < ttl <= 3_600_000
        await raw.pexpire(KEY_PREFIX + alice.user, 1_000_000)
        await store.observe(alice, FakeClock().now(), Observation())  # activity renews it
        assert await raw.pttl(KEY_PREFIX + alice.user) > 1_000_000
    finally:
        await raw.aclose()
        await store.aclose()


async def test_erase_removes_one_user_only(redis_server: RedisServer) -> None:
    store = RedisStore(config(redis_server, timeout=5.0))
    alice, bob = Identity("a" * 32), Identity("b" * 32)
    now = FakeClock().now()
    try:
        await store.observe(alice, now, Observation(crisis=True))
        await store.observe(bob, now, Observation(crisis=True))
        assert await store.erase(alice.user) is True
        assert await store.erase(alice.user) is False
        assert (await store.load(alice, now)).last_crisis is None
        assert (await store.load(bob, now)).last_crisis == now
    finally:
        await store.aclose()


async def test_sentinel_no_raw_id_or_message_text_is_ever_stored(
    redis_server: RedisServer,
) -> None:
    """Requests with distinctive raw ids (headers and each API's body field) and message text
    go through identify and observe; then every key and value in Redis is scanned."""
    settings = config(redis_server, timeout=5.0)
    store = RedisStore(settings)
    clock = FakeClock()
    text = "SENTINEL-MESSAGE-TEXT I feel hopeless tonight zq81"
    raw_ids = [f"SENTINEL-RAW-USER-{n}-x9k2@example.org" for n in range(4)]
    raw_session = "SENTINEL-RAW-SESSION-77f1"
    messages = [{"role": "user", "content": text}]
    requests = [
        ({"x-guardrail-user": raw_ids[0], "x-guardrail-session": raw_session}, {}, None),
        ({}, {"messages": messages, "user": raw_ids[1]}, "openai.chat"),
        ({}, {"input": text, "safety_identifier": raw_ids[2]}, "openai.responses"),
        ({}, {"messages": messages, "metadata": {"user_id": raw_ids[3]}}, "anthropic.messages"),
    ]
    everything = Observation(True, True, True, RECORDS, locale="en-US")
    try:
        for headers, body, api in requests:
            identity = identify(headers, body, api, settings)
            assert identity is not None
            for _ in range(3):
                await store.load(identity, clock.now())
                await store.observe(identity, clock.now(), everything)
                clock.advance(600)
    finally:
        await store.aclose()
    stored = redis_server.dump()
    assert len([item for item in stored if item.startswith(KEY_PREFIX.encode())]) == 4
    blob = b"\n".join(stored)
    forbidden = [*raw_ids, raw_session, text, "hopeless", "SENTINEL", "en-US"]
    forbidden += [hashlib.sha256(r.encode()).hexdigest()[:32] for r in raw_ids]  # unkeyed hash
    for needle in forbidden:
        assert needle.encode() not in blob, needle
        assert needle.lower().encode() not in blob.lower(), needle
    assert json.dumps(stored, default=repr)  # readable evidence if it ever fails


async def test_a_stopped_redis_raises_the_one_error_and_the_store_reconnects(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(config(redis_server, timeout=0.5))
    alice = Identity("a" * 32)
    now = FakeClock().now()
    try:
        await store.observe(alice, now, Observation())
        redis_server.stop()
        for operation in (
            lambda: store.load(alice, now),
            lambda: store.observe(alice, now, Observation()),
            lambda: store.erase(alice.user),
        ):
            with pytest.raises(StateUnavailable) as caught:
                await operation()
            assert caught.value.cause in ("connection", "timeout")
            assert alice.user not in str(caught.value)
        assert await store.ping() is False
        redis_server.start()  # the same port, empty (nothing persisted), script cache empty
        assert await store.ping() is True
        await store.observe(alice, now, Observation(crisis=True))
        state = await store.load(alice, now)
        assert state.turns == 1 and state.last_crisis == now
    finally:
        await store.aclose()


async def test_a_redis_that_never_answers_times_out_and_recovers(
    redis_server: RedisServer,
) -> None:
    """SIGSTOP: connections are accepted by the kernel but nothing answers. Without the bound
    this test would hang; with it every operation fails with cause "timeout"."""
    store = RedisStore(config(redis_server, timeout=0.2))
    alice = Identity("a" * 32)
    now = FakeClock().now()
    try:
        await store.observe(alice, now, Observation())
        redis_server.pause()
        try:
            for operation in (
                lambda: store.load(alice, now),
                lambda: store.observe(alice, now, Observation()),
            ):
                with pytest.raises(StateUnavailable) as caught:
                    await operation()
                assert caught.value.cause == "timeout"
        finally:
            redis_server.resume()
        await store.observe(alice, now, Observation())
        # The timed-out observe may have reached Redis before it froze (then it ran on SIGCONT)
        # or not: either is a consistent count. Lost or doubled updates are not.
        assert (await store.load(alice, now)).turns in (2, 3)
    finally:
        await store.aclose()


async def test_a_damaged_or_foreign_entry_never_crashes_a_request(
    redis_server: RedisServer,
) -> None:
    """Malformed fields read as absent; a key of another type is the one error, not a crash."""
    import redis.asyncio as aioredis

    store = RedisStore(config(redis_server, timeout=5.0))
    raw = aioredis.Redis.from_url(redis_server.url)
    alice, bob = Identity("a" * 32), Identity("b" * 32)
    now = FakeClock().now()
    try:
        await raw.hset(
            KEY_PREFIX + alice.user,
            mapping={"tn": "many", "la": "yesterday", "dd": "x,,7", "db": "", "zz": "?"},
        )
        assert (await store.load(alice, now)).turns == 0
        await store.observe(alice, now, Observation(dependency=True))
        state = await store.load(alice, now)
        assert state.turns == 1 and len(state.dependency_days) == 1
        await raw.set(KEY_PREFIX + bob.user, "not a hash")
        for operation in (
            lambda: store.load(bob, now),
            lambda: store.observe(bob, now, Observation()),
        ):
            with pytest.raises(StateUnavailable) as caught:
                await operation()
            assert caught.value.cause == "error"
    finally:
        await raw.aclose()
        await store.aclose()
