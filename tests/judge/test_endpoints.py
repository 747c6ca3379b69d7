"""The ``judges:`` setting: parsed at load time, errors naming the key and where it came from,
the API key read from the variable ``api_key_env`` names and never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.errors import ConfigError
from guardrail.judge.endpoints import JudgeEndpoint, parse_judges
from guardrail.config.loading import load_judges, load_settings

KEY = "sk-test-0123456789abcdefSECRET"
CONFIG = """\
upstream: http://upstream.test
judges:
  default:
    url: https://judge.test/v1/
    model: gpt-4o-mini
    api_key_env: JUDGE_KEY
    timeout: 1.5
    fail: closed
    max_chars: 2000
    max_concurrency: 4
    calls_per_minute: 120
    cache_ttl: 30
    cache_size: 100
  local: {url: "http://127.0.0.1:11434/v1", model: "llama3.2:3b"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guardrail.yaml"
    path.write_text(text)
    return path


def test_a_config_file_gives_every_endpoint_with_its_key(tmp_path: Path) -> None:
    settings = load_settings(env={"JUDGE_KEY": KEY}, config=write(tmp_path, CONFIG))
    default, local = settings.judges["default"], settings.judges["local"]
    assert default == JudgeEndpoint(
        name="default",
        url="https://judge.test/v1",
        model="gpt-4o-mini",
        api_key=KEY,
        timeout=1.5,
        fail="closed",
        max_chars=2000,
        max_concurrency=4,
        calls_per_minute=120,
        cache_ttl=30.0,
        cache_size=100,
    )
    assert default.completions_url == "https://judge.test/v1/chat/completions"
    assert local.api_key is None and local.fail == "open" and local.timeout == 2.0
    assert local.calls_per_minute == 600
    assert KEY not in repr(settings) and KEY not in repr(default)


def test_no_judges_by_default() -> None:
    assert load_settings(cli={"upstream": "http://x.test"}, env={}).judges == {}


def test_the_environment_gives_judges_as_yaml() -> None:
    env = {"GUARDRAIL_JUDGES": "g: {url: 'http://127.0.0.1:8000/v1/chat/completions', model: m}"}
    judges = load_settings(cli={"upstream": "http://x.test"}, env=env).judges
    assert judges["g"].completions_url == "http://127.0.0.1:8000/v1/chat/completions"


def test_a_missing_key_variable_names_the_variable_and_the_line(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config=config)
    message = str(caught.value)
    assert f"config file {config}:2: judges.default.api_key_env" in message
    assert "JUDGE_KEY is not set" in message


@pytest.mark.parametrize("bad", ["has space inside", "line\nbreak", "   "])
def test_a_bad_key_is_refused_without_echoing_it(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"JUDGE_KEY": bad}, config=write(tmp_path, CONFIG))
    assert "judges.default.api_key_env" in str(caught.value)
    assert bad.strip() not in str(caught.value) or not bad.strip()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{url: http://j.test, model: m, timeout: 0}", "judges.j.timeout: must be a number"),
        ("{url: http://j.test, model: m, fail: maybe}", "judges.j.fail: must be one of open"),
        ("{url: ftp://j.test, model: m}", "judges.j.url: must be an http:// or https:// URL"),
        ("{url: 'http://u:p@j.test', model: m}", "judges.j.url: must not carry credentials"),
        ("{url: http://j.test}", "judges.j.model: missing"),
        ("{model: m}", "judges.j.url: missing"),
        ("{url: http://j.test, model: m, api_key: sk-x}", "judges.j.api_key: unknown key"),
        ("{url: http://j.test, model: m, api_key_env: 'A B'}", "judges.j.api_key_env: must be"),
        ("{url: http://j.test, model: m, max_chars: -1}", "judges.j.max_chars: must be"),
        ("{url: http://j.test, model: m, calls_per_minute: 0}", "judges.j.calls_per_minute"),
        ("[1, 2]", "judges.j: must be a mapping"),
    ],
)
def test_bad_entries_name_the_key_and_the_file_line(
    tmp_path: Path, entry: str, message: str
) -> None:
    config = write(tmp_path, f"upstream: http://x.test\njudges:\n  j: {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, config=config)
    assert f"config file {config}:2: {message}" in str(caught.value)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment GUARDRAIL_JUDGES: judges: must be a"):
        load_settings(cli={"upstream": "http://x.test"}, env={"GUARDRAIL_JUDGES": "[a, b]"})


def test_calls_per_minute_none_means_no_cap() -> None:
    (spec,) = parse_judges({"j": {"url": "http://j.test", "model": "m", "calls_per_minute": None}})
    assert spec.endpoint.calls_per_minute is None


def test_load_judges_needs_no_upstream(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG.replace("upstream: http://upstream.test\n", ""))
    judges = load_judges(config, env={"JUDGE_KEY": KEY})
    assert sorted(judges) == ["default", "local"] and judges["default"].api_key == KEY
    assert load_judges(None, env={}) == {}
    env = {"GUARDRAIL_JUDGES": "e: {url: 'http://e.test', model: m}", "JUDGE_KEY": KEY}
    assert sorted(load_judges(config, env=env)) == ["e"]  # the environment wins
