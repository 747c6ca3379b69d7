"""What the pipeline's events mean for the metrics and the audit trail: the one observer.

The pipeline calls a :class:`Recorder` at three edges of a request and nowhere else:

* :meth:`Recorder.started` when a request arrives (in-flight gauge);
* :meth:`Recorder.evaluated` once the reply of an inspected request was judged (buffered: right
  after evaluation; streamed: when the stream ended), with the verdict of each choice: policy
  hits, rewrites, blocks, crisis resources, and one audit event per hit (:meth:`Recorder.outcome`
  does this from an :class:`~guardrail.guard.inspection.Outcome`, filling in the request record too);
* :meth:`Recorder.finished` after the response was sent (or broke off): the request's outcome,
  upstream latency and errors, guardrail's own time, the reason a reply was not inspected, how
  a regeneration ended (streamed or not: ``Exchange.regenerate``).

And once per installed policy set: :meth:`Recorder.install` (start-up and every reload) creates
the set's metric series. Every label value is bounded here (see ``guardrail.observe.metrics``);
nothing a client sends becomes one.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from guardrail.observe import metrics as m
from guardrail.observe.audit import Auditor
from guardrail.observe.logs import Exchange
from guardrail.observe.referrals import delivered_kinds, referral_kind
from guardrail.policy import Conversation, PolicySet, Verdict
from guardrail.policy.model import ACTION_ORDER

from guardrail.guard.flow import Event, Flow, Regenerated, ReplyJudged, ReplyPlanned, RequestRead

if TYPE_CHECKING:
    from guardrail.guard.inspection import Outcome

__all__ = [
    "follow_log",
    "CRISIS_KEYS",
    "HoldbackClock",
    "Recorder",
    "crisis_policies",
    "note_outcome",
    "outcome_of",
    "referral_kinds",
    "upstream_error_of",
]

CRISIS_KEYS = ("crisis_line", "crisis_contact")
"""Resource keys whose presence in an action's text marks it as adding crisis resources."""
_ADDING = ("append", "prepend", "replace", "block")


def crisis_policies(policies: PolicySet) -> frozenset[str]:
    """Ids of the policies with an action whose text, in some locale, carries that locale's
    crisis line or crisis contact: their enforced hits add crisis resources to a reply."""
    locales = policies.resources.locales
    found = set()
    for policy in policies.policies:
        for action in policy.actions:
            if action.kind not in _ADDING:
                continue
            for locale, variants in action.texts.items():
                values = [locales.get(locale, {}).get(key, "") for key in CRISIS_KEYS]
                needles = [v for v in values if len(v) >= 3]
                if any(n in text for n in needles for text in variants):
                    found.add(policy.id)
    return frozenset(found)


def referral_kinds(policies: PolicySet) -> dict[str, str]:
    """Each crisis referral policy of ``policies`` with its kind (``observe.referrals``)."""
    others = crisis_policies(policies)
    return {p.id: k for p in policies.policies if (k := referral_kind(p.id, others)) is not None}


_REPOINT = "referral.repoint"
_REFERRALS = frozenset({"referral.distress", _REPOINT})


def _containment(verdict: Verdict) -> None:
    """The containment steps one verdict took or could not take (the pack's referral pacing is
    read from its own signals: distress, a referral given recently, and no referral now)."""
    m.note_records(verdict.records)
    if verdict.skipped:
        m.note_containment("state_skipped", len(verdict.skipped))
    enforced = {h.policy for h in verdict.hits if h.mode == "enforce" and h.error is None}
    if _REPOINT in enforced:
        m.note_containment("referral_repointed")
    signals = verdict.signals
    if (
        signals.get("user.distress")
        and signals.get("referral.given_recently")
        and not enforced & _REFERRALS
    ):
        m.note_containment("referral_paced")


def _added_crisis(verdict: Verdict, crisis: frozenset[str]) -> bool:
    """True when an enforced crisis-resource action shaped the reply: a blocked reply counts only
    when a crisis policy did the blocking (a block text replaces any prepended resources)."""
    if not verdict.changed:
        return False
    acting = [h for h in verdict.hits if h.mode == "enforce" and h.error is None]
    if verdict.blocked:
        acting = [h for h in acting if h.action == "block"][:1]  # the most severe blocker wins
    return any(h.policy in crisis for h in acting)


def outcome_of(ex: Exchange) -> str:
    """The ``outcome`` label of a finished request (one of ``metrics.OUTCOMES``)."""
    error = ex.error or ""
    if error in ("unsafe_target", "client_disconnected", "no_route", *m.REFUSALS):
        return "rejected"
    if error.startswith("upstream_"):
        return "upstream_error"
    if error.startswith("internal"):
        return "error"
    if ex.api == "passthrough":
        return "passthrough"
    if not ex.inspected:
        return "not_inspected"
    if ex.blocked:
        return "blocked"
    return "rewritten" if ex.changed else "unchanged"


def upstream_error_of(ex: Exchange) -> str | None:
    """The ``reason`` label of an upstream failure, or None when the upstream did fine."""
    error = ex.error or ""
    if error == "upstream_unavailable":
        return "unavailable"
    if error == "upstream_timeout":
        return "timeout"
    fault = ex.stream_fault
    if fault in ("upstream-broken", "upstream-unterminated"):
        return "broken"
    if fault == "upstream-stalled":
        return "stalled"
    if fault == "upstream-event-too-large":
        return "oversized"
    status = ex.upstream_status
    if status is not None and 400 <= status < 600:
        return "status_4xx" if status < 500 else "status_5xx"
    return None


class HoldbackClock:
    """Per streamed response: how long upstream bytes wait in guardrail before release.

    The stream relay calls :meth:`arrived` when an upstream chunk arrives and :meth:`released`
    when bytes go to the client. One observation per release that ends a wait: the time since the
    oldest chunk not yet followed by a release (bytes passed on at once observe ~0; a held
    unfinished sentence observes how long it was held).
    """

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._since: float | None = None

    def arrived(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def released(self) -> None:
        if self._since is not None:
            self._observe(time.perf_counter() - self._since)
            self._since = None


class Recorder:
    """Per process: turns pipeline events into metric updates and audit events.

    ``routes`` are the configured ``(prefix, api)`` pairs; ``conversation_header`` names the
    request header with a stable conversation id for the audit hash (None: first user message).
    """

    def __init__(
        self,
        routes: Sequence[tuple[str, str]],
        auditor: Auditor | None = None,
        conversation_header: str | None = None,
    ) -> None:
        self.routes = tuple(routes)
        self.route_names = tuple(prefix for prefix, _ in self.routes)
        self.auditor = auditor
        self.conversation_header = conversation_header
        self._crisis: weakref.WeakKeyDictionary[PolicySet, frozenset[str]] = (
            weakref.WeakKeyDictionary()
        )
        self._kinds: weakref.WeakKeyDictionary[PolicySet, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        for prefix, api in self.routes:
            m.init_route(prefix, api)

    def install(self, policies: object) -> None:
        """A policy set is about to serve (start-up or reload): create its series and mark the
        install. (Any other engine, e.g. a test double, has no policies to list.)"""
        m.LAST_RELOAD_OK.set(1)
        m.LAST_RELOAD_SUCCESS.set(time.time())
        if not isinstance(policies, PolicySet):
            return
        rows = [(p.id, p.category, p.strongest_action, p.mode) for p in policies.policies]
        m.init_policy_labels(rows, self.route_names, policies.resources.locales)
        self._crisis[policies] = crisis_policies(policies)
        self._kinds[policies] = referral_kinds(policies)

    def _crisis_of(self, policies: object) -> frozenset[str]:
        if not isinstance(policies, PolicySet):
            return frozenset()
        found = self._crisis.get(policies)
        if found is None:
            found = self._crisis[policies] = crisis_policies(policies)
        return found

    def _kinds_of(self, policies: object) -> dict[str, str]:
        if not isinstance(policies, PolicySet):
            return {}
        found = self._kinds.get(policies)
        if found is None:
            found = self._kinds[policies] = referral_kinds(policies)
        return found

    def _route(self, route: str) -> str:
        return m.bounded(route, self.route_names)

    def holdback_clock(self, ex: Exchange) -> HoldbackClock:
        """A clock feeding ``guardrail_stream_holdback_seconds`` for one streamed response."""
        route, api = self._route(ex.route), m.bounded(ex.api, m.APIS)
        return HoldbackClock(m.child(m.HOLDBACK_SECONDS, route, api).observe)

    def started(self, route: str) -> None:
        m.child(m.IN_FLIGHT, self._route(route)).inc()

    def evaluated(
        self,
        ex: Exchange,
        policies: object,
        conversation: Conversation,
        verdicts: Sequence[Verdict | None],
        *,
        replies: Sequence[str | None] = (),
        conversation_id: str | None = None,
        stream: bool = False,
    ) -> None:
        """One inspected request's verdicts (one per choice; None: a choice without text).

        Also completes the request's canonical log line: ``actions`` (the enforce-mode actions
        taken, weakest first) and ``shadow`` (ids of the policies that hit in shadow mode)."""
        route, api = self._route(ex.route), m.bounded(ex.api, m.APIS)
        crisis, kinds = self._crisis_of(policies), self._kinds_of(policies)
        locales = policies.resources.locales if isinstance(policies, PolicySet) else ()
        hits = [hit for v in verdicts if v is not None for hit in v.hits]
        enforced = {h.action for h in hits if h.mode == "enforce" and h.error is None}
        ex.actions = [a for a in ACTION_ORDER if a in enforced] or None
        ex.shadow = list(dict.fromkeys(h.policy for h in hits if h.mode == "shadow")) or None
        for verdict in verdicts:
            if verdict is None:
                continue
            _containment(verdict)
            m.child(m.REPLIES_INSPECTED, route, api).inc()
            if verdict.blocked:
                m.child(m.REPLIES_BLOCKED, route, api).inc()
            elif verdict.changed:
                m.child(m.REPLIES_REWRITTEN, route, api).inc()
            if _added_crisis(verdict, crisis):
                m.child(m.CRISIS_ADDED, route, verdict.locale).inc()
            for kind in delivered_kinds(verdict.hits, kinds):
                m.child(m.CRISIS_REFERRALS, m.bounded(verdict.locale, locales), kind).inc()
            for hit in verdict.hits:
                m.child(m.POLICY_HITS, hit.policy, hit.category, hit.action, hit.mode).inc()
                if hit.error is not None:
                    m.child(m.POLICY_ERRORS, hit.policy).inc()
        if self.auditor is not None:
            self.auditor.record(
                request_id=ex.request_id,
                route=route,
                api=api,
                conversation=conversation,
                conversation_id=conversation_id,
                verdicts=verdicts,
                replies=replies,
                policy_digest=getattr(policies, "digest", None),
                stream=stream,
            )

    def outcome(
        self,
        ex: Exchange,
        outcome: Outcome,
        policies: object,
        conversation: Conversation,
        *,
        conversation_id: str | None = None,
        stream: bool = False,
    ) -> None:
        """What inspecting a reply decided, into the request record and, when it was
        inspected, into the metrics and the audit trail (:meth:`evaluated`)."""
        if not note_outcome(ex, outcome):
            return
        self.evaluated(
            ex,
            policies,
            conversation,
            outcome.verdicts,
            replies=outcome.texts,
            conversation_id=conversation_id,
            stream=stream,
        )

    def follow(self, flow: Flow, ex: Exchange) -> None:
        """Subscribe to one request's flow: its events into the log line, and a judged reply
        into the metrics and the audit trail."""
        flow.subscribe(_EventNotes(ex, flow, self))

    def finished(self, ex: Exchange) -> None:
        """The response was sent (or broke off): outcome, latencies, errors."""
        route, api = self._route(ex.route), m.bounded(ex.api, m.APIS)
        m.child(m.IN_FLIGHT, route).dec()
        m.child(m.REQUESTS, route, api, outcome_of(ex)).inc()
        failure = upstream_error_of(ex)
        if ex.upstream_status is not None or failure in ("unavailable", "timeout"):
            m.child(m.UPSTREAM_REQUESTS, route, api).inc()
        if failure is not None:
            m.child(m.UPSTREAM_ERRORS_TOTAL, route, api, failure).inc()
        if ex.upstream_s is not None:
            m.child(m.UPSTREAM_SECONDS, route, api).observe(ex.upstream_s)
        if ex.guardrail_s is not None:
            m.child(m.OVERHEAD_SECONDS, route, api).observe(ex.guardrail_s)
        if ex.api != "passthrough" and ex.inspected is False:
            reason = m.bounded(ex.reason, m.NOT_INSPECTED)
            m.child(m.NOT_INSPECTED_TOTAL, route, api, reason).inc()
        if ex.regenerate is not None:
            outcome = m.bounded(ex.regenerate, m.REGENERATE_OUTCOMES)
            m.child(m.REGENERATIONS, route, api, outcome).inc()
        if ex.error in m.REFUSALS:
            m.child(m.REFUSED, ex.error).inc()

    def close(self) -> None:
        if self.auditor is not None:
            self.auditor.close()


class _EventNotes:
    """One request's flow events into its log record (and, with a recorder, metrics and
    audit): the only place the flow's decisions are written down."""

    def __init__(self, ex: Exchange, flow: Flow, recorder: Recorder | None) -> None:
        self.ex, self.flow, self.recorder = ex, flow, recorder

    def __call__(self, event: Event) -> None:
        ex = self.ex
        if isinstance(event, RequestRead):
            if event.chat is not None:
                ex.model = event.chat.model[:200] if event.chat.model else None
                ex.stream = event.chat.stream
        elif isinstance(event, ReplyPlanned):
            if event.mode == "pass":
                ex.inspected, ex.reason, ex.holdback = False, event.reason, None
            elif event.mode == "stream":
                ex.holdback = self.flow.config.holdback
        elif isinstance(event, Regenerated):
            ex.regenerate, ex.regenerate_policies = event.result, list(event.policies)
        elif isinstance(event, ReplyJudged):
            self._judged(event)

    def _judged(self, event: ReplyJudged) -> None:
        flow = self.flow
        if self.recorder is None or flow.chat is None:
            note_outcome(self.ex, event.outcome)
            return
        self.recorder.outcome(
            self.ex,
            event.outcome,
            flow.policies,
            flow.chat.conversation,
            conversation_id=flow.conversation_id,
            stream=event.stream,
        )


def follow_log(flow: Flow, ex: Exchange) -> None:
    """Without a recorder: the flow's events into the request's log record only."""
    flow.subscribe(_EventNotes(ex, flow, None))


def note_outcome(ex: Exchange, outcome: Outcome) -> bool:
    """What inspecting a reply decided, into the request's log record only; returns whether the
    reply was inspected (only then is there anything for metrics and audit)."""
    ex.inspected, ex.reason, ex.choices = outcome.inspected, outcome.reason, outcome.choices
    if outcome.error is not None:
        ex.error = ex.error or "engine_error"
        ex.error_stack = outcome.error_stack
    if not outcome.inspected:
        return False
    ex.policies, ex.action = list(outcome.policies), outcome.action
    ex.changed, ex.blocked = outcome.changed, outcome.blocked
    return True
