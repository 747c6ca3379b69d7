"""Settings: precedence, validation with the key and its source, the documented table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import guardrail.config.settings as settings_module
from guardrail.errors import ConfigError
from guardrail.config.loading import load_settings
from guardrail.config.settings import DEFAULT_POLICIES, KEYS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guardrail.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(cli={"upstream": "https://api.openai.com/"}, env={})
    assert (s.host, s.port, s.upstream) == ("127.0.0.1", 8787, "https://api.openai.com")
    assert s.policies == DEFAULT_POLICIES and s.locale == "en-US"
    assert s.locale_header == "x-guardrail-locale"
    assert s.max_inspect_bytes == 4 * 1024 * 1024 and s.timeouts.total is None
    assert (s.log_level, s.log_format, s.demo, s.demo_port) == ("info", "auto", False, 8788)
    assert [(r.prefix, r.upstream, r.api) for r in s.routes] == [
        ("/", "https://api.openai.com", "auto")
    ]
    assert (s.holdback, s.max_holdback_chars, s.stall_timeout, s.api) == (
        "sentence", 1000, 300.0, "auto"
    )


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "upstream: https://file.test\nport: 1000\nhost: 0.0.0.0\nlocale: en-IE\n"
        "timeouts: {connect: 3, read: 30.5}\nmax_inspect_bytes: 512KiB\n",
    )
    env = {"GUARDRAIL_PORT": "2000", "GUARDRAIL_LOCALE": "en-GB", "GUARDRAIL_TIMEOUTS_READ": "40"}
    s = load_settings(cli={"port": "3000"}, env=env, config=config)
    assert s.upstream == "https://file.test"  # file only
    assert s.host == "0.0.0.0"
    assert s.locale == "en-GB"  # env beats file
    assert s.port == 3000  # flag beats env
    assert (s.timeouts.connect, s.timeouts.read) == (3.0, 40.0)
    assert s.max_inspect_bytes == 512 * 1024
    assert s.config_file == config


def test_config_file_from_environment_and_relative_policies(tmp_path: Path) -> None:
    config = write(tmp_path, "upstream: http://localhost:11434/v1\npolicies: mypolicies\n")
    s = load_settings(env={"GUARDRAIL_CONFIG": str(config)})
    assert s.policies == tmp_path / "mypolicies"
    assert s.upstream == "http://localhost:11434/v1"


def test_demo_points_at_the_demo_upstream() -> None:
    s = load_settings(cli={"demo": True, "port": "9000"}, env={})
    assert s.demo and s.demo_port == 9001 and s.upstream == "http://127.0.0.1:9001"
    s = load_settings(cli={"demo": True, "port": "0"}, env={"GUARDRAIL_UPSTREAM": "https://x.test"})
    assert s.demo_port == 0
    assert s.with_demo_port(5555).upstream == "http://127.0.0.1:5555"
    assert load_settings(env={"GUARDRAIL_DEMO": "yes"}).demo


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cli": {"upstream": None}}, "upstream: no upstream configured"),
        (
            {"cli": {"upstream": "ftp://x.test"}},
            "flag --upstream: upstream: must be an http:// or https:// URL",
        ),
        ({"cli": {"upstream": "https://"}}, "must name a host"),
        ({"cli": {"upstream": "https://user:pw@x.test"}}, "must not carry credentials"),
        ({"cli": {"upstream": "https://x.test/?a=1"}}, "must not have a query"),
        ({"cli": {"upstream": "https://x.test:99999"}}, "must name a host and a valid port"),
        ({"cli": {"upstream": "x.test"}}, "must be an http:// or https:// URL"),
        (
            {"env": {"GUARDRAIL_PORT": "abc"}},
            "environment GUARDRAIL_PORT: port: must be an integer 0-65535",
        ),
        ({"env": {"GUARDRAIL_PORT": "70000"}}, "port: must be an integer 0-65535"),
        ({"cli": {"port": "-1"}}, "flag --port: port"),
        (
            {"env": {"GUARDRAIL_UPSTRAEM": "https://x.test"}},
            "environment GUARDRAIL_UPSTRAEM: unknown setting",
        ),
        ({"env": {"GUARDRAIL_DEMO": "maybe"}}, "demo: must be true or false"),
        (
            {"env": {"GUARDRAIL_TIMEOUTS_READ": "0"}},
            "timeouts.read: must be a number of seconds > 0",
        ),
        (
            {"env": {"GUARDRAIL_MAX_INSPECT_BYTES": "lots"}},
            "max_inspect_bytes: must be a positive size",
        ),
        ({"env": {"GUARDRAIL_LOCALE": "english please"}}, "locale: must be a locale tag"),
        (
            {"env": {"GUARDRAIL_LOCALE_HEADER": "bad header"}},
            "locale_header: must be an HTTP header name",
        ),
        ({"cli": {"log_level": "loud"}}, "flag --log-level: log_level: must be one of"),
        (
            {"cli": {"demo": True, "port": "9000", "demo_port": "9000"}},
            "demo_port: must differ from port",
        ),
        ({"config": "/nonexistent/guardrail.yaml"}, "flag --config: config file"),
    ],
)
def test_bad_values_name_key_and_source(kwargs: dict[str, Any], message: str) -> None:
    cli = {"upstream": "https://ok.test", **kwargs.get("cli", {})}
    with pytest.raises(ConfigError) as caught:
        load_settings(cli=cli, env=kwargs.get("env", {}), config=kwargs.get("config"))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstream: https://x.test\nportt: 1\n", ":2: unknown key 'portt'"),
        (
            "upstream: https://x.test\ntimeouts: {connect: 1, reed: 2}\n",
            ":2: unknown key 'timeouts.reed'",
        ),
        ("upstream: https://x.test\nport: [1]\n", ":2: port: must be an integer"),
        ("upstream: https://x.test\nupstream: https://y.test\n", ":2: duplicate key 'upstream'"),
        ("upstream: [unclosed\n", "invalid YAML"),
        ("- a\n- b\n", "must be a mapping of settings"),
        ("timeouts: 5\n", "'timeouts' must be a mapping"),
        ("routes:\n  - {prefix: /a, upstrem: http://a.test}\n", ":1: routes[0].upstrem: unknown"),
        ("upstream: https://x.test\nroutes: {prefix: /a}\n", ":2: routes: must be a list"),
    ],
)
def test_config_file_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config=config)
    assert str(config) in str(caught.value)
    assert message in str(caught.value)


def test_empty_config_file_is_fine(tmp_path: Path) -> None:
    assert (
        load_settings(cli={"upstream": "http://x.test"}, env={}, config=write(tmp_path, "")).port
        == 8787
    )


def test_every_key_is_documented_in_the_table() -> None:
    doc = settings_module.__doc__ or ""
    for key in KEYS:
        assert f"``{key.name}``" in doc, key.name
        assert f"``{key.env}``" in doc, key.env
        if key.flag:
            assert f"``{key.flag}``" in doc, key.flag
