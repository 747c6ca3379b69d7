"""The state link: a request flow's facts before judging, its observation after.

One :class:`StateLink` per process stands between the state store and every request flow (the
proxy's and the middleware's alike), in three steps:

1. :meth:`StateLink.identify` (pure): the request's :class:`~guardrail.state.Identity` from its
   headers and the user id its API's body carries (``ChatRequest.user``), or None;
2. :meth:`StateLink.facts` (awaited; the adapters start it beside the upstream call, so a store
   that answers before the upstream adds no latency): the facts the policies read. Without an
   identity the store is not asked and no fact is given (the request is judged as the library
   judges it); when no policy reads a state fact, only the clock's facts are given (a policy without state facts costs nothing extra). A store that
   fails or runs past ``state.timeout`` gives the clock's facts too: state-based policies are
   skipped (the engine lists them in ``Verdict.skipped``) and the degraded mode is counted and
   logged, never raised;
3. :meth:`StateLink.follow`: subscribes to the flow and writes ONE observation per reply, when
   the reply was judged or passed through, however it ended (a stream the client left
   included: then what the conversation alone showed, see :func:`observation_of`), in a task
   of its own after the reply is on its way.

Nothing here keeps message text: an observation is four booleans and a set of record names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from guardrail.errors import StateUnavailable
from guardrail.guard.flow import Event, Flow, ReplyJudged, ReplyPlanned
from guardrail.observe import metrics as m
from guardrail.observe.logs import get_logger
from guardrail.state.clock import Clock, SystemClock
from guardrail.state.config import StateConfig
from guardrail.state.facts import clock_facts, facts_from
from guardrail.state.identity import Identity, identify_user
from guardrail.state.model import RECORDS, Observation
from guardrail.state.store import StateStore

if TYPE_CHECKING:
    from guardrail.formats import ChatRequest
    from guardrail.guard.inspection import Outcome

__all__ = ["StateLink", "observation_of"]

Facts = dict[str, float | bool]

_log = get_logger("guardrail.state")


def observation_of(outcome: Outcome | None, locale: str | None) -> Observation:
    """What one reply showed and what was done (no text): distress, crisis and dependency from
    any choice's verdict, and the records of every choice. A stream the client left before any
    reply was judged shows what the conversation alone showed and records nothing (no reply
    was judged, so no referral or reminder is known to have reached the person)."""
    verdicts = [v for v in (outcome.verdicts if outcome is not None else ()) if v is not None]
    signals: list[Mapping[str, object]] = [v.signals for v in verdicts]
    if not verdicts and outcome is not None and outcome.shown is not None:
        signals = [outcome.shown]  # a stream the client left: what the person showed, no records
    dependency = any(s.get("user.dependency", False) for s in signals) or any(
        hit.category == "dependency" for v in verdicts for hit in v.hits
    )
    records: set[str] = set()
    for verdict in verdicts:
        records.update(r for r in getattr(verdict, "records", ()) if r in RECORDS)
    return Observation(
        distress=any(s.get("user.distress", False) for s in signals),
        crisis=any(s.get("user.crisis", False) for s in signals),
        dependency=dependency,
        records=frozenset(records),
        locale=locale,
    )


class StateLink:
    """Per process: the store, its settings and the clock time comes from (tests inject one)."""

    def __init__(self, store: StateStore, config: StateConfig, clock: Clock | None = None) -> None:
        self.store = store
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.backend = config.backend
        self._writes: set[asyncio.Task[None]] = set()
        self.degraded = False
        m.init_containment()

    # ------------------------------------------------------------------ 1. who
    def identify(
        self, headers: Mapping[str, str], chat: ChatRequest | None, *, minor_route: bool = False
    ) -> Identity | None:
        return identify_user(
            headers, chat.user if chat is not None else None, self.config, minor_route=minor_route
        )

    # ------------------------------------------------------------------ 2. facts
    def known_facts(
        self, identity: Identity | None, now: float, needed: frozenset[str]
    ) -> Facts | None:
        """The facts of one request at ``now`` when they need no store lookup, at once: none
        for a request that names no user (judged as the library judges it), the clock's alone
        when no stored fact is read; None when :meth:`facts` must ask the store."""
        if identity is None:
            return {}
        if not needed:
            return clock_facts(now, self.config)
        return None

    async def facts(
        self, identity: Identity | None, now: float, needed: frozenset[str]
    ) -> Facts:
        """The facts of one request at ``now`` (never raises). A request that names no user
        gets none, not even the clock's: it is judged exactly as the library judges it (every
        policy that reads the clock also reads state, and is skipped either way)."""
        if identity is None:
            return {}
        if not needed:
            return clock_facts(now, self.config)
        try:
            state = await self.store.load(identity, now)
        except StateUnavailable as exc:
            self._failed("load", exc)
            return clock_facts(now, self.config)
        self._answered("load")
        return facts_from(state, identity, now, self.config)

    # ------------------------------------------------------------------ 3. after the reply
    def follow(self, flow: Flow, identity: Identity | None, now: float) -> None:
        """Write this request's observation once its reply is judged or passed through."""
        if identity is None:
            return
        flow.subscribe(_Observer(self, flow, identity, now))

    def write(self, identity: Identity, now: float, observation: Observation) -> None:
        """Schedule the observation on the running loop (the reply does not wait for it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # judged outside a loop (a test's direct call): nothing to run on
            return
        task = loop.create_task(self._observe(identity, now, observation))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _observe(self, identity: Identity, now: float, observation: Observation) -> None:
        try:
            await self.store.observe(identity, now, observation)
        except StateUnavailable as exc:
            self._failed("observe", exc)
        else:
            self._answered("observe")

    async def settle(self) -> None:
        """Wait for the observations in flight (shutdown, tests)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def aclose(self) -> None:
        await self.settle()
        await self.store.aclose()

    # ------------------------------------------------------------------ health
    def _answered(self, operation: str) -> None:
        m.note_state(operation, True)
        m.state_store_up(self.backend, True)
        if self.degraded:
            self.degraded = False
            _log.info("state_store_recovered", backend=self.backend)

    def _failed(self, operation: str, exc: StateUnavailable) -> None:
        m.note_state(operation, False)
        m.state_store_up(self.backend, False)
        cause = getattr(exc, "cause", None) or type(exc.__cause__ or exc).__name__
        if not self.degraded:
            self.degraded = True
            _log.warning(
                "state_store_unavailable",
                backend=self.backend,
                operation=operation,
                cause=str(cause)[:80],
                degraded="state-based policies skipped until the store answers",
            )


class _Observer:
    """One request's observation, written once: on the judged reply, or on a pass-through."""

    def __init__(self, link: StateLink, flow: Flow, identity: Identity, now: float) -> None:
        self.link, self.flow, self.identity, self.now = link, flow, identity, now
        self.done = False

    def __call__(self, event: Event) -> None:
        if self.done:
            return
        if isinstance(event, ReplyJudged):
            outcome: Outcome | None = event.outcome
        elif isinstance(event, ReplyPlanned) and event.mode == "pass":
            outcome = None  # still a turn of the session: activity, nothing judged
        else:
            return
        self.done = True
        self.link.write(self.identity, self.now, observation_of(outcome, self.flow.locale))
