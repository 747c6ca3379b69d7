"""Erasing one user: the admin endpoint (in-process and on a real ``guardrail serve``) and the
``guardrail state erase`` command, both hashing the raw id exactly as requests are hashed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis

from guardrail.proxy.admin import build_admin_app
from guardrail.policy import load_policies
from guardrail.proxy.reload import PolicyHolder
from guardrail.config.settings import DEFAULT_POLICIES
from guardrail.state import (
    FakeClock,
    Observation,
    StateAccess,
    StateConfig,
    StateStore,
    identify,
)
from guardrail.state.memory import MemoryStore
from guardrail.state.redisstore import KEY_PREFIX, RedisStore

from tests.kit.redis import RedisServer
from tests.kit.serve import guardrail_serve, policy_copy


TOKEN = "admin-token-for-state-tests"
KEY = "shared-state-key-0123456789"
RAW = "carol/with a slash & spaces+ü"
HOLDER = PolicyHolder(load_policies(DEFAULT_POLICIES))


async def seed(store: StateStore, config: StateConfig, raw: str) -> None:
    """What a request by ``raw`` leaves behind (through identify, as the flow will do it)."""
    identity = identify({"x-guardrail-user": raw}, None, None, config)
    assert identity is not None
    await store.observe(identity, FakeClock().now(), Observation(crisis=True))


def admin_client(state: StateAccess | None, token: str | None = TOKEN) -> httpx.AsyncClient:
    app = build_admin_app(HOLDER, None, token=token, state=state)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin.test")


@pytest.fixture
async def memory() -> AsyncIterator[StateAccess]:
    config = StateConfig(key=KEY.encode())
    yield StateAccess(MemoryStore(config), config)


AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.mark.anyio
async def test_the_admin_endpoint_erases_the_user_named_by_their_raw_id(
    memory: StateAccess,
) -> None:
    await seed(memory.store, memory.config, RAW)
    await seed(memory.store, memory.config, "dave")
    store = memory.store
    assert isinstance(store, MemoryStore) and len(store) == 2
    async with admin_client(memory) as client:
        path = f"/-/state/users/{quote(RAW, safe='')}"
        first = await client.delete(path, headers=AUTH)
        assert (first.status_code, first.json()) == (200, {"erased": True})
        again = await client.delete(path, headers=AUTH)
        assert (again.status_code, again.json()) == (200, {"erased": False})
    assert len(store) == 1  # dave is still there


@pytest.mark.anyio
async def test_the_admin_endpoint_needs_the_token(memory: StateAccess) -> None:
    await seed(memory.store, memory.config, "erin")
    async with admin_client(memory) as client:
        for headers in ({}, {"authorization": "Bearer wrong-token-wrong-token"}):
            response = await client.delete("/-/state/users/erin", headers=headers)
            assert response.status_code == 401
        wrong_method = await client.get("/-/state/users/erin", headers=AUTH)
        assert wrong_method.status_code == 405
    assert isinstance(memory.store, MemoryStore) and len(memory.store) == 1


@pytest.mark.anyio
async def test_without_a_store_or_with_an_empty_id_it_refuses(memory: StateAccess) -> None:
    async with admin_client(None) as client:
        response = await client.delete("/-/state/users/erin", headers=AUTH)
        assert response.status_code == 503
    async with admin_client(memory) as client:
        response = await client.delete("/-/state/users/%20", headers=AUTH)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_user")


@pytest.mark.subprocess
@pytest.mark.anyio
async def test_an_unreachable_store_answers_503(redis_server: RedisServer) -> None:
    config = StateConfig(backend="redis", url=redis_server.url, key=KEY.encode(), timeout=0.5)
    store = RedisStore(config)
    redis_server.stop()
    try:
        async with admin_client(StateAccess(store, config)) as client:
            response = await client.delete("/-/state/users/erin", headers=AUTH)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "state_unavailable"
        assert "erin" not in response.text
    finally:
        await store.aclose()


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    command = [sys.executable, "-m", "guardrail", "state", *args]
    return subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def _redis_keys(server: RedisServer) -> list[bytes]:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        return sorted(client.scan_iter(match=KEY_PREFIX + "*"))
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.anyio
async def test_guardrail_state_erase_uses_the_configured_store_and_key(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config_file = tmp_path / "guardrail.yaml"
    config_file.write_text(
        f"state:\n  backend: redis\n  url: {redis_server.url}\n  key: {KEY}\n"
    )  # no upstream: the command does not proxy
    config = StateConfig(backend="redis", url=redis_server.url, key=KEY.encode(), timeout=5.0)
    store = RedisStore(config)
    try:
        await seed(store, config, RAW)
        await seed(store, config, "frank")
    finally:
        await store.aclose()
    assert len(_redis_keys(redis_server)) == 2
    done = _run("erase", "--user", RAW, "--config", str(config_file), env={})
    assert done.returncode == 0, done.stderr
    assert "state erased" in done.stdout and RAW not in done.stdout + done.stderr
    assert len(_redis_keys(redis_server)) == 1
    again = _run("erase", "--user", RAW, "--config", str(config_file), env={})
    assert again.returncode == 0 and "no state stored" in again.stdout
    other_key = _run(
        "erase", "--user", "frank", "--config", str(config_file),
        env={"GUARDRAIL_STATE_KEY": "another-key-another-key"},
    )
    assert other_key.returncode == 0 and "no state stored" in other_key.stdout
    assert len(_redis_keys(redis_server)) == 1  # a different key addresses nobody


@pytest.mark.slow
@pytest.mark.subprocess
def test_guardrail_state_erase_refuses_what_it_cannot_reach(tmp_path: Path) -> None:
    memory = _run("erase", "--user", "x", env={})
    assert memory.returncode == 2
    assert "state.backend: 'memory' state lives inside the serving process" in memory.stderr
    down = _run(
        "erase", "--user", "x",
        env={
            "GUARDRAIL_STATE_BACKEND": "redis",
            "GUARDRAIL_STATE_URL": "redis://127.0.0.1:1/0",
            "GUARDRAIL_STATE_KEY": KEY,
        },
    )
    assert down.returncode == 2 and "state store" in down.stderr
    no_key = _run(
        "erase", "--user", "x",
        env={"GUARDRAIL_STATE_BACKEND": "redis", "GUARDRAIL_STATE_URL": "redis://h:1/0"},
    )
    assert no_key.returncode == 2 and "set state.key (or audit.key)" in no_key.stderr


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.anyio
async def test_a_served_admin_listener_erases_from_the_shared_store(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "GUARDRAIL_STATE_BACKEND": "redis",
        "GUARDRAIL_STATE_URL": redis_server.url,
        "GUARDRAIL_STATE_KEY": KEY,
        "GUARDRAIL_ADMIN_TOKEN": TOKEN,
    }
    config = StateConfig(backend="redis", url=redis_server.url, key=KEY.encode(), timeout=5.0)
    store = RedisStore(config)
    try:
        await seed(store, config, RAW)
    finally:
        await store.aclose()
    folder = policy_copy(tmp_path)
    with guardrail_serve(tmp_path, "http://127.0.0.1:9", folder, env=env) as served:
        async with httpx.AsyncClient(base_url=served.admin, timeout=10) as client:
            path = f"/-/state/users/{quote(RAW, safe='')}"
            assert (await client.delete(path)).status_code == 401
            response = await client.delete(path, headers=AUTH)
            assert (response.status_code, response.json()) == (200, {"erased": True})
        assert RAW not in served.output()
    assert _redis_keys(redis_server) == []
