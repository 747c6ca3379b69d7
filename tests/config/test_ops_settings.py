"""The settings this issue adds: admin listener, token, audit, policy watching."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from guardrail.cli import main
from guardrail.cli import serve
from guardrail.errors import ConfigError
from guardrail.config.loading import load_settings

UP = {"upstream": "http://up.test"}


def test_defaults() -> None:
    s = load_settings(cli=UP, env={})
    assert (s.admin_host, s.admin_port, s.admin_token) == ("127.0.0.1", 9787, None)
    assert (s.audit.sink, s.audit.excerpt, s.audit.key, s.audit.path) == (
        "stdout",
        False,
        None,
        None,
    )
    assert (s.audit.max_bytes, s.audit.backups) == (10 * 1024 * 1024, 5)
    assert (s.watch_policies, s.watch_interval) == (False, 2.0)
    assert load_settings(cli={**UP, "host": "0.0.0.0"}, env={}).admin_host == "0.0.0.0"
    assert load_settings(cli={**UP, "port": "0"}, env={}).admin_port == 0


@pytest.mark.parametrize(
    ("port", "admin"), [("9000", 10000), ("8080", 9080), ("65000", 64000), ("1", 1001)]
)
def test_changing_port_alone_moves_the_admin_port_with_it(port: str, admin: int) -> None:
    """First-run friction (issue 13): ``--port 9000`` alone used to keep the admin listener on
    9787, so two proxies on one host collided there. The admin port now follows the proxy's,
    1000 above it (below when that is past 65535), unless it is set."""
    s = load_settings(cli={**UP, "port": port}, env={})
    assert s.admin_port == admin
    assert load_settings(cli={**UP, "port": port, "admin_port": "7000"}, env={}).admin_port == 7000


def test_environment_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "guardrail.yaml"
    config.write_text(
        "upstream: http://up.test\n"
        "admin_port: 9900\n"
        "audit: {sink: file, path: logs/audit.jsonl, max_bytes: 1MiB, backups: 2,"
        " excerpt: true, conversation_header: X-Conversation-Id}\n"
        "watch_policies: true\nwatch_interval: 0.5\n"
    )
    env = {
        "GUARDRAIL_ADMIN_TOKEN": "t" * 20,
        "GUARDRAIL_AUDIT_KEY": "k" * 32,
        "GUARDRAIL_ADMIN_HOST": "10.0.0.5",
    }
    s = load_settings(env=env, config=config)
    assert (s.admin_host, s.admin_port, s.admin_token) == ("10.0.0.5", 9900, "t" * 20)
    assert s.audit.path == tmp_path / "logs" / "audit.jsonl"
    assert (s.audit.max_bytes, s.audit.backups, s.audit.excerpt) == (2**20, 2, True)
    assert s.audit.conversation_header == "x-conversation-id"
    assert s.audit.key == b"k" * 32
    assert (s.watch_policies, s.watch_interval) == (True, 0.5)
    assert "t" * 20 not in repr(s) and "k" * 32 not in repr(s)


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        ({"port": "8000", "admin_port": "8000"}, {}, "admin_port: must differ from port"),
        ({"audit.sink": "file"}, {}, "'file' needs audit.path"),
        ({"audit.sink": "syslog"}, {}, "audit.sink: must be one of stdout, file, off"),
        ({}, {"GUARDRAIL_WATCH_INTERVAL": "0"}, "watch_interval: must be a number of seconds"),
        ({}, {"GUARDRAIL_AUDIT_BACKUPS": "-1"}, "audit.backups: must be an integer 0-1000"),
    ],
)
def test_bad_values_name_the_key(cli: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(cli={**UP, **cli}, env=env)


def test_a_short_secret_is_refused_without_being_echoed() -> None:
    for name in ("GUARDRAIL_ADMIN_TOKEN", "GUARDRAIL_AUDIT_KEY"):
        with pytest.raises(ConfigError) as info:
            load_settings(cli=UP, env={name: "short-secret"})
        assert "at least 16 characters" in str(info.value)
        assert "short-secret" not in str(info.value)


def test_serve_flags_map_to_the_settings() -> None:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(
        ["--admin-port", "9901", "--admin-host", "::1", "--watch-policies", "--audit-sink", "off"]
    )
    assert (args.admin_port, args.admin_host, args.watch_policies) == ("9901", "::1", True)
    assert args.audit_sink == "off" and args.audit_path is None


@pytest.mark.slow
def test_an_audit_file_that_cannot_be_opened_stops_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error says where the value came from (here the flag), like every config error."""
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "audit.jsonl"  # its folder is a file: it cannot be made
    argv = [
        "serve",
        "--upstream",
        "http://up.test",
        "--port",
        "0",
        "--audit-sink",
        "file",
        "--audit-path",
        str(blocked),
    ]
    assert main(argv) == 2
    assert f"--audit-path: audit.path: cannot open {blocked}" in capsys.readouterr().err


def test_an_audit_folder_missing_on_a_fresh_host_is_created(tmp_path: Path) -> None:
    """First-run friction (issue 13): the production config's audit path failed on a fresh host
    because its folder did not exist. The folder is now made at start-up."""
    path = tmp_path / "var" / "log" / "guardrail" / "audit.jsonl"
    config = tmp_path / "guardrail.yaml"
    config.write_text(f"upstream: http://up.test\naudit: {{sink: file, path: {path}}}\n")
    settings = load_settings(config=config, env={})
    assert settings.sources["audit.path"].startswith(f"config file {config}")
    recorder = serve._recorder(settings)
    try:
        assert path.parent.is_dir()
    finally:
        recorder.close()
