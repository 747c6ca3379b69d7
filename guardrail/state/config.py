"""The state layer's settings, resolved: the ``state.*`` keys of ``guardrail.config.settings``.

``guardrail.config.settings`` parses and validates each key and builds one :class:`StateConfig`; this
module owns the defaults and the rule for the HMAC key (:func:`resolve_key`): ``state.key``,
else ``audit.key``, else a random key made once per process, which only the memory backend may
use (a store shared by replicas needs a key they share, or the same user would get a different
key on each replica).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "BACKENDS",
    "DEFAULT_RETENTION",
    "DEFAULT_SESSION_GAP",
    "DEFAULT_TIMEOUT",
    "StateConfig",
    "resolve_key",
    "timezone",
]

BACKENDS = ("memory", "redis")
DEFAULT_RETENTION = 30 * 86400.0
"""Seconds a user's state is kept after their last activity (30 days)."""
DEFAULT_SESSION_GAP = 30 * 60.0
"""Seconds without activity after which the next request starts a new session (30 minutes)."""
DEFAULT_TIMEOUT = 0.05
"""Seconds one store operation may take before it counts as failed (50 ms)."""
DEFAULT_MAX_USERS = 100_000


def timezone(raw: object) -> str:
    """Parse an IANA time zone name (``UTC``, ``Europe/Berlin``); ValueError if unknown."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be an IANA time zone name such as UTC or Berlin, got {raw!r}")
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r} (IANA names: UTC, Europe/Berlin)") from None
    return raw.strip()


def resolve_key(state_key: str | None, audit_key: bytes | None) -> tuple[bytes, str]:
    """The HMAC key for user and session keys and where it came from: ``state.key``,
    ``audit.key`` or ``random`` (32 random bytes, this process only)."""
    if state_key is not None:
        return state_key.encode("utf-8"), "state.key"
    if audit_key is not None:
        return audit_key, "audit.key"
    return secrets.token_bytes(32), "random"


@dataclass(frozen=True)
class StateConfig:
    """Every ``state.*`` setting, validated (see the table in ``guardrail.config.settings``)."""

    backend: str = "memory"
    url: str | None = None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False, compare=False)
    key_source: str = "random"
    retention: float = DEFAULT_RETENTION
    session_gap: float = DEFAULT_SESSION_GAP
    max_users: int = DEFAULT_MAX_USERS
    timezone: str = "UTC"
    user_header: str = "x-guardrail-user"
    session_header: str = "x-guardrail-session"
    minor_header: str = "x-guardrail-minor"
    timeout: float = DEFAULT_TIMEOUT

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def headers(self) -> tuple[str, ...]:
        """The request headers the state layer reads; none of them is forwarded upstream."""
        return (self.user_header, self.session_header, self.minor_header)
