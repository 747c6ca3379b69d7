"""Settings: the one place that reads command-line flags, the config file and the environment.

Each value is resolved once, at start-up, with this precedence (later wins)::

    built-in default  <  config file (--config / GUARDRAIL_CONFIG)  <  GUARDRAIL_* environment  <  flag

and validated as it is read: a bad value raises :class:`~guardrail.errors.ConfigError` naming the key
and where it came from (``environment GUARDRAIL_PORT: port: must be an integer 0-65535, got 'abc'``),
so nothing is discovered at request time. The result is a frozen :class:`Settings`.

| config key | environment variable | default | meaning |
|---|---|---|---|
| ``host`` | ``GUARDRAIL_HOST`` | ``127.0.0.1`` | address to listen on (``--host``) |
| ``port`` | ``GUARDRAIL_PORT`` | ``8787`` | port to listen on; 0 picks a free one (``--port``) |
| ``upstream`` | ``GUARDRAIL_UPSTREAM`` | none: required unless ``demo`` | base URL of the OpenAI-compatible API, ``http``/``https``, may carry a base path: ``https://api.openai.com``, ``https://host/openai/v1`` (``--upstream``) |
| ``policies`` | ``GUARDRAIL_POLICIES`` | the bundled ``policies/`` | policy folder or single YAML file (``--policies``); relative paths in the config file are relative to that file |
| ``locale`` | ``GUARDRAIL_LOCALE`` | ``en-US`` | locale of referral resources when a request names none (``--locale``) |
| ``locale_header`` | ``GUARDRAIL_LOCALE_HEADER`` | ``x-guardrail-locale`` | request header that sets the locale per request (not forwarded upstream) |
| ``timeouts.connect`` | ``GUARDRAIL_TIMEOUTS_CONNECT`` | ``10`` | seconds to open a connection to the upstream |
| ``timeouts.read`` | ``GUARDRAIL_TIMEOUTS_READ`` | ``600`` | seconds to wait for each read; a non-streamed reply only starts after the whole generation |
| ``timeouts.write`` | ``GUARDRAIL_TIMEOUTS_WRITE`` | ``60`` | seconds to wait for each write to the upstream |
| ``timeouts.pool`` | ``GUARDRAIL_TIMEOUTS_POOL`` | ``10`` | seconds to wait for a free upstream connection |
| ``timeouts.total`` | ``GUARDRAIL_TIMEOUTS_TOTAL`` | ``none`` (off) | deadline for an inspected exchange (request sent, whole reply read) and for the response headers of any other; streams are not cut |
| ``max_inspect_bytes`` | ``GUARDRAIL_MAX_INSPECT_BYTES`` | ``4MiB`` | largest reply buffered for inspection (bytes, or ``512KiB``, ``4MiB``, ``1MB``); larger ones pass through unchanged, marked ``too-large`` |
| ``max_connections`` | ``GUARDRAIL_MAX_CONNECTIONS`` | ``256`` | most concurrent upstream connections |
| ``log_level`` | ``GUARDRAIL_LOG_LEVEL`` | ``info`` | ``debug``, ``info``, ``warning`` or ``error`` (``--log-level``) |
| ``log_format`` | ``GUARDRAIL_LOG_FORMAT`` | ``auto`` | ``json``, ``console``, or ``auto``: JSON unless stderr is a terminal (``--log-format``) |
| ``demo`` | ``GUARDRAIL_DEMO`` | ``false`` | serve the built-in demo upstream in the same process and use it as the upstream (``--demo``) |
| ``demo_port`` | ``GUARDRAIL_DEMO_PORT`` | ``port + 1`` | port of the demo upstream on 127.0.0.1 (``--demo-port``) |

The config file itself is named by ``--config FILE`` or ``GUARDRAIL_CONFIG``. It is a YAML mapping
of the keys above, with ``timeouts`` as a nested mapping::

    upstream: https://api.openai.com
    port: 8787
    policies: ./policies
    timeouts: {connect: 5, read: 300}

Booleans in the environment accept ``1/true/yes/on`` and ``0/false/no/off``. Unknown keys in the
config file and unknown ``GUARDRAIL_*`` variables are errors, so a typo never goes unnoticed.

Routes: today there is one implicit route, ``/`` -> ``upstream`` speaking ``openai.chat`` with the
global policy set and locale (:attr:`Settings.routes`). A later ``routes:`` key will list several
(path prefix -> upstream, API format, policy set, locale); the top-level keys above stay valid as
the defaults every route inherits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

import guardrail
from guardrail.errors import ConfigError

__all__ = ["ENV_PREFIX", "KEYS", "Route", "Settings", "Timeouts", "load_settings"]

ENV_PREFIX = "GUARDRAIL_"
CONFIG_ENV = "GUARDRAIL_CONFIG"
DEFAULT_POLICIES = Path(guardrail.__file__).parent.parent / "policies"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds; ``total`` None means no overall deadline."""

    connect: float = 10.0
    read: float = 600.0
    write: float = 60.0
    pool: float = 10.0
    total: float | None = None


@dataclass(frozen=True)
class Route:
    """Where requests under ``prefix`` go, which wire format they speak, and how they are guarded.

    ``locale`` None means the global default. Today :attr:`Settings.routes` holds exactly one.
    """

    prefix: str
    upstream: str
    api: str = "openai.chat"
    locale: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved and validated. Build it with :func:`load_settings`."""

    upstream: str
    host: str = "127.0.0.1"
    port: int = 8787
    policies: Path = DEFAULT_POLICIES
    locale: str = "en-US"
    locale_header: str = "x-guardrail-locale"
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_inspect_bytes: int = 4 * 1024 * 1024
    max_connections: int = 256
    log_level: str = "info"
    log_format: str = "auto"
    demo: bool = False
    demo_port: int = 8788
    config_file: Path | None = None

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routing table, longest prefix first. Today: one implicit route for every path."""
        return (Route(prefix="/", upstream=self.upstream),)

    def with_demo_port(self, port: int) -> Settings:
        """The same settings pointed at a demo upstream that was bound on ``port``."""
        return replace(self, demo_port=port, upstream=demo_upstream(port))


def demo_upstream(port: int) -> str:
    """Base URL of the built-in demo upstream listening on loopback ``port``."""
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- value parsers
# Each takes a raw value (a YAML scalar, an environment string or a flag value) and returns the
# typed value or raises ValueError with a message that does not repeat the key (the caller adds it).


def _text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a non-empty string, got {raw!r}")
    return raw.strip()


def _int_in(low: int, high: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().isdigit():
            value = int(raw.strip())
        if value is None or not low <= value <= high:
            raise ValueError(f"must be an integer {low}-{high}, got {raw!r}")
        return value

    return parse


_port = _int_in(0, 65535)


def _seconds(raw: object) -> float:
    try:
        value = (
            float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else -1
        )
    except ValueError:
        value = -1
    if not value > 0:
        raise ValueError(f"must be a number of seconds > 0, got {raw!r}")
    return value


def _optional_seconds(raw: object) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "off", "")):
        return None
    return _seconds(raw)


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _size(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    match = _SIZE.match(raw) if isinstance(raw, str) else None
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"must be a positive size in bytes (e.g. 4194304 or 4MiB), got {raw!r}")
    return int(match[1]) * _UNITS[(match[2] or "b").lower()]


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return raw.strip().lower()

    return parse


_LOCALE = re.compile(r"^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|intl)$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _locale(raw: object) -> str:
    value = _text(raw)
    if not _LOCALE.match(value):
        raise ValueError(f"must be a locale tag such as en-US, en-GB or intl, got {raw!r}")
    return value


def _header_name(raw: object) -> str:
    value = _text(raw)
    if not _TOKEN.match(value):
        raise ValueError(f"must be an HTTP header name, got {raw!r}")
    return value.lower()


def _path(raw: object) -> Path:
    return Path(_text(raw)).expanduser()


def parse_upstream(raw: object) -> str:
    """Validate an upstream base URL and return it normalised (no trailing slash).

    Only ``http``/``https`` with a host; no credentials, query or fragment (credentials belong in
    the client's ``Authorization`` header, which passes through).
    """
    text = _text(raw)
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        raise ValueError(f"must be a URL without spaces, got {raw!r}")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        raise ValueError(f"must name a host and a valid port, got {raw!r}")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials; send them in the Authorization header")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"must not have a query or fragment, got {raw!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class Key:
    """One setting: its dotted config name, parser, default, and command-line flag if any."""

    name: str
    parse: Callable[[object], Any]
    default: object
    flag: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace(".", "_")


KEYS: tuple[Key, ...] = (
    Key("host", _text, "127.0.0.1", "--host"),
    Key("port", _port, 8787, "--port"),
    Key("upstream", parse_upstream, None, "--upstream"),
    Key("policies", _path, DEFAULT_POLICIES, "--policies"),
    Key("locale", _locale, "en-US", "--locale"),
    Key("locale_header", _header_name, "x-guardrail-locale"),
    Key("timeouts.connect", _seconds, Timeouts.connect),
    Key("timeouts.read", _seconds, Timeouts.read),
    Key("timeouts.write", _seconds, Timeouts.write),
    Key("timeouts.pool", _seconds, Timeouts.pool),
    Key("timeouts.total", _optional_seconds, None),
    Key("max_inspect_bytes", _size, 4 * 1024 * 1024),
    Key("max_connections", _int_in(1, 100_000), 256),
    Key("log_level", _choice(LOG_LEVELS), "info", "--log-level"),
    Key("log_format", _choice(LOG_FORMATS), "auto", "--log-format"),
    Key("demo", _bool, False, "--demo"),
    Key("demo_port", _port, None, "--demo-port"),
)
_BY_NAME = {key.name: key for key in KEYS}
_BY_ENV = {key.env: key for key in KEYS}
_SECTIONS = frozenset(key.name.rsplit(".", 1)[0] for key in KEYS if "." in key.name)

# --------------------------------------------------------------------------- resolution

_Layer = dict[str, tuple[object, str]]  # dotted name -> (parsed value, source description)


def _parsed(key: Key, raw: object, source: str) -> object:
    try:
        return key.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {key.name}: {exc}") from None


def _from_env(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = _BY_ENV.get(name)
        if key is None:
            known = ", ".join(sorted([*_BY_ENV, CONFIG_ENV]))
            raise ConfigError(f"environment {name}: unknown setting (known: {known})")
        source = f"environment {name}"
        layer[key.name] = (_parsed(key, raw, source), source)
    return layer


def _from_cli(cli: Mapping[str, object]) -> _Layer:
    layer: _Layer = {}
    for name, raw in cli.items():
        key = _BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is None:
            continue
        source = f"flag {key.flag or '--' + name}"
        layer[name] = (_parsed(key, raw, source), source)
    return layer


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "malformed YAML"
    return ConfigError(f"config file {where}: invalid YAML: {problem}")


def _read_config_file(path: Path) -> dict[str, tuple[object, int]]:
    """Read the config file into ``{dotted key: (raw value, line)}``; unknown keys are errors."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if node is None:
        return {}
    out: dict[str, tuple[object, int]] = {}
    _flatten(path, node, data, "", out)
    return out


def _flatten(
    path: Path, node: yaml.Node, data: object, prefix: str, out: dict[str, tuple[object, int]]
) -> None:
    where = f"config file {path}:{node.start_mark.line + 1}"
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        what = f"{prefix.rstrip('.')!r}" if prefix else "the file"
        raise ConfigError(f"{where}: {what} must be a mapping of settings")
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        name = prefix + str(key_node.value)
        if name in out:
            raise ConfigError(f"config file {path}:{line}: duplicate key {name!r}")
        if name in _SECTIONS:
            _flatten(path, value_node, data.get(key_node.value), name + ".", out)
        elif name in _BY_NAME and isinstance(key_node.value, str):
            out[name] = (data.get(key_node.value), line)
        else:
            known = ", ".join(sorted(_BY_NAME))
            raise ConfigError(f"config file {path}:{line}: unknown key {name!r} (known: {known})")


def _from_file(path: Path) -> _Layer:
    layer: _Layer = {}
    for name, (raw, line) in _read_config_file(path).items():
        source = f"config file {path}:{line}"
        value = _parsed(_BY_NAME[name], raw, source)
        if name == "policies" and isinstance(value, Path) and not value.is_absolute():
            value = path.parent / value
        layer[name] = (value, source)
    return layer


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
) -> Settings:
    """Resolve settings from defaults, the config file, the environment and flags, in that order.

    ``cli`` maps dotted key names to flag values (None = flag not given); ``env`` defaults to
    ``os.environ``; ``config`` is the ``--config`` value. Raises ConfigError on any bad value.
    """
    env = os.environ if env is None else env
    config_file = _config_path(config, env)
    values: _Layer = {key.name: (key.default, "default") for key in KEYS}
    if config_file is not None:
        values.update(_from_file(config_file))
    values.update(_from_env(env))
    values.update(_from_cli(cli or {}))
    return _build(values, config_file)


def _build(values: _Layer, config_file: Path | None) -> Settings:
    def get(name: str) -> Any:
        return values[name][0]

    port: int = get("port")
    demo: bool = get("demo")
    demo_port: int | None = get("demo_port")
    if demo_port is None:  # default: the port after the proxy's (or any free one)
        demo_port = port + 1 if 0 < port < 65535 else 0
    if demo and demo_port == port and port != 0:
        raise ConfigError(f"{values['demo_port'][1]}: demo_port: must differ from port {port}")
    upstream: str | None = demo_upstream(demo_port) if demo else get("upstream")
    if upstream is None:
        raise ConfigError(
            "upstream: no upstream configured; pass --upstream URL, set GUARDRAIL_UPSTREAM, "
            "put `upstream:` in the config file, or try --demo"
        )
    timeouts = Timeouts(
        connect=get("timeouts.connect"),
        read=get("timeouts.read"),
        write=get("timeouts.write"),
        pool=get("timeouts.pool"),
        total=get("timeouts.total"),
    )
    return Settings(
        upstream=upstream,
        host=get("host"),
        port=port,
        policies=get("policies"),
        locale=get("locale"),
        locale_header=get("locale_header"),
        timeouts=timeouts,
        max_inspect_bytes=get("max_inspect_bytes"),
        max_connections=get("max_connections"),
        log_level=get("log_level"),
        log_format=get("log_format"),
        demo=demo,
        demo_port=demo_port,
        config_file=config_file,
    )
