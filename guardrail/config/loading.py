"""Reading the settings: defaults, then the config file, the environment and the flags.

:func:`load_settings` resolves every key of :data:`guardrail.config.settings.KEYS` once, at
start-up, in that order of precedence (later wins), parsing each value as it is read: a bad value
raises :class:`~guardrail.errors.ConfigError` naming the key and where it came from (the config
file and line, ``environment GUARDRAIL_X``, ``flag --x``), and unknown keys or variables are
errors too. Values that depend on others (the demo and admin ports, the per-client share, the
upstreams every route needs, the audit and state keys) are worked out last, in :func:`_build`.
:func:`load_judges` reads only the ``judges`` key, for commands that do not serve.

The keys, their defaults and the table that documents them are in
:mod:`guardrail.config.settings`; the result is its frozen :class:`~guardrail.config.settings.Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guardrail.config.file import read_config_file
from guardrail.config.routes import RouteError, RouteSpec, parse_routes
from guardrail.config.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    KEYS,
    KEYS_BY_ENV,
    KEYS_BY_NAME,
    SECTIONS,
    Key,
    Settings,
    Timeouts,
    admin_port_for,
    demo_upstream,
)
from guardrail.errors import ConfigError
from guardrail.judge.endpoints import EndpointSpec, JudgeEndpoint, resolve_judges
from guardrail.observe.audit import AuditConfig
from guardrail.policy.sources import as_list
from guardrail.state import config as state_config
from guardrail.state.config import StateConfig

__all__ = ["load_judges", "load_settings"]


_Layer = dict[str, tuple[object, str]]  # dotted name -> (parsed value, source description)


_SELF_NAMING = frozenset({"judges"})  # its messages name the entry: judges.<name>.<key>


def _parsed(key: Key, raw: object, source: str) -> object:
    try:
        return key.parse(raw)
    except ValueError as exc:
        name = "" if key.name in _SELF_NAMING else f"{key.name}: "
        raise ConfigError(f"{source}: {name}{exc}") from None


def _from_env(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = KEYS_BY_ENV.get(name)
        if key is None:
            known = ", ".join(sorted([*KEYS_BY_ENV, CONFIG_ENV]))
            raise ConfigError(f"environment {name}: unknown setting (known: {known})")
        source = f"environment {name}"
        if key.name == "routes":
            layer[key.name] = (_parsed_routes(raw, None, source), source)
            continue
        layer[key.name] = (_parsed(key, raw, source), source)
    return layer


def _from_cli(cli: Mapping[str, object]) -> _Layer:
    layer: _Layer = {}
    for name, raw in cli.items():
        key = KEYS_BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is None:
            continue
        source = f"flag {key.flag or '--' + name}"
        layer[name] = (_parsed(key, raw, source), source)
    return layer


_RELATIVE = ("policies", "audit.path")  # paths in the config file are relative to it


def _from_file(path: Path) -> _Layer:
    layer: _Layer = {}
    for name, (raw, line) in read_config_file(path, KEYS_BY_NAME, SECTIONS).items():
        source = f"config file {path}:{line}"
        if name == "routes":  # relative route policies: relative to the config file too
            layer[name] = (_parsed_routes(raw, path.parent, source), source)
            continue
        value = _parsed(KEYS_BY_NAME[name], raw, source)
        if name in _RELATIVE and isinstance(value, Path) and not value.is_absolute():
            value = path.parent / value
        elif name in _RELATIVE and isinstance(value, tuple):  # a list of policy sources
            value = tuple(p if p.is_absolute() else path.parent / p for p in as_list(value))
        layer[name] = (value, source)
    return layer


def _parsed_routes(raw: object, base: Path | None, source: str) -> tuple[RouteSpec, ...]:
    try:
        return parse_routes(raw, base)
    except ValueError as exc:
        raise ConfigError(f"{source}: {'' if isinstance(exc, RouteError) else 'routes: '}{exc}")


def _config_path(cli_config: str | Path | None, env: Mapping[str, str]) -> Path | None:
    raw = cli_config if cli_config is not None else env.get(CONFIG_ENV)
    if raw is None or str(raw) == "":
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        source = "flag --config" if cli_config is not None else f"environment {CONFIG_ENV}"
        raise ConfigError(f"{source}: config file {str(path)!r} does not exist or is not a file")
    return path


def load_settings(
    cli: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config: str | Path | None = None,
    *,
    require_upstream: bool = True,
) -> Settings:
    """Resolve settings from defaults, the config file, the environment and flags, in that order.

    ``cli`` maps dotted key names to flag values (None = flag not given); ``env`` defaults to
    ``os.environ``; ``config`` is the ``--config`` value. Raises ConfigError on any bad value.
    ``require_upstream`` False: for commands that do not proxy (``guardrail state``), a
    configuration without any upstream is not an error.
    """
    env = os.environ if env is None else env
    config_file = _config_path(config, env)
    values: _Layer = {key.name: (key.default, "default") for key in KEYS}
    if config_file is not None:
        values.update(_from_file(config_file))
    values.update(_from_env(env))
    values.update(_from_cli(cli or {}))
    return _build(values, config_file, env, require_upstream)


def load_judges(
    config: str | Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, JudgeEndpoint]:
    """Only the ``judges`` setting (config file, then ``GUARDRAIL_JUDGES``), API keys resolved:
    for commands that ask judges without serving (``guardrail check``), so need no upstream."""
    env = os.environ if env is None else env
    config_file = _config_path(config, env)
    key = KEYS_BY_NAME["judges"]
    values: _Layer = {key.name: (key.default, "default")}
    if config_file is not None:
        values.update({k: v for k, v in _from_file(config_file).items() if k == key.name})
    if key.env in env:
        source = f"environment {key.env}"
        values[key.name] = (_parsed(key, env[key.env], source), source)
    return _judges(values, env)


def _judges(values: _Layer, env: Mapping[str, str]) -> dict[str, JudgeEndpoint]:
    specs: tuple[EndpointSpec, ...] = values["judges"][0]  # type: ignore[assignment]
    try:
        return resolve_judges(specs, env)
    except ValueError as exc:
        raise ConfigError(f"{values['judges'][1]}: {exc}") from None


def _build(
    values: _Layer,
    config_file: Path | None,
    env: Mapping[str, str],
    require_upstream: bool = True,
) -> Settings:
    """The settings from the resolved layers, with the checks that read several keys at once."""

    def get(name: str) -> Any:
        return values[name][0]

    port: int = get("port")
    demo: bool = get("demo")
    demo_port = _demo_port(values)
    upstream: str | None = demo_upstream(demo_port) if demo else get("upstream")
    specs: tuple[RouteSpec, ...] = get("routes")
    _check_upstreams(values, upstream, specs, require_upstream)
    admin_port = _admin_port(values, demo_port)
    timeouts = Timeouts(**{part: get(f"timeouts.{part}") for part in _TIMEOUTS})
    audit = _audit(values)
    return Settings(
        **{name: get(name) for name in _AS_READ},
        upstream=upstream,
        port=port,
        route_specs=specs,
        timeouts=timeouts,
        max_upstream_per_client=_per_client(values),
        demo=demo,
        demo_port=demo_port,
        admin_host=get("admin_host") or get("host"),
        admin_port=admin_port,
        audit=audit,
        state=_state(values, audit),
        judges=_judges(values, env),
        config_file=config_file,
        sources={name: source for name, (_, source) in values.items()},
    )


_AS_READ = (
    "host", "policies", "locale", "api", "holdback", "max_holdback_chars", "stall_timeout",
    "max_event_bytes", "regenerate", "regenerate_budget", "locale_header", "max_inspect_bytes",
    "max_user_text_chars", "max_connections", "max_request_bytes", "max_client_connections",
    "header_timeout", "keepalive_timeout", "drain_timeout", "workers", "log_level", "log_format",
    "admin_token", "watch_policies", "watch_interval",
)  # fmt: skip
"""Settings fields taken as their key's value, unchanged."""


_TIMEOUTS = ("connect", "read", "write", "pool", "total")


def _demo_port(values: _Layer) -> int:
    """``demo_port``: as set, else the port after the proxy's (any free one if that is picked);
    never the proxy's own port when the demo runs."""
    port: int = values["port"][0]  # type: ignore[assignment]
    demo_port: int | None = values["demo_port"][0]  # type: ignore[assignment]
    if demo_port is None:
        demo_port = port + 1 if 0 < port < 65535 else 0
    if values["demo"][0] and demo_port == port and port != 0:
        raise ConfigError(f"{values['demo_port'][1]}: demo_port: must differ from port {port}")
    return demo_port


def _check_upstreams(
    values: _Layer, upstream: str | None, specs: tuple[RouteSpec, ...], required: bool
) -> None:
    """Every request has somewhere to go: a top-level upstream, or one on each route."""
    if not required or upstream is not None:
        return
    if not specs:
        raise ConfigError(
            "upstream: no upstream configured; pass --upstream URL, set GUARDRAIL_UPSTREAM, "
            "put `upstream:` in the config file, or try --demo"
        )
    for index, spec in enumerate(specs):
        if "upstream" not in dict(spec.given):
            raise ConfigError(
                f"{values['routes'][1]}: routes[{index}].upstream: missing; give the route an "
                "upstream or set the top-level upstream"
            )


def _admin_port(values: _Layer, demo_port: int) -> int:
    """``admin_port``: as set, else 1000 above the proxy's (9787 for 8787), so ``--port`` alone
    moves both (any free port when the proxy's is picked); never a port already taken."""
    port: int = values["port"][0]  # type: ignore[assignment]
    admin_port: int | None = values["admin_port"][0]  # type: ignore[assignment]
    if admin_port is None:
        admin_port = admin_port_for(port)
    taken = {port: "port", **({demo_port: "demo_port"} if values["demo"][0] else {})}
    if admin_port != 0 and admin_port in taken:
        clash = taken[admin_port]
        raise ConfigError(f"{values['admin_port'][1]}: admin_port: must differ from {clash}")
    return admin_port


def _per_client(values: _Layer) -> int:
    """``max_upstream_per_client``: as set (at most ``max_connections``), else a quarter of
    ``max_connections``, so one client address never holds the whole upstream pool."""
    pool: int = values["max_connections"][0]  # type: ignore[assignment]
    given: int | None = values["max_upstream_per_client"][0]  # type: ignore[assignment]
    if given is None:
        return max(1, pool // 4)
    if given > pool:
        source = values["max_upstream_per_client"][1]
        raise ConfigError(
            f"{source}: max_upstream_per_client: must be at most max_connections ({pool}), "
            f"got {given}"
        )
    return given


def _audit(values: _Layer) -> AuditConfig:
    def get(name: str) -> Any:
        return values["audit." + name][0]

    if get("sink") == "file" and get("path") is None:
        source = values["audit.sink"][1]
        raise ConfigError(f"{source}: audit.sink: 'file' needs audit.path (or --audit-path)")
    key: str | None = get("key")
    return AuditConfig(
        sink=get("sink"),
        path=get("path"),
        max_bytes=get("max_bytes"),
        backups=get("backups"),
        key=None if key is None else key.encode("utf-8"),
        excerpt=get("excerpt"),
        conversation_header=get("conversation_header"),
    )


def _state(values: _Layer, audit: AuditConfig) -> StateConfig:
    """``state.*``: the redis backend needs a URL and a key its replicas share."""

    def get(name: str) -> Any:
        return values["state." + name][0]

    backend: str = get("backend")
    source = values["state.backend"][1]
    key, key_source = state_config.resolve_key(get("key"), audit.key)
    if backend == "redis" and get("url") is None:
        raise ConfigError(f"{source}: state.backend: 'redis' needs state.url (redis://host:6379/0)")
    if backend == "redis" and key_source == "random":
        raise ConfigError(
            f"{source}: state.backend: 'redis' is shared by replicas, which must hash user keys "
            "alike: set state.key (or audit.key) to a secret of 16+ characters"
        )
    return StateConfig(
        backend=backend,
        url=get("url"),
        key=key,
        key_source=key_source,
        retention=get("retention"),
        session_gap=get("session_gap"),
        max_users=get("max_users"),
        timezone=get("timezone"),
        user_header=get("user_header"),
        session_header=get("session_header"),
        minor_header=get("minor_header"),
        timeout=get("timeout"),
    )
