"""Judge endpoints: the ``judges:`` setting, parsed and validated at load time.

``judges:`` maps an endpoint name (the ``endpoint:`` a judge detector names) to the settings of
one OpenAI-compatible Chat Completions server: a hosted small model, or a local guard model
served by Ollama (``http://127.0.0.1:11434/v1``) or vLLM (``http://127.0.0.1:8000/v1``)::

    judges:
      default:
        url: https://api.openai.com/v1       # POST {url}/chat/completions
        model: gpt-4o-mini
        api_key_env: OPENAI_API_KEY          # the key is read from this variable, never from here
        timeout: 2                           # seconds per question, waiting for a slot included
        fail: open                           # open: unanswered = unknown (false); closed: true
        max_chars: 4000                      # most characters of text one question shows
        max_concurrency: 16                  # questions in flight to this endpoint at once
        calls_per_minute: 600                # the budget: calls this process may make per minute
        cache_ttl: 600                       # seconds an answer is reused for the same text
        cache_size: 10000                    # answers remembered (least recently used go first)

Parsing happens in two steps, both at start-up: :func:`parse_judges` (pure: raw YAML or its text
from ``GUARDRAIL_JUDGES`` -> :class:`EndpointSpec` per name, raising ValueError naming
``<name>.<key>``) and :func:`resolve_judges` (reads each ``api_key_env`` variable from the given
environment -> :class:`JudgeEndpoint`). A missing variable is an error naming the variable; the
key itself never appears in an error, a log line or a ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from guardrail.config import values as cv

__all__ = [
    "ENDPOINT_KEYS",
    "FAIL_MODES",
    "EndpointSpec",
    "JudgeEndpoint",
    "parse_judges",
    "resolve_judges",
]

FAIL_MODES = ("open", "closed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class JudgeEndpoint:
    """One judge endpoint, resolved: where to ask, how long to wait, what a failure means.

    ``fail``: ``open`` turns an unanswered question (timeout, error, malformed answer, budget
    spent) into None (unknown: the judge's signal is false); ``closed`` into True (the policy
    acts as if the judge said yes). ``calls_per_minute`` is the budget of this process: a token
    bucket of that size, refilled evenly over a minute; None means no cap.
    """

    name: str
    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 2.0
    fail: str = "open"
    max_chars: int = 4000
    max_concurrency: int = 16
    calls_per_minute: int | None = 600
    cache_ttl: float = 600.0
    cache_size: int = 10_000

    @property
    def completions_url(self) -> str:
        """``{url}/chat/completions``, unless ``url`` already names that path."""
        if self.url.endswith("/chat/completions"):
            return self.url
        return self.url + "/chat/completions"


@dataclass(frozen=True)
class EndpointSpec:
    """One ``judges:`` entry as configured: the API key is still a variable name."""

    endpoint: JudgeEndpoint
    api_key_env: str | None = None


def _env_name(raw: object) -> str:
    text = cv.nonempty(raw)
    if not _ENV_NAME.match(text):
        raise ValueError(f"must be the name of an environment variable, got {raw!r}")
    return text


def _optional_count(raw: object) -> int | None:
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() == "none"):
        return None
    return cv.int_in(1, 10_000_000)(raw)


_PARSERS: dict[str, Callable[[object], Any]] = {
    "url": cv.parse_upstream,
    "model": cv.nonempty,
    "api_key_env": _env_name,
    "timeout": cv.seconds,
    "fail": cv.choice(FAIL_MODES),
    "max_chars": cv.int_in(1, 1_000_000),
    "max_concurrency": cv.int_in(1, 10_000),
    "calls_per_minute": _optional_count,
    "cache_ttl": cv.seconds,
    "cache_size": cv.int_in(0, 10_000_000),
}
ENDPOINT_KEYS = tuple(_PARSERS)
"""The keys of one ``judges:`` entry; ``url`` and ``model`` are required."""
_REQUIRED = ("url", "model")
_FIELDS = {f.name for f in fields(JudgeEndpoint)}


def parse_judges(raw: object) -> tuple[EndpointSpec, ...]:
    """Parse a ``judges:`` mapping (or its YAML text, from the environment).

    Raises ValueError whose message starts with ``judges.<name>.<key>:`` for a bad entry."""
    if isinstance(raw, str):
        import yaml

        try:
            raw = yaml.safe_load(raw) if raw.strip() else {}
        except yaml.YAMLError:
            raise ValueError("judges: must be a YAML mapping of endpoint names") from None
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError("judges: must be a mapping of names to {url, model, ...}")  # noqa: TRY004
    return tuple(_entry(name, entry) for name, entry in raw.items())


def _entry(name: object, entry: object) -> EndpointSpec:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"judges.{name!r}: an endpoint name is 1-64 letters, digits, '_', '.' or '-'"
        )
    if not isinstance(entry, dict):
        raise ValueError(f"judges.{name}: must be a mapping with url and model")  # noqa: TRY004
    unknown = sorted(str(k) for k in entry if k not in _PARSERS)
    if unknown:
        known = ", ".join(ENDPOINT_KEYS)
        raise ValueError(f"judges.{name}.{unknown[0]}: unknown key (known: {known})")
    for key in _REQUIRED:
        if key not in entry:
            raise ValueError(f"judges.{name}.{key}: missing (every endpoint needs url and model)")
    values: dict[str, Any] = {}
    for key, value in entry.items():
        try:
            values[key] = _PARSERS[key](value)
        except ValueError as exc:
            raise ValueError(f"judges.{name}.{key}: {exc}") from None
    key_env = values.pop("api_key_env", None)
    endpoint = JudgeEndpoint(name=name, **{k: v for k, v in values.items() if k in _FIELDS})
    return EndpointSpec(endpoint, key_env)


def resolve_judges(
    specs: tuple[EndpointSpec, ...], env: Mapping[str, str]
) -> dict[str, JudgeEndpoint]:
    """Endpoints by name, each API key read from its ``api_key_env`` variable in ``env``.

    Raises ValueError naming ``judges.<name>.api_key_env`` and the variable (never its value)
    when the variable is unset, empty, or holds whitespace or control characters (it goes in a
    header)."""
    out: dict[str, JudgeEndpoint] = {}
    for spec in specs:
        endpoint = spec.endpoint
        if spec.api_key_env is not None:
            key = env.get(spec.api_key_env, "").strip()
            where = f"judges.{endpoint.name}.api_key_env: environment variable {spec.api_key_env}"
            if not key:
                raise ValueError(f"{where} is not set or empty")
            if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in key):
                raise ValueError(f"{where} holds whitespace or control characters")
            endpoint = replace(endpoint, api_key=key)
        out[endpoint.name] = endpoint
    return out

