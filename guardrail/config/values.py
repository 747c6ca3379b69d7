"""Parsers of setting values: a raw value in, the typed value out, or ValueError.

Each takes a raw value (a YAML scalar, an environment string or a flag value) and returns the
typed value or raises ValueError with a message that does not repeat the key (the caller,
``guardrail.config.settings``, adds the key and where the value came from). Pure functions, no I/O.
Secrets (:func:`secret`) are never quoted back in an error message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from guardrail.formats import registry
from guardrail.policy.sources import PolicySource, parse_sources

__all__ = [
    "API_NAMES",
    "HOLDBACK_MODES",
    "api",
    "boolean",
    "choice",
    "duration",
    "header_name",
    "holdback",
    "int_in",
    "locale",
    "nonempty",
    "optional_seconds",
    "parse_upstream",
    "path",
    "policy_sources",
    "port",
    "redis_url",
    "seconds",
    "secret",
    "size",
]


def nonempty(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a non-empty string, got {raw!r}")
    return raw.strip()


def int_in(low: int, high: int) -> Callable[[object], int]:
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


port = int_in(0, 65535)


def seconds(raw: object) -> float:
    try:
        value = (
            float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else -1
        )
    except ValueError:
        value = -1
    if not value > 0:
        raise ValueError(f"must be a number of seconds > 0, got {raw!r}")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(raw: object) -> float:
    """Seconds > 0 given as a number or with a unit: ``90``, ``30m``, ``12h``, ``30d``."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return seconds(raw)
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    value = float(match[1]) * _DURATION_UNITS[(match[2] or "s").lower()] if match else 0.0
    if not value > 0:
        raise ValueError(
            f"must be a duration > 0 (seconds, or with s, m, h, d: 30m, 30d), got {raw!r}"
        )
    return value


def optional_seconds(raw: object) -> float | None:
    """Seconds, or None for ``none``/``off`` (YAML reads a bare ``off`` as false)."""
    if raw is None or raw is False:
        return None
    if isinstance(raw, str) and raw.strip().lower() in ("none", "off", ""):
        return None
    return seconds(raw)


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def size(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    match = _SIZE.match(raw) if isinstance(raw, str) else None
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"must be a positive size in bytes (e.g. 4194304 or 4MiB), got {raw!r}")
    return int(match[1]) * _UNITS[(match[2] or "b").lower()]


def boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return raw.strip().lower()

    return parse


_LOCALE = re.compile(r"^(?:[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|intl)$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def locale(raw: object) -> str:
    value = nonempty(raw)
    if not _LOCALE.match(value):
        raise ValueError(f"must be a locale tag such as en-US, en-GB or intl, got {raw!r}")
    return value


def header_name(raw: object) -> str:
    value = nonempty(raw)
    if not _TOKEN.match(value):
        raise ValueError(f"must be an HTTP header name, got {raw!r}")
    return value.lower()


def path(raw: object) -> Path:
    return Path(nonempty(raw)).expanduser()


def policy_sources(raw: object) -> PolicySource:
    """A policy folder, file or ``default`` (the bundled pack), or a list of them: a YAML list,
    a comma-separated string, or repeated flags (``guardrail.policy.sources.parse_sources``)."""
    return parse_sources(raw)


def parse_upstream(raw: object) -> str:
    """Validate an upstream base URL and return it normalised (no trailing slash).

    Only ``http``/``https`` with a host; no credentials, query or fragment (credentials belong in
    the client's ``Authorization`` header, which passes through).
    """
    text = nonempty(raw)
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        raise ValueError(f"must be a URL without spaces, got {raw!r}")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    try:
        number = parts.port
    except ValueError:
        number = -1
    if not parts.hostname or number == -1 or number == 0:
        raise ValueError(f"must name a host and a valid port, got {raw!r}")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials; send them in the Authorization header")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"must not have a query or fragment, got {raw!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url(raw: object) -> str:
    """A Redis URL: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path``. The error never quotes it back: it may hold a password."""
    text = nonempty(raw)
    parts = urlsplit(text)
    try:
        number = parts.port
    except ValueError:
        number = -1
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES or any(c.isspace() for c in text):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL must name a socket path (unix:///run/redis.sock)")
    if scheme != "unix" and (not parts.hostname or number == -1 or number == 0):
        raise ValueError("must name a host and a valid port (redis://host:6379/0)")
    return text


def secret(raw: object) -> str:
    """A token or key: at least 16 characters, no whitespace. Never echoed in the error."""
    if not isinstance(raw, str) or len(raw.strip()) < 16 or any(c.isspace() for c in raw.strip()):
        raise ValueError("must be a secret of at least 16 characters without spaces")
    return raw.strip()


API_NAMES = registry.API_NAMES
"""The wire formats guardrail inspects (from the registry)."""
HOLDBACK_MODES = ("sentence", "none", "full")

api = choice(("auto", *API_NAMES))
"""``auto`` (recognise the API from the path) or one API name."""
holdback = choice(HOLDBACK_MODES)


def event_size(raw: object) -> int:
    """A :func:`size` of at least 1 KiB: the largest upstream stream event (an SSE event, an
    NDJSON line) guardrail buffers; smaller would cut ordinary events."""
    value = size(raw)
    if value < 1024:
        raise ValueError(f"must be at least 1KiB (1024 bytes), got {raw!r}")
    return value
