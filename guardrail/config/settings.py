"""Settings: every key guardrail reads, its default and parser, and the frozen :class:`Settings`.

The keys come from command-line flags, the config file and the environment, read by
:func:`guardrail.config.loading.load_settings`. Each value is resolved once, at start-up, with
this precedence (later wins)::

    built-in default  <  config file (--config / GUARDRAIL_CONFIG)  <  GUARDRAIL_* environment  <  flag

and validated as it is read: a bad value raises :class:`~guardrail.errors.ConfigError` naming the key
and where it came from (``environment GUARDRAIL_PORT: port: must be an integer 0-65535, got 'abc'``),
so nothing is discovered at request time. The result is a frozen :class:`Settings`.

| config key | environment variable | default | meaning |
|---|---|---|---|
| ``host`` | ``GUARDRAIL_HOST`` | ``127.0.0.1`` | address to listen on (``--host``) |
| ``port`` | ``GUARDRAIL_PORT`` | ``8787`` | port to listen on; 0 picks a free one (``--port``) |
| ``upstream`` | ``GUARDRAIL_UPSTREAM`` | none: required unless ``demo`` or ``routes`` give every upstream | base URL of the upstream API, ``http``/``https``, may carry a base path: ``https://api.openai.com``, ``https://host/openai/v1`` (``--upstream``); the catch-all route ``/`` and every route without its own |
| ``policies`` | ``GUARDRAIL_POLICIES`` | the bundled pack, ``default`` | policy folder, single YAML file, or ``default`` (the bundled pack), or a list of them applied in order (``[default, ./mine]``; comma-separated in the environment, ``--policies`` repeated or comma-separated); later sources use and tune earlier ones (``guardrail.policy.loader``); relative paths in the config file are relative to that file |
| ``locale`` | ``GUARDRAIL_LOCALE`` | ``en-US`` | locale of referral resources when a request names none (``--locale``) |
| ``api`` | ``GUARDRAIL_API`` | ``auto`` | wire format of ``POST`` paths that are not a known chat endpoint: ``auto`` (pass them through) or ``openai.chat``, ``openai.responses``, ``anthropic.messages``, ``ollama.chat``; known endpoints are always read as their own API |
| ``holdback`` | ``GUARDRAIL_HOLDBACK`` | ``sentence`` | how streamed text is held back: ``sentence`` (the unfinished sentence), ``none`` (annotate and append only), ``full`` (the whole reply) |
| ``max_holdback_chars`` | ``GUARDRAIL_MAX_HOLDBACK_CHARS`` | ``1000`` | most characters of an unfinished sentence held back (``sentence`` mode) |
| ``stall_timeout`` | ``GUARDRAIL_STALL_TIMEOUT`` | ``300`` | seconds a stream may go without an upstream event other than keep-alives (SSE comments, Anthropic ``ping``) before it is ended cleanly, marked ``"incomplete": "upstream-stalled"`` and counted; ``none`` turns it off. Longer than the longest silence of a reasoning model or a model loading, shorter than ``timeouts.read``, which keep-alives reset |
| ``max_event_bytes`` | ``GUARDRAIL_MAX_EVENT_BYTES`` | ``4MiB`` | largest upstream stream event (SSE event, NDJSON line) buffered, at least ``1KiB``; past it the stream ends cleanly, marked ``"incomplete": "upstream-event-too-large"`` and counted |
| ``regenerate`` | ``GUARDRAIL_REGENERATE`` | ``false`` | ask the upstream once more when a policy with a ``regenerate`` key hits a reply, non-streamed or streamed with ``holdback: full``, with that policy's corrective instruction added to the request (a second upstream call: opt in); the second reply is sent when it passes those policies within ``regenerate_budget``, else the policy's template action (always the template action for ``sentence`` and ``none`` streams, whose text is out before the reply is judged) |
| ``regenerate_budget`` | ``GUARDRAIL_REGENERATE_BUDGET`` | ``10`` | seconds the second upstream call may take, reply (or whole stream) read, before the template action is sent instead |
| ``routes`` | ``GUARDRAIL_ROUTES`` (YAML text) | none | list of routes: path prefix -> upstream, API, policy set, locale, holdback (see below) |
| ``locale_header`` | ``GUARDRAIL_LOCALE_HEADER`` | ``x-guardrail-locale`` | request header that sets the locale per request (not forwarded upstream) |
| ``timeouts.connect`` | ``GUARDRAIL_TIMEOUTS_CONNECT`` | ``10`` | seconds to open a connection to the upstream |
| ``timeouts.read`` | ``GUARDRAIL_TIMEOUTS_READ`` | ``600`` | seconds to wait for each read; a non-streamed reply only starts after the whole generation |
| ``timeouts.write`` | ``GUARDRAIL_TIMEOUTS_WRITE`` | ``60`` | seconds to wait for each write to the upstream |
| ``timeouts.pool`` | ``GUARDRAIL_TIMEOUTS_POOL`` | ``10`` | seconds to wait for a free upstream connection |
| ``timeouts.total`` | ``GUARDRAIL_TIMEOUTS_TOTAL`` | ``none`` (off) | deadline for an inspected exchange (request sent, whole reply read) and for the response headers of any other; streams are not cut |
| ``max_inspect_bytes`` | ``GUARDRAIL_MAX_INSPECT_BYTES`` | ``4MiB`` | largest reply buffered for inspection (bytes, or ``512KiB``, ``4MiB``, ``1MB``); larger ones pass through unchanged, marked ``too-large`` |
| ``max_user_text_chars`` | ``GUARDRAIL_MAX_USER_TEXT_CHARS`` | ``16384`` | characters of each user message the user-side detectors read: its last ones (the most recent text counts); earlier text of a longer message is forwarded but not read, which bounds the time one huge message can take |
| ``max_connections`` | ``GUARDRAIL_MAX_CONNECTIONS`` | ``256`` | most concurrent upstream connections |
| ``max_request_bytes`` | ``GUARDRAIL_MAX_REQUEST_BYTES`` | ``32MiB`` | largest request body accepted, on every path (Anthropic's own request limit); a larger one gets 413 in the API's error format, counted, and never reaches the upstream |
| ``max_upstream_per_client`` | ``GUARDRAIL_MAX_UPSTREAM_PER_CLIENT`` | ``max_connections / 4`` | most requests one client address may have in flight; more get 429 with ``Retry-After`` (streams together, and all other requests together, may each hold at most three quarters of ``max_connections``, so neither kind starves the other; more get 503) |
| ``max_client_connections`` | ``GUARDRAIL_MAX_CLIENT_CONNECTIONS`` | ``1024`` | most open client connections per listener; a connection over it is answered 503 and closed |
| ``header_timeout`` | ``GUARDRAIL_HEADER_TIMEOUT`` | ``10`` | seconds a client connection may take to send a complete request head (from connect, or from the previous response); then it is closed |
| ``keepalive_timeout`` | ``GUARDRAIL_KEEPALIVE_TIMEOUT`` | ``20`` | seconds an idle keep-alive client connection stays open after a response |
| ``drain_timeout`` | ``GUARDRAIL_DRAIN_TIMEOUT`` | ``25`` | on SIGTERM, seconds requests and streams in flight may take to finish (readiness answers 503 meanwhile) before they are cut and the process exits |
| ``workers`` | ``GUARDRAIL_WORKERS`` | ``1`` | proxy processes serving the one port (``--workers``); 1 is a single process. With more, a supervisor binds the ports, spawns the workers, serves the admin listener for all of them (metrics summed), fans reloads out to every worker and restarts one that dies (``guardrail.cli.supervisor``) |
| ``log_level`` | ``GUARDRAIL_LOG_LEVEL`` | ``info`` | ``debug``, ``info``, ``warning`` or ``error`` (``--log-level``) |
| ``log_format`` | ``GUARDRAIL_LOG_FORMAT`` | ``auto`` | ``json``, ``console``, or ``auto``: JSON unless stderr is a terminal (``--log-format``) |
| ``demo`` | ``GUARDRAIL_DEMO`` | ``false`` | serve the built-in demo upstream in the same process and use it as the upstream (``--demo``) |
| ``demo_port`` | ``GUARDRAIL_DEMO_PORT`` | ``port + 1`` | port of the demo upstream on 127.0.0.1 (``--demo-port``) |
| ``admin_host`` | ``GUARDRAIL_ADMIN_HOST`` | ``host`` | address of the admin listener: metrics, reload, dashboard (``--admin-host``) |
| ``admin_port`` | ``GUARDRAIL_ADMIN_PORT`` | ``port + 1000`` (``9787``; ``0`` when ``port`` is 0) | port of the admin listener; 0 picks a free one (``--admin-port``) |
| ``admin_token`` | ``GUARDRAIL_ADMIN_TOKEN`` | none | bearer token the admin endpoints require (16+ characters; prefer the environment) |
| ``audit.sink`` | ``GUARDRAIL_AUDIT_SINK`` | ``stdout`` | where policy-hit audit events go: ``stdout``, ``file`` or ``off`` (``--audit-sink``) |
| ``audit.path`` | ``GUARDRAIL_AUDIT_PATH`` | none | audit file for the ``file`` sink (``--audit-path``); relative paths in the config file are relative to it |
| ``audit.max_bytes`` | ``GUARDRAIL_AUDIT_MAX_BYTES`` | ``10MiB`` | size at which the audit file is rotated |
| ``audit.backups`` | ``GUARDRAIL_AUDIT_BACKUPS`` | ``5`` | rotated audit files kept (``audit.jsonl.1`` ...); 0 truncates instead |
| ``audit.key`` | ``GUARDRAIL_AUDIT_KEY`` | random per process | HMAC key of the audit's conversation hash (16+ characters); set it to correlate across restarts and workers |
| ``audit.excerpt`` | ``GUARDRAIL_AUDIT_EXCERPT`` | ``false`` | add the matched spans (only those) to audit events; makes the audit sink hold personal data |
| ``audit.conversation_header`` | ``GUARDRAIL_AUDIT_CONVERSATION_HEADER`` | none | request header with a stable conversation id to hash instead of the first user message |
| ``state.backend`` | ``GUARDRAIL_STATE_BACKEND`` | ``memory`` | where per-user state lives (``guardrail.state``): ``memory`` (this process, bounded, nothing to install) or ``redis`` (shared by replicas; needs ``state.url`` and ``state.key`` or ``audit.key``) |
| ``state.url`` | ``GUARDRAIL_STATE_URL`` | none | Redis URL for the ``redis`` backend: ``redis://host:6379/0``, ``rediss://...`` (TLS), ``unix:///path``; credentials in it are never logged (prefer the environment) |
| ``state.key`` | ``GUARDRAIL_STATE_KEY`` | ``audit.key``, else random per process | HMAC key (16+ characters) that user and session keys are hashed with before they are stored or logged; replicas sharing a store must share it |
| ``state.retention`` | ``GUARDRAIL_STATE_RETENTION`` | ``30d`` | how long a user's state is kept after their last activity (seconds, or ``30m``, ``12h``, ``30d``) |
| ``state.session_gap`` | ``GUARDRAIL_STATE_SESSION_GAP`` | ``30m`` | time without activity after which a new session starts (unless a session key is given; a new session key always starts one) |
| ``state.max_users`` | ``GUARDRAIL_STATE_MAX_USERS`` | ``100000`` | most users the ``memory`` backend holds; past it the least recently active is dropped |
| ``state.timezone`` | ``GUARDRAIL_STATE_TIMEZONE`` | ``UTC`` | IANA time zone of ``clock.local_hour`` and of the days counted by ``dependency.days_recent`` |
| ``state.user_header`` | ``GUARDRAIL_STATE_USER_HEADER`` | ``x-guardrail-user`` | request header with the user key (else the API's body field: OpenAI ``safety_identifier``/``user``, Anthropic ``metadata.user_id``); not forwarded upstream |
| ``state.session_header`` | ``GUARDRAIL_STATE_SESSION_HEADER`` | ``x-guardrail-session`` | request header with an optional session key; not forwarded upstream |
| ``state.minor_header`` | ``GUARDRAIL_STATE_MINOR_HEADER`` | ``x-guardrail-minor`` | request header that marks the user a minor (``true``); a route's ``minor: true`` marks all its users; not forwarded upstream |
| ``state.timeout`` | ``GUARDRAIL_STATE_TIMEOUT`` | ``0.05`` | seconds one state-store operation may take; past it the request goes on without state |
| ``watch_policies`` | ``GUARDRAIL_WATCH_POLICIES`` | ``false`` | reload the policies when their files change (``--watch-policies``); SIGHUP and ``POST /-/reload`` always work |
| ``watch_interval`` | ``GUARDRAIL_WATCH_INTERVAL`` | ``2`` | seconds between two looks at the policy files' modification times |
| ``judges`` | ``GUARDRAIL_JUDGES`` (YAML text) | none | semantic judge endpoints by name: ``url``, ``model``, ``api_key_env`` and limits (``guardrail.judge.endpoints``); a policy's ``judge:`` detector names one |

The config file itself is named by ``--config FILE`` or ``GUARDRAIL_CONFIG``. It is a YAML mapping
of the keys above, with ``timeouts`` as a nested mapping::

    upstream: https://api.openai.com
    port: 8787
    policies: ./policies
    timeouts: {connect: 5, read: 300}
    audit: {sink: file, path: /var/log/guardrail/audit.jsonl}

Judges (``guardrail.judge.endpoints``): ``judges`` maps an endpoint name to an OpenAI-compatible
Chat Completions server. The API key is never written in the file: ``api_key_env`` names the
environment variable that holds it, read at start-up (a missing variable is an error naming it,
never the key)::

    judges:
      default: {url: https://api.openai.com/v1, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY,
                timeout: 2, fail: open, calls_per_minute: 600}
      local: {url: http://127.0.0.1:11434/v1, model: llama3.2:3b, fail: closed}

Booleans in the environment accept ``1/true/yes/on`` and ``0/false/no/off``. Unknown keys in the
config file and unknown ``GUARDRAIL_*`` variables are errors, so a typo never goes unnoticed.

Routes (``guardrail.config.routes``): each entry of ``routes`` has a ``prefix`` and any of ``upstream``,
``api``, ``policies``, ``locale``, ``holdback``, ``max_holdback_chars``, ``stall_timeout``,
``regenerate``, ``regenerate_budget``, and ``minor`` (``true``: every user of the route is a
minor; there is no top-level ``minor``); the keys it leaves out take the top-level value. The longest matching prefix wins, and the prefix is
stripped before the rest of the path is joined onto the route's upstream. A route with its own
``policies`` gets its own policy set, loaded at start-up and reloaded (SIGHUP, ``/-/reload``, the
watcher) together with the main one: if any set fails to load, none is swapped. A path that no
route matches gets 404; with a top-level ``upstream`` the catch-all ``/`` route takes it::

    upstream: https://api.openai.com          # the catch-all route "/"
    holdback: sentence
    routes:
      - prefix: /anthropic                     # /anthropic/v1/messages -> .../v1/messages
        upstream: https://api.anthropic.com
      - prefix: /ollama
        upstream: http://127.0.0.1:11434
        policies: ./policies-strict            # its own set, reloaded with the main one
        locale: en-GB
        holdback: full

The API is recognised from the path (``guardrail.guard.inspection``): ``.../chat/completions`` ->
``openai.chat``, ``.../responses`` -> ``openai.responses``, ``.../messages`` ->
``anthropic.messages``, ``.../api/chat`` -> ``ollama.chat``; other paths pass through untouched
unless the route names an ``api`` for them. Route prefixes and API names are the only route and
API label values in the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guardrail.config import values as cv
from guardrail.judge.endpoints import JudgeEndpoint, parse_judges
from guardrail.observe.audit import AUDIT_SINKS, AuditConfig
from guardrail.policy.engine import DEFAULT_MAX_USER_CHARS
from guardrail.policy.sources import DEFAULT_PACK, PolicySource
from guardrail.config.routes import Route, RouteSpec, parse_routes
from guardrail.state import config as state_config
from guardrail.state.config import BACKENDS, StateConfig

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "KEYS",
    "KEYS_BY_ENV",
    "KEYS_BY_NAME",
    "SECTIONS",
    "Route",
    "RouteSpec",
    "Settings",
    "Timeouts",
    "admin_port_for",
    "demo_upstream",
]

ENV_PREFIX = "GUARDRAIL_"
CONFIG_ENV = "GUARDRAIL_CONFIG"
DEFAULT_POLICIES = DEFAULT_PACK
"""The bundled default pack: ``guardrail/pack/`` as package data, else the repository's
``policies/`` folder beside the package (``guardrail.policy.sources``)."""
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
DEFAULT_ADMIN_PORT = 9787
ADMIN_PORT_OFFSET = DEFAULT_ADMIN_PORT - 8787


def admin_port_for(port: int) -> int:
    """The admin listener's default port for a proxy on ``port``: ``ADMIN_PORT_OFFSET`` above it
    (9787 for the default 8787), the one below when that is past 65535, any free port (0)
    when the proxy's own is picked (0)."""
    if port == 0:
        return 0
    above = port + ADMIN_PORT_OFFSET
    return above if above <= 65535 else port - ADMIN_PORT_OFFSET
DEFAULT_STALL_TIMEOUT = 300.0
"""Seconds a stream may bring nothing but keep-alives. A reasoning model (OpenAI's with high
effort, Anthropic's with a large thinking budget, sending pings meanwhile) or Ollama loading a
large model can be silent for minutes before its first token; 300 s allows that and still
frees a stream held by keep-alives alone, which ``timeouts.read`` (600 s) never does, since
every keep-alive is a read."""


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds; ``total`` None means no overall deadline."""

    connect: float = 10.0
    read: float = 600.0
    write: float = 60.0
    pool: float = 10.0
    total: float | None = None


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved and validated. Build it with :func:`load_settings`."""

    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 8787
    policies: PolicySource = DEFAULT_POLICIES
    locale: str = "en-US"
    api: str = "auto"
    holdback: str = "sentence"
    max_holdback_chars: int = 1000
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT
    max_event_bytes: int = 4 * 1024 * 1024
    regenerate: bool = False
    regenerate_budget: float = 10.0
    route_specs: tuple[RouteSpec, ...] = ()
    locale_header: str = "x-guardrail-locale"
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_inspect_bytes: int = 4 * 1024 * 1024
    max_user_text_chars: int = DEFAULT_MAX_USER_CHARS
    max_connections: int = 256
    max_request_bytes: int = 32 * 1024 * 1024
    max_upstream_per_client: int = 64
    max_client_connections: int = 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 20.0
    drain_timeout: float = 25.0
    workers: int = 1
    log_level: str = "info"
    log_format: str = "auto"
    demo: bool = False
    demo_port: int = 8788
    admin_host: str = "127.0.0.1"
    admin_port: int = DEFAULT_ADMIN_PORT
    admin_token: str | None = field(default=None, repr=False)
    audit: AuditConfig = field(default_factory=AuditConfig)
    state: StateConfig = field(default_factory=StateConfig)
    watch_policies: bool = False
    watch_interval: float = 2.0
    judges: Mapping[str, JudgeEndpoint] = field(default_factory=dict)
    """Semantic judge endpoints by name, API keys resolved (hidden from ``repr``)."""
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Where each key's value came from (``default``, the config file and line, ``environment
    GUARDRAIL_X``, ``--flag``), for errors found after loading."""

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routing table, longest prefix first: the configured routes, resolved against the
        top-level keys, then the catch-all ``/`` (the top-level upstream) unless one is set."""
        defaults = {
            "upstream": self.upstream,
            "api": self.api,
            "policies": self.policies,
            "locale": self.locale,
            "holdback": self.holdback,
            "max_holdback_chars": self.max_holdback_chars,
            "stall_timeout": self.stall_timeout,
            "regenerate": self.regenerate,
            "regenerate_budget": self.regenerate_budget,
            "minor": False,
        }
        specs = list(self.route_specs)
        if self.upstream is not None and all(spec.prefix != "/" for spec in specs):
            specs.append(RouteSpec("/"))
        routes = [spec.resolve(defaults) for spec in specs]
        return tuple(sorted(routes, key=lambda r: -len([s for s in r.prefix.split("/") if s])))

    def with_demo_port(self, port: int) -> Settings:
        """The same settings pointed at a demo upstream that was bound on ``port``."""
        return replace(self, demo_port=port, upstream=demo_upstream(port))


def demo_upstream(port: int) -> str:
    """Base URL of the built-in demo upstream listening on loopback ``port``."""
    return f"http://127.0.0.1:{port}"


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
    Key("host", cv.nonempty, "127.0.0.1", "--host"),
    Key("port", cv.port, 8787, "--port"),
    Key("upstream", cv.parse_upstream, None, "--upstream"),
    Key("policies", cv.policy_sources, DEFAULT_POLICIES, "--policies"),
    Key("locale", cv.locale, "en-US", "--locale"),
    Key("locale_header", cv.header_name, "x-guardrail-locale"),
    Key("api", cv.api, "auto"),
    Key("holdback", cv.holdback, "sentence"),
    Key("max_holdback_chars", cv.int_in(1, 1_000_000), 1000),
    Key("stall_timeout", cv.optional_seconds, DEFAULT_STALL_TIMEOUT),
    Key("max_event_bytes", cv.event_size, 4 * 1024 * 1024),
    Key("regenerate", cv.boolean, False),
    Key("regenerate_budget", cv.seconds, 10.0),
    Key("routes", parse_routes, ()),
    Key("timeouts.connect", cv.seconds, Timeouts.connect),
    Key("timeouts.read", cv.seconds, Timeouts.read),
    Key("timeouts.write", cv.seconds, Timeouts.write),
    Key("timeouts.pool", cv.seconds, Timeouts.pool),
    Key("timeouts.total", cv.optional_seconds, None),
    Key("max_inspect_bytes", cv.size, 4 * 1024 * 1024),
    Key("max_user_text_chars", cv.int_in(1, 1 << 30), DEFAULT_MAX_USER_CHARS),
    Key("max_connections", cv.int_in(1, 100_000), 256),
    Key("max_request_bytes", cv.size, 32 * 1024 * 1024),
    Key("max_upstream_per_client", cv.int_in(1, 100_000), None),
    Key("max_client_connections", cv.int_in(1, 1_000_000), 1024),
    Key("header_timeout", cv.seconds, 10.0),
    Key("keepalive_timeout", cv.seconds, 20.0),
    Key("drain_timeout", cv.seconds, 25.0),
    Key("workers", cv.int_in(1, 64), 1, "--workers"),
    Key("log_level", cv.choice(LOG_LEVELS), "info", "--log-level"),
    Key("log_format", cv.choice(LOG_FORMATS), "auto", "--log-format"),
    Key("demo", cv.boolean, False, "--demo"),
    Key("demo_port", cv.port, None, "--demo-port"),
    Key("admin_host", cv.nonempty, None, "--admin-host"),
    Key("admin_port", cv.port, None, "--admin-port"),
    Key("admin_token", cv.secret, None),
    Key("audit.sink", cv.choice(AUDIT_SINKS), "stdout", "--audit-sink"),
    Key("audit.path", cv.path, None, "--audit-path"),
    Key("audit.max_bytes", cv.size, AuditConfig.max_bytes),
    Key("audit.backups", cv.int_in(0, 1000), AuditConfig.backups),
    Key("audit.key", cv.secret, None),
    Key("audit.excerpt", cv.boolean, False),
    Key("audit.conversation_header", cv.header_name, None),
    Key("state.backend", cv.choice(BACKENDS), "memory"),
    Key("state.url", cv.redis_url, None),
    Key("state.key", cv.secret, None),
    Key("state.retention", cv.duration, state_config.DEFAULT_RETENTION),
    Key("state.session_gap", cv.duration, state_config.DEFAULT_SESSION_GAP),
    Key("state.max_users", cv.int_in(1, 100_000_000), state_config.DEFAULT_MAX_USERS),
    Key("state.timezone", state_config.timezone, "UTC"),
    Key("state.user_header", cv.header_name, "x-guardrail-user"),
    Key("state.session_header", cv.header_name, "x-guardrail-session"),
    Key("state.minor_header", cv.header_name, "x-guardrail-minor"),
    Key("state.timeout", cv.seconds, state_config.DEFAULT_TIMEOUT),
    Key("watch_policies", cv.boolean, False, "--watch-policies"),
    Key("watch_interval", cv.seconds, 2.0),
    Key("judges", parse_judges, ()),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
KEYS_BY_ENV = {key.env: key for key in KEYS}
SECTIONS = frozenset(key.name.rsplit(".", 1)[0] for key in KEYS if "." in key.name)
"""The config file's nested mappings (``timeouts``, ``audit``, ``state``)."""
