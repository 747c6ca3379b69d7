"""The state.* settings: defaults, sources, the key rule, and errors naming key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.errors import ConfigError
from guardrail.config.loading import load_settings
from guardrail.state import Keyring

UP = {"upstream": "http://up.test"}
SECRET = "state-secret-0123456789"
AUDIT = "audit-secret-0123456789"


def test_defaults() -> None:
    state = load_settings(cli=UP, env={}).state
    assert (state.backend, state.url, state.key_source) == ("memory", None, "random")
    assert state.retention == 30 * 86400 and state.session_gap == 1800
    assert (state.max_users, state.timezone, state.timeout) == (100_000, "UTC", 0.05)
    assert state.headers == ("x-guardrail-user", "x-guardrail-session", "x-guardrail-minor")


def test_a_random_key_is_made_once_per_load_and_never_shown() -> None:
    one, two = load_settings(cli=UP, env={}).state, load_settings(cli=UP, env={}).state
    assert one.key != two.key and len(one.key) == 32
    assert repr(one.key) not in repr(load_settings(cli=UP, env={}))


def test_state_key_wins_over_audit_key_which_is_the_fallback() -> None:
    env = {"GUARDRAIL_AUDIT_KEY": AUDIT}
    assert load_settings(cli=UP, env=env).state.key == AUDIT.encode()
    assert load_settings(cli=UP, env=env).state.key_source == "audit.key"
    both = load_settings(cli=UP, env={**env, "GUARDRAIL_STATE_KEY": SECRET}).state
    assert (both.key, both.key_source) == (SECRET.encode(), "state.key")


def test_two_replicas_with_one_config_hash_a_user_alike(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(f"upstream: http://up.test\nstate:\n  key: {SECRET}\n")
    one, two = load_settings(env={}, config=path).state, load_settings(env={}, config=path).state
    assert Keyring(one.key).user("u") == Keyring(two.key).user("u")


def test_the_config_file_environment_and_units(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "upstream: http://up.test\n"
        "state:\n"
        "  backend: redis\n"
        "  url: redis://127.0.0.1:6390/2\n"
        f"  key: {SECRET}\n"
        "  retention: 7d\n"
        "  session_gap: 45m\n"
        "  timezone: America/New_York\n"
        "  user_header: X-User-Id\n"
        "  timeout: 0.2\n"
    )
    env = {"GUARDRAIL_STATE_MAX_USERS": "500", "GUARDRAIL_STATE_SESSION_GAP": "2h"}
    settings = load_settings(env=env, config=path)
    state = settings.state
    assert (state.backend, state.url) == ("redis", "redis://127.0.0.1:6390/2")
    assert (state.retention, state.session_gap, state.max_users) == (7 * 86400, 7200, 500)
    assert (state.timezone, state.user_header) == ("America/New_York", "x-user-id")
    assert state.timeout == 0.2
    assert settings.sources["state.retention"] == f"config file {path}:6"
    assert settings.sources["state.session_gap"] == "environment GUARDRAIL_STATE_SESSION_GAP"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUARDRAIL_STATE_BACKEND": "redis"}, "environment GUARDRAIL_STATE_BACKEND: "
         "state.backend: 'redis' needs state.url"),
        ({"GUARDRAIL_STATE_BACKEND": "redis", "GUARDRAIL_STATE_URL": "redis://h:1"},
         "environment GUARDRAIL_STATE_BACKEND: state.backend: 'redis' is shared by replicas"),
        ({"GUARDRAIL_STATE_BACKEND": "sqlite"}, "state.backend: must be one of memory, redis"),
        ({"GUARDRAIL_STATE_URL": "http://h:1"}, "GUARDRAIL_STATE_URL: state.url: must be a "
         "redis://"),
        ({"GUARDRAIL_STATE_URL": "redis://:1"}, "must name a host"),
        ({"GUARDRAIL_STATE_KEY": "short"}, "GUARDRAIL_STATE_KEY: state.key: must be a secret"),
        ({"GUARDRAIL_STATE_RETENTION": "0"}, "state.retention: must be a duration > 0"),
        ({"GUARDRAIL_STATE_RETENTION": "30 weeks"}, "state.retention: must be a duration"),
        ({"GUARDRAIL_STATE_SESSION_GAP": "-5m"}, "state.session_gap: must be a duration"),
        ({"GUARDRAIL_STATE_MAX_USERS": "0"}, "state.max_users: must be an integer"),
        ({"GUARDRAIL_STATE_TIMEZONE": "Mars/Olympus"}, "GUARDRAIL_STATE_TIMEZONE: "
         "state.timezone: unknown time zone 'Mars/Olympus'"),
        ({"GUARDRAIL_STATE_USER_HEADER": "bad header"}, "state.user_header: must be an HTTP"),
        ({"GUARDRAIL_STATE_TIMEOUT": "none"}, "state.timeout: must be a number of seconds"),
    ],
)
def test_bad_values_name_the_key_and_where_it_came_from(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(cli=UP, env=env)
    assert message in str(caught.value)


def test_redis_with_the_audit_key_starts() -> None:
    env = {
        "GUARDRAIL_STATE_BACKEND": "redis",
        "GUARDRAIL_STATE_URL": "redis://127.0.0.1:6379/0",
        "GUARDRAIL_AUDIT_KEY": AUDIT,
    }
    assert load_settings(cli=UP, env=env).state.key_source == "audit.key"


def test_a_password_in_a_bad_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(cli=UP, env={"GUARDRAIL_STATE_URL": "redis://:hunter2-pass@:0"})
    assert "hunter2" not in str(caught.value)


def test_a_redis_backend_in_the_config_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("upstream: http://up.test\nstate:\n  backend: redis\n")
    with pytest.raises(ConfigError, match=rf"config file {path}:3: state.backend: 'redis' needs"):
        load_settings(env={}, config=path)


def test_a_route_can_mark_its_users_minors(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "upstream: http://up.test\n"
        "routes:\n  - {prefix: /teens, minor: true}\n  - {prefix: /adults}\n"
    )
    routes = {r.prefix: r for r in load_settings(env={}, config=path).routes}
    assert routes["/teens"].minor is True
    assert routes["/adults"].minor is False and routes["/"].minor is False
    path.write_text("upstream: http://up.test\nroutes:\n  - {prefix: /t, minor: perhaps}\n")
    with pytest.raises(ConfigError, match=r"routes\[0\]\.minor: must be true or false"):
        load_settings(env={}, config=path)


def test_commands_that_do_not_proxy_need_no_upstream() -> None:
    with pytest.raises(ConfigError, match="no upstream configured"):
        load_settings(env={})
    assert load_settings(env={}, require_upstream=False).upstream is None


@pytest.mark.slow
@pytest.mark.subprocess
def test_guardrail_serve_refuses_a_shared_store_without_a_shared_key() -> None:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    env = {
        **clean,
        "GUARDRAIL_STATE_BACKEND": "redis",
        "GUARDRAIL_STATE_URL": "redis://127.0.0.1:6379/0",
    }
    command = [sys.executable, "-m", "guardrail", "serve", "--upstream", "http://up.test"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "environment GUARDRAIL_STATE_BACKEND: state.backend: 'redis' is shared" in done.stderr
