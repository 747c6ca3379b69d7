"""Per-user state over time: who is talking, their session, and what was said and done when.

Issue 14's state layer. The request flow uses it in three steps around the (pure) policy
engine; a request without a user key skips all three and state-based policies are skipped:

1. ``identity = identify(headers, body, api, settings.state)`` -- HMAC'd keys, or None;
2. ``state = await store.load(identity, now)``, then ``facts_from(state, identity, now, ...)``
   -- the facts the engine's conditions read;
3. ``await store.observe(identity, now, Observation(...))`` after the reply.

A store that fails or is slow raises :class:`~guardrail.errors.StateUnavailable` within
``state.timeout``, and the flow goes on without state. Modules: ``clock`` (where now comes
from), ``config`` (the settings), ``keys`` (HMAC), ``identity``, ``model`` (what is stored and
how a turn changes it), ``facts``, ``store`` (the interface), ``memory`` and ``redisstore``
(the two backends).
"""

from __future__ import annotations

from guardrail.errors import StateUnavailable
from guardrail.state.clock import Clock, FakeClock, SystemClock
from guardrail.state.config import StateConfig
from guardrail.state.facts import STATE_FACTS, clock_facts, facts_from
from guardrail.state.identity import (
    Identity,
    identify,
    state_header_names,
    strip_state_headers,
)
from guardrail.state.keys import Keyring
from guardrail.state.model import RECORDS, Observation, UserState
from guardrail.state.store import StateAccess, StateStore, open_store

__all__ = [
    "RECORDS",
    "STATE_FACTS",
    "Clock",
    "FakeClock",
    "Identity",
    "Keyring",
    "Observation",
    "StateAccess",
    "StateConfig",
    "StateStore",
    "StateUnavailable",
    "SystemClock",
    "UserState",
    "clock_facts",
    "facts_from",
    "identify",
    "open_store",
    "state_header_names",
    "strip_state_headers",
]
