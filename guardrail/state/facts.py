"""Facts: the numbers and booleans policies read, computed from a user's state and the clock.

The vocabulary (``session.minutes``, ``referral.session_count``, ...) is the contract between the
state store and the policy engine (issue 14): times since an event are floats in the unit their
name says, ``inf`` when it never happened; counts are floats. :func:`clock_facts` needs no user
and is always available; :func:`facts_from` adds the facts of one user's state, which the flow
passes only when it has an Identity and the store answered.
"""

from __future__ import annotations

from datetime import datetime

from guardrail.state.config import StateConfig
from guardrail.state.identity import Identity
from guardrail.state.model import DEPENDENCY_WINDOW_DAYS, UserState, current, day_number

__all__ = ["STATE_FACTS", "clock_facts", "facts_from"]

STATE_FACTS = frozenset(
    {
        "session.minutes",
        "session.turns",
        "disclosure.minutes_since",
        "break_reminder.minutes_since",
        "wind_down.minutes_since",
        "referral.minutes_since",
        "referral.session_count",
        "crisis.hours_since",
        "dependency.days_recent",
        "distress.recent_turns",
        "user.days_since_last_use",
        "user.minor",
    }
)
"""The facts :func:`facts_from` adds to :func:`clock_facts`."""

_INF = float("inf")


def _since(now: float, then: float | None, unit: float) -> float:
    return _INF if then is None else max(0.0, now - then) / unit


def clock_facts(now: float, config: StateConfig) -> dict[str, float | bool]:
    """``clock.local_hour``: the hour (0-23) of ``now`` in ``state.timezone``."""
    return {"clock.local_hour": float(datetime.fromtimestamp(now, config.zone).hour)}


def facts_from(
    state: UserState, identity: Identity, now: float, config: StateConfig
) -> dict[str, float | bool]:
    """Every fact for one request at ``now``: the clock's and those of ``state`` (as loaded;
    it is brought to ``now`` here, so a session that lapsed reads as a new one)."""
    previous = state.last_activity
    state = current(state, now, identity.session, config.session_gap)
    today = day_number(now, config.zone)
    recent_days = [d for d in state.dependency_days if today - DEPENDENCY_WINDOW_DAYS < d <= today]
    return {
        **clock_facts(now, config),
        "session.minutes": _since(now, state.session_start, 60.0),
        "session.turns": float(state.turns + 1),
        "disclosure.minutes_since": _since(now, state.last_disclosure, 60.0),
        "break_reminder.minutes_since": _since(now, state.last_break_reminder, 60.0),
        "wind_down.minutes_since": _since(now, state.last_wind_down, 60.0),
        "referral.minutes_since": _since(now, state.last_referral, 60.0),
        "referral.session_count": float(state.referrals),
        "crisis.hours_since": _since(now, state.last_crisis, 3600.0),
        "dependency.days_recent": float(len(recent_days)),
        "distress.recent_turns": float(bin(state.distress_bits).count("1")),
        "user.days_since_last_use": _since(now, previous, 86400.0),
        "user.minor": identity.minor,
    }
