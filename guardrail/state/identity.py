"""Who is talking and in which session: the :class:`Identity` of one request.

:func:`identify` reads, in this order:

* the user key: the ``state.user_header`` request header (``x-guardrail-user``), else the body
  field the request's API defines for it: OpenAI Chat Completions and Responses
  ``safety_identifier``, else ``user``; Anthropic Messages ``metadata.user_id``; Ollama has none;
* the session key: the ``state.session_header`` header (``x-guardrail-session``), optional;
* a minor: the ``state.minor_header`` header (``x-guardrail-minor: true``) or the route's
  ``minor: true``.

Raw keys never leave this module: the Identity holds their HMACs (``guardrail.state.keys``), so
what is stored, logged or compared is the hash. No user key (or an empty one): no Identity, and
the request flow skips every state-based policy. The headers are guardrail's own and are not
forwarded upstream (:func:`state_header_names` lists them for the forwarder to drop); body fields
belong to the API and pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from guardrail.formats.registry import FORMATS
from guardrail.state.config import StateConfig
from guardrail.state.keys import Keyring

__all__ = ["Identity", "identify", "identify_user", "state_header_names", "strip_state_headers"]

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Identity:
    """One request's user and session, as stored keys (HMACs, never the raw ids).

    ``session`` None: no session key was given, and the session is the run of requests without
    a gap longer than ``state.session_gap``. ``source``: where the user key came from,
    ``header`` or ``body`` (for the log line).
    """

    user: str
    session: str | None = None
    minor: bool = False
    source: str = "header"


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def body_user(body: object, api: str | None) -> str | None:
    """The raw user id a request body carries in its API's own field, if any (the format's
    ``user_of``: the same reading the proxy's parser gives ``ChatRequest.user``)."""
    fmt = FORMATS.get(api or "")
    if fmt is None or not isinstance(body, Mapping):
        return None
    return fmt.user_of(body)


def identify(
    headers: Mapping[str, str],
    body: object,
    api: str | None,
    config: StateConfig,
    *,
    minor_route: bool = False,
) -> Identity | None:
    """The request's Identity, or None when it names no user.

    ``headers``: the request headers (a starlette ``Headers`` or any mapping; names are
    compared case-insensitively). ``body``: the parsed JSON body (anything else is ignored).
    ``api``: the request's API name. ``minor_route``: the route marks every user a minor.
    """
    return identify_user(headers, body_user(body, api), config, minor_route=minor_route)


def identify_user(
    headers: Mapping[str, str],
    raw_body_user: str | None,
    config: StateConfig,
    *,
    minor_route: bool = False,
) -> Identity | None:
    """:func:`identify` when the body's user id was already read (the request flow has it
    from the API's parser, ``ChatRequest.user``): the header wins over the body."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    raw_user = _text(lowered.get(config.user_header))
    source = "header"
    if raw_user is None:
        raw_user, source = _text(raw_body_user), "body"
    if raw_user is None:
        return None
    keys = Keyring(config.key)
    user = keys.user(raw_user)
    raw_session = _text(lowered.get(config.session_header))
    minor_flag = (_text(lowered.get(config.minor_header)) or "").lower() in _TRUE
    return Identity(
        user=user,
        session=None if raw_session is None else keys.session(user, raw_session),
        minor=minor_route or minor_flag,
        source=source,
    )


def state_header_names(config: StateConfig) -> tuple[bytes, ...]:
    """The state layer's request headers, lower-case bytes, for ``request_headers(drop=...)``."""
    return tuple(name.lower().encode("latin-1") for name in config.headers)


def strip_state_headers(
    raw: Iterable[tuple[bytes, bytes]], config: StateConfig
) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs without the state layer's headers (in any letter case)."""
    drop = frozenset(state_header_names(config))
    return [(name, value) for name, value in raw if name.lower() not in drop]
