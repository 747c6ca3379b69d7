"""Every Prometheus metric guardrail exports, declared here and nowhere else.

Conventions (Prometheus naming): one ``guardrail_`` prefix, base units (seconds), ``_total`` on
counters, each failure counter beside a total. Label values are bounded by construction: routes
and APIs come from the configuration, policy ids, categories, actions, modes and locales from the
loaded policy set, reasons and outcomes from the fixed tuples below. Nothing a client sends (a
model name, a path, a user or conversation id, any text) ever becomes a label value; a value
outside its known set is recorded as ``other``. Known label combinations are created at start
(:func:`init_route`, :func:`init_policy_set`), so every series exists, at zero, before traffic.

Multi-worker: when ``PROMETHEUS_MULTIPROC_DIR`` is set in the environment before guardrail starts
(an empty, writable folder shared by the workers of one host, wiped at each deployment),
prometheus-client writes every value to a file there and :func:`render` merges all workers' files,
so any worker's ``/metrics`` answers for the whole pod. ``guardrail serve --workers N`` does this
by itself (``guardrail.cli.supervisor``): it makes a private folder, spawns each worker as a fresh
interpreter with the variable set, and serves ``/metrics`` from the supervisor, whose own counters
(``guardrail_admin_unauthorized_total``: the admin listener is its) live in its memory and are
added to the workers' sums (:func:`scrape_registry`). Counters and histograms are summed over every
worker that ever wrote (a restarted worker's counts are kept); each gauge names its mode below:
``livesum`` for in-flight requests, ``livemax`` for build info, policies loaded and the last
reload time, ``livemin`` for "last reload successful" (0 when any live worker refused its last
reload). Without the variable, the process is its own scrape target.

| metric | type | labels | meaning |
|---|---|---|---|
| ``guardrail_build_info`` | gauge | version, python | always 1; the running build |
| ``guardrail_requests_total`` | counter | route, api, outcome | requests by how they ended (:data:`OUTCOMES`) |
| ``guardrail_requests_in_flight`` | gauge | route | requests being served now |
| ``guardrail_upstream_requests_total`` | counter | route, api | requests sent to the upstream |
| ``guardrail_upstream_errors_total`` | counter | route, api, reason | upstream failures (:data:`UPSTREAM_ERRORS`) |
| ``guardrail_upstream_duration_seconds`` | histogram | route, api | time waiting on the upstream (reply read in full when inspected) |
| ``guardrail_overhead_seconds`` | histogram | route, api | time spent in guardrail itself per request to an inspected endpoint, upstream excluded |
| ``guardrail_stream_holdback_seconds`` | histogram | route, api | how long streamed upstream bytes waited in guardrail before release |
| ``guardrail_not_inspected_total`` | counter | route, api, reason | inspectable requests whose reply was not inspected (:data:`NOT_INSPECTED`) |
| ``guardrail_replies_inspected_total`` | counter | route, api | assistant replies (choices) evaluated |
| ``guardrail_replies_rewritten_total`` | counter | route, api | replies whose text an enforce-mode action changed (not blocked) |
| ``guardrail_replies_blocked_total`` | counter | route, api | replies replaced by a block text |
| ``guardrail_crisis_resources_added_total`` | counter | route, locale | replies to which crisis resources were added |
| ``guardrail_crisis_referrals_total`` | counter | locale, kind | crisis referrals delivered, by kind (``observe.referrals``: the rule ``guardrail report referrals`` counts by) |
| ``guardrail_containment_actions_total`` | counter | action | containment steps taken or skipped (:data:`CONTAINMENT_ACTIONS`) |
| ``guardrail_state_store_up`` | gauge | backend | 1 if the state store answered its last call, 0 if not (:data:`STATE_BACKENDS`) |
| ``guardrail_state_operations_total`` | counter | operation | calls to the state store (:data:`STATE_OPERATIONS`) |
| ``guardrail_state_errors_total`` | counter | operation | state store calls that failed or timed out |
| ``guardrail_regenerations_total`` | counter | route, api, outcome | upstream asked once more for a policy (:data:`REGENERATE_OUTCOMES`) |
| ``guardrail_policy_hits_total`` | counter | policy, category, action, mode | policy hits (shadow hits included, by mode) |
| ``guardrail_policy_errors_total`` | counter | policy | policy evaluations that raised (failed open or closed) |
| ``guardrail_policy_reloads_total`` | counter | trigger, result | reload attempts by trigger (:data:`RELOAD_TRIGGERS`), success or failure |
| ``guardrail_policy_last_reload_success_timestamp_seconds`` | gauge | | when a policy set was last installed |
| ``guardrail_policy_last_reload_successful`` | gauge | | 1 if the last reload attempt succeeded |
| ``guardrail_policies_loaded`` | gauge | mode | policies in the set now serving |
| ``guardrail_audit_events_total`` | counter | result | audit events written or failed |
| ``guardrail_admin_unauthorized_total`` | counter | | admin requests refused for a missing or wrong token |
| ``guardrail_refused_total`` | counter | reason | requests and connections refused by a limit (:data:`REFUSALS`) |
| ``guardrail_judge_requests_total`` | counter | judge, outcome | questions to semantic judges by outcome (:data:`JUDGE_OUTCOMES`) |
| ``guardrail_judge_seconds`` | histogram | judge | time of each call made to a judge endpoint, waiting for a free slot included |

The ``judge`` label is a judge detector's id, from the loaded policy set (:func:`init_judges`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from guardrail.formats.registry import API_NAMES
from guardrail.observe.referrals import CRISIS_KINDS
from guardrail.version import __version__

__all__ = [
    "APIS",
    "CONTAINMENT_ACTIONS",
    "JUDGE_OUTCOMES",
    "MULTIPROC_ENV",
    "NOT_INSPECTED",
    "OUTCOMES",
    "PASSTHROUGH_OUTCOMES",
    "REFUSALS",
    "REGENERATE_OUTCOMES",
    "REGISTRY",
    "RELOAD_TRIGGERS",
    "STATE_BACKENDS",
    "STATE_OPERATIONS",
    "UPSTREAM_ERRORS",
    "bounded",
    "init_containment",
    "init_judges",
    "init_policy_labels",
    "init_route",
    "multiprocess",
    "note_containment",
    "note_records",
    "note_state",
    "render",
    "scrape_registry",
    "state_store_up",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

OUTCOMES = (
    "unchanged",  # inspected; nothing enforced changed the reply
    "rewritten",  # inspected; an enforce-mode action changed the reply
    "blocked",  # inspected; the reply was replaced by a block text
    "not_inspected",  # an inspectable request whose reply could not be inspected (see reason)
    "passthrough",  # not an inspected endpoint (models list, embeddings, ...): relayed as is
    "upstream_error",  # guardrail answered 502/504: the upstream failed or timed out
    "rejected",  # guardrail answered 400: unsafe target, incomplete request body
    "error",  # guardrail answered 500: a bug in guardrail
)
NOT_INSPECTED = (
    "stream",  # a streamed reply on a route without a stream guard
    "encoding",  # a streamed reply in a content coding guardrail cannot undo as it arrives
    "upstream-error",  # the upstream answered with an error status
    "not-json",
    "unparseable",  # the request or reply is not in the route's wire format
    "too-large",  # the reply exceeds max_inspect_bytes
    "engine-error",  # the policy engine raised; the reply went out unchanged (fail open)
    "internal-error",
    "other",
)
UPSTREAM_ERRORS = (
    "unavailable",  # connection refused or reset, DNS failure
    "timeout",
    "status_4xx",  # the upstream answered 4xx (passed through)
    "status_5xx",  # the upstream answered 5xx (passed through)
    "broken",  # a streamed body broke off
    "stalled",  # a stream stopped sending within the stall timeout
    "oversized",  # a stream sent an event (an NDJSON line) over max_event_bytes
    "other",
)
REGENERATE_OUTCOMES = (
    "accepted",  # the second reply was sent
    "rejected",  # it failed the policies again (or was blocked): the template fallback was sent
    "timeout",  # regenerate_budget ran out: the fallback was sent
    "upstream-error",  # the second call failed or broke off: the fallback was sent
)
"""How a regeneration ended (``guardrail.proxy.regenerate.OUTCOMES``)."""
PASSTHROUGH_OUTCOMES = ("passthrough", "upstream_error", "rejected", "error")
"""The outcomes a request that is not to an inspected endpoint can have."""
RELOAD_TRIGGERS = ("signal", "admin", "watch")
APIS = (*API_NAMES, "passthrough")
MODES = ("enforce", "shadow")

# No ``*_created`` series: they would double the series count for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry of guardrail's own metrics (a private one: importing guardrail into another
program registers nothing in that program's default registry)."""

_ROUTE_API = ("route", "api")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
)  # fmt: skip
_HOLDBACK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def multiprocess() -> bool:
    """True when values are shared through ``PROMETHEUS_MULTIPROC_DIR`` (read at start)."""
    return bool(os.environ.get(MULTIPROC_ENV))


BUILD_INFO = Gauge(
    "guardrail_build_info",
    "Always 1: the guardrail version and Python version of this process.",
    ("version", "python"),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
REQUESTS = Counter(
    "guardrail_requests",
    "Requests handled by the proxy, by route, API and outcome.",
    (*_ROUTE_API, "outcome"),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "guardrail_requests_in_flight",
    "Requests being served now.",
    ("route",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
UPSTREAM_REQUESTS = Counter(
    "guardrail_upstream_requests",
    "Requests sent to the upstream API.",
    _ROUTE_API,
    registry=REGISTRY,
)
UPSTREAM_ERRORS_TOTAL = Counter(
    "guardrail_upstream_errors",
    "Upstream failures by reason: unreachable, timed out, error status, broken, stalled or "
    "oversized stream.",
    (*_ROUTE_API, "reason"),
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "guardrail_upstream_duration_seconds",
    "Time waiting on the upstream per request (the whole reply when it was inspected).",
    _ROUTE_API,
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD_SECONDS = Histogram(
    "guardrail_overhead_seconds",
    "Time spent in guardrail itself per request to an inspected endpoint: parsing, policies, "
    "rewriting; upstream wait excluded.",
    _ROUTE_API,
    buckets=_OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
HOLDBACK_SECONDS = Histogram(
    "guardrail_stream_holdback_seconds",
    "How long streamed upstream bytes waited in guardrail before being released to the client.",
    _ROUTE_API,
    buckets=_HOLDBACK_BUCKETS,
    registry=REGISTRY,
)
NOT_INSPECTED_TOTAL = Counter(
    "guardrail_not_inspected",
    "Requests to an inspected endpoint whose reply was not inspected, by reason.",
    (*_ROUTE_API, "reason"),
    registry=REGISTRY,
)
REPLIES_INSPECTED = Counter(
    "guardrail_replies_inspected",
    "Assistant replies (choices) evaluated against the policies.",
    _ROUTE_API,
    registry=REGISTRY,
)
REPLIES_REWRITTEN = Counter(
    "guardrail_replies_rewritten",
    "Assistant replies whose text an enforce-mode action changed (blocked replies excluded).",
    _ROUTE_API,
    registry=REGISTRY,
)
REPLIES_BLOCKED = Counter(
    "guardrail_replies_blocked",
    "Assistant replies replaced by a block text.",
    _ROUTE_API,
    registry=REGISTRY,
)
CRISIS_ADDED = Counter(
    "guardrail_crisis_resources_added",
    "Assistant replies to which crisis resources (crisis line or contact) were added.",
    ("route", "locale"),
    registry=REGISTRY,
)
REGENERATIONS = Counter(
    "guardrail_regenerations",
    "Replies for which the upstream was asked once more because a policy requested it, by "
    "outcome: accepted (the second reply was sent), or rejected, timeout, upstream-error (the "
    "first reply's template fallback was sent).",
    (*_ROUTE_API, "outcome"),
    registry=REGISTRY,
)
POLICY_HITS = Counter(
    "guardrail_policy_hits",
    "Policy hits by policy, category, action and mode (shadow hits change nothing).",
    ("policy", "category", "action", "mode"),
    registry=REGISTRY,
)
POLICY_ERRORS = Counter(
    "guardrail_policy_errors",
    "Policy evaluations that raised; the policy failed open (skipped) or closed (blocked).",
    ("policy",),
    registry=REGISTRY,
)
RELOADS = Counter(
    "guardrail_policy_reloads",
    "Policy reload attempts by trigger (signal, admin, watch) and result (success, failure).",
    ("trigger", "result"),
    registry=REGISTRY,
)
LAST_RELOAD_SUCCESS = Gauge(
    "guardrail_policy_last_reload_success_timestamp_seconds",
    "Unix time at which a policy set was last installed (start-up included).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
LAST_RELOAD_OK = Gauge(
    "guardrail_policy_last_reload_successful",
    "1 if the last policy reload attempt succeeded, 0 if it was refused.",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
POLICIES_LOADED = Gauge(
    "guardrail_policies_loaded",
    "Policies in the set now serving, by mode.",
    ("mode",),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
AUDIT_EVENTS = Counter(
    "guardrail_audit_events",
    "Audit events by result: written to the sink, or failed (sink error).",
    ("result",),
    registry=REGISTRY,
)
REFUSALS = (
    "request_too_large",  # body over max_request_bytes: 413
    "client_busy",  # the client already has max_upstream_per_client requests in flight: 429
    "streams_busy",  # streams hold their whole share of the upstream pool: 503
    "requests_busy",  # other requests hold their whole share of the upstream pool: 503
    "connections_full",  # max_client_connections reached: 503, connection closed
    "header_timeout",  # request head not complete within header_timeout: connection closed
)
"""Why a limit refused a request or a connection (``guardrail.proxy.limits``)."""
REFUSED = Counter(
    "guardrail_refused",
    "Requests and connections refused by a limit, by reason (REFUSALS).",
    ("reason",),
    registry=REGISTRY,
)
CRISIS_REFERRALS = Counter(
    "guardrail_crisis_referrals",
    "Crisis referrals delivered in replies (enforce-mode hits of crisis referral policies in "
    "replies not blocked by another policy), by locale and kind: the live view of the yearly "
    "count that `guardrail report referrals` takes from the audit trail.",
    ("locale", "kind"),
    registry=REGISTRY,
)
CONTAINMENT_ACTIONS = (
    "disclosure",  # an AI disclosure was given (record "disclosure")
    "break_reminder",  # a break reminder was given (record "break_reminder")
    "wind_down",  # a session wind-down was given (record "wind_down")
    "referral_paced",  # a distress referral was held back: one was given recently
    "referral_repointed",  # a referral was given again: distress persisted or escalated
    "state_skipped",  # a state-based policy was skipped: no identity or the store is down
)
"""What the containment pack did, or could not do (``guardrail_containment_actions_total``)."""
RECORD_ACTIONS = ("disclosure", "break_reminder", "wind_down")
"""Verdict records (FACTS-CONTRACT) counted as a containment action when a reply carries them."""
CONTAINMENT = Counter(
    "guardrail_containment_actions",
    "Containment steps: AI disclosures, break reminders, wind-downs and referral pacing given, "
    "and state-based policies skipped for want of state, by action.",
    ("action",),
    registry=REGISTRY,
)
STATE_BACKENDS = ("memory", "redis")
STATE_OPERATIONS = ("load", "observe", "erase", "ping")
"""The state store's calls (``guardrail.state``): a request's load and observe, an admin erase,
the health ping."""
STATE_UP = Gauge(
    "guardrail_state_store_up",
    "1 if the state store answered its last call or ping, 0 if it did not (state-based policies "
    "are then skipped), by backend.",
    ("backend",),
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
STATE_OPERATIONS_TOTAL = Counter(
    "guardrail_state_operations",
    "Calls to the state store, by operation.",
    ("operation",),
    registry=REGISTRY,
)
STATE_ERRORS = Counter(
    "guardrail_state_errors",
    "State store calls that failed or timed out, by operation.",
    ("operation",),
    registry=REGISTRY,
)
ADMIN_UNAUTHORIZED = Counter(
    "guardrail_admin_unauthorized",
    "Admin requests refused for a missing or wrong bearer token.",
    registry=REGISTRY,
)

JUDGE_OUTCOMES = (
    "yes",  # the judge answered yes
    "no",  # the judge answered no
    "timeout",  # no answer within the endpoint's timeout (a free slot included): fail mode
    "error",  # connection error, error status, or an answer that is not a clear yes/no: fail mode
    "cached",  # answered without a call of its own: the cache, or a call in flight for that text
    "budget",  # not sent: the endpoint's calls_per_minute was spent: fail mode
)
"""How one question to a semantic judge ended (``guardrail.judge.runner``). Calls made to the
endpoint = yes + no + timeout + error."""
JUDGE_REQUESTS = Counter(
    "guardrail_judge_requests",
    "Questions to semantic judges by judge (detector id) and outcome: yes, no, timeout, error, "
    "cached (no call of its own), budget (not sent: calls_per_minute spent).",
    ("judge", "outcome"),
    registry=REGISTRY,
)
JUDGE_SECONDS = Histogram(
    "guardrail_judge_seconds",
    "Time of each call made to a judge endpoint (waiting for a free slot included), by judge.",
    ("judge",),
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)

if not multiprocess():
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        # the standard process_* and python_* series, re-registered on our registry
        REGISTRY.register(_collector)


def bounded(value: str | None, known: Iterable[str], other: str = "other") -> str:
    """``value`` if it is one of ``known``, else ``other``: a label value can never be free text."""
    return value if value is not None and value in known else other


def init_process() -> None:
    """Create the process-wide series: build info, reload and audit counters (idempotent)."""
    BUILD_INFO.labels(__version__, platform.python_version()).set(1)
    for trigger in RELOAD_TRIGGERS:
        for result in ("success", "failure"):
            RELOADS.labels(trigger, result)
    for result in ("written", "failed"):
        AUDIT_EVENTS.labels(result)
    for reason in REFUSALS:
        REFUSED.labels(reason)
    init_containment()


def init_containment() -> None:
    """Create the containment and state store counters at zero (idempotent). The
    ``guardrail_state_store_up`` gauge is left out: it exists once a store reports
    (:func:`state_store_up`), so a proxy without one never looks like one that is down."""
    for action in CONTAINMENT_ACTIONS:
        CONTAINMENT.labels(action)
    for operation in STATE_OPERATIONS:
        STATE_OPERATIONS_TOTAL.labels(operation)
        STATE_ERRORS.labels(operation)


def note_containment(action: str, count: int = 1) -> None:
    """Count ``count`` containment steps of one of :data:`CONTAINMENT_ACTIONS`; any other
    action raises ValueError (a bug in the caller, never a value a client sent)."""
    if action not in CONTAINMENT_ACTIONS:
        raise ValueError(f"unknown containment action {action!r}")
    if count:
        child(CONTAINMENT, action).inc(count)


def note_records(records: Iterable[str]) -> None:
    """Count what one reply's verdict records (``Verdict.records``) as containment actions:
    ``disclosure``, ``break_reminder`` and ``wind_down`` each once; other records are not
    containment actions and are ignored."""
    for record in set(records):
        if record in RECORD_ACTIONS:
            child(CONTAINMENT, record).inc()


def note_state(operation: str, ok: bool) -> None:
    """One state store call of :data:`STATE_OPERATIONS` and whether it succeeded; any other
    operation raises ValueError (a bug in the caller)."""
    if operation not in STATE_OPERATIONS:
        raise ValueError(f"unknown state operation {operation!r}")
    child(STATE_OPERATIONS_TOTAL, operation).inc()
    if not ok:
        child(STATE_ERRORS, operation).inc()


def state_store_up(backend: str, up: bool) -> None:
    """Set ``guardrail_state_store_up`` for ``backend`` (one of :data:`STATE_BACKENDS`)."""
    if backend not in STATE_BACKENDS:
        raise ValueError(f"unknown state backend {backend!r}")
    child(STATE_UP, backend).set(1 if up else 0)


def init_route(route: str, api: str) -> None:
    """Create every series of one configured route and API (and its pass-through traffic)."""
    init_process()
    IN_FLIGHT.labels(route)
    for outcome in OUTCOMES:
        if outcome != "passthrough":
            REQUESTS.labels(route, api, outcome)
    for outcome in PASSTHROUGH_OUTCOMES:
        REQUESTS.labels(route, "passthrough", outcome)
    for name in (api, "passthrough"):
        for metric in (UPSTREAM_REQUESTS, UPSTREAM_SECONDS):
            metric.labels(route, name)
        for reason in UPSTREAM_ERRORS:
            UPSTREAM_ERRORS_TOTAL.labels(route, name, reason)
    for metric in (
        OVERHEAD_SECONDS,
        HOLDBACK_SECONDS,
        REPLIES_INSPECTED,
        REPLIES_REWRITTEN,
        REPLIES_BLOCKED,
    ):
        metric.labels(route, api)
    for reason in NOT_INSPECTED:
        NOT_INSPECTED_TOTAL.labels(route, api, reason)
    for outcome in REGENERATE_OUTCOMES:
        REGENERATIONS.labels(route, api, outcome)


def init_policy_labels(
    policies: Iterable[tuple[str, str, str, str]], routes: Iterable[str], locales: Iterable[str]
) -> None:
    """Create the series of a policy set: ``(id, category, action, mode)`` per policy, and crisis
    counters per route and locale. Called at start and after each successful reload."""
    rows = list(policies)
    for policy, category, action, mode in rows:
        POLICY_HITS.labels(policy, category, action, mode)
        POLICY_ERRORS.labels(policy)
    known = list(locales)
    for route in routes:
        for locale in known:
            CRISIS_ADDED.labels(route, locale)
    for locale in [*known, "other"]:
        for kind in CRISIS_KINDS:
            CRISIS_REFERRALS.labels(locale, kind)
    for mode in MODES:
        POLICIES_LOADED.labels(mode).set(sum(1 for row in rows if row[3] == mode))


def init_judges(judges: Iterable[str]) -> None:
    """Create the series of each judge detector id (at start and after each reload)."""
    for judge in judges:
        JUDGE_SECONDS.labels(judge)
        for outcome in JUDGE_OUTCOMES:
            JUDGE_REQUESTS.labels(judge, outcome)


_VALUES_SHARED = multiprocess()
"""Whether this process's own values go to ``PROMETHEUS_MULTIPROC_DIR`` (fixed at import, as
prometheus-client fixes it). False in a supervisor that set the variable for its workers only
after importing guardrail: its own counters then live in memory and :func:`scrape_registry` adds
them to the workers' sums."""


class _WithLocalCounters:
    """The workers' merged values plus this process's in-memory counters, summed by series."""

    def __init__(self, shared: MultiProcessCollector) -> None:
        self.shared = shared

    def collect(self) -> Iterable[Any]:
        local: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in REGISTRY.collect():
            if family.type == "counter":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = (sample.name, tuple(sorted(sample.labels.items())))
                        local[key] = local.get(key, 0.0) + sample.value
        for family in self.shared.collect():  # type: ignore[no-untyped-call]
            if family.type == "counter":
                samples = []
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    samples.append(sample._replace(value=sample.value + local.pop(key, 0.0)))
                family.samples = samples
            yield family


def scrape_registry() -> CollectorRegistry:
    """The registry to expose: ours, or every worker's values merged in multiprocess mode (plus
    this process's own counters when they are not shared: a supervisor's, see the module)."""
    if not multiprocess():
        return REGISTRY
    merged = CollectorRegistry()
    shared = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    merged.register(shared if _VALUES_SHARED else _WithLocalCounters(shared))
    return merged


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type for a scrape's ``Accept`` header (text format or
    OpenMetrics, as the scraper prefers)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scrape_registry()), content_type


_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, remembered: label values here come from closed sets (routes,
    APIs, outcomes, loaded policy ids), and prometheus_client checks and locks on every
    ``labels`` call, a cost paid several times per request (bench/README.md)."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found
