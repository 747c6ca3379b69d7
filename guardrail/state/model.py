"""What the state store keeps per user, and how one request changes it (pure, no I/O).

A :class:`UserState` is timestamps and counters only, never message text: when this session
started and what it holds (turns, the last break reminder and wind-down, referrals given, the
distress bits of its last five user turns), and across sessions the first and last activity,
the last AI disclosure, the last referral, the last crisis seen and the days (of the last
:data:`DEPENDENCY_WINDOW_DAYS`) with a dependency hit.

Two transitions, both pure and shared by every backend (the Redis backend's Lua script mirrors
:func:`observed`, and a test runs one sequence through both):

* :func:`current` -- the state as of ``now`` for ``session``: a new session starts on the first
  request, when a session key is given that differs from the stored one, or, without a session
  key, after more than ``session_gap`` seconds without activity; a new session clears the
  session's fields and keeps the rest.
* :func:`observed` -- after a reply: one user turn at ``now``, with what it showed (distress,
  crisis, dependency) and what the policies that hit recorded (:data:`RECORDS`).

Stores hold timestamps as whole milliseconds (:func:`to_fields` / :func:`from_fields`, the
Redis hash's field names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = [
    "DEPENDENCY_WINDOW_DAYS",
    "DISTRESS_TURNS",
    "RECORDS",
    "Observation",
    "UserState",
    "current",
    "day_number",
    "from_fields",
    "observed",
    "to_fields",
]

RECORDS = frozenset({"disclosure", "break_reminder", "wind_down", "referral", "crisis_referral"})
"""What a policy hit can record (``records:`` in a policy)."""
DEPENDENCY_WINDOW_DAYS = 7
"""Days of dependency hits kept (today and the six before it)."""
DISTRESS_TURNS = 5
"""User turns whose distress is kept (the last five)."""
_DISTRESS_MASK = (1 << DISTRESS_TURNS) - 1


@dataclass(frozen=True)
class Observation:
    """What one request showed and what was done, written after the reply.

    ``locale`` is the request's locale, for the flow's referral counter; the store does not keep
    it. ``records`` must be names from :data:`RECORDS` (ValueError otherwise).
    """

    distress: bool = False
    crisis: bool = False
    dependency: bool = False
    records: frozenset[str] = frozenset()
    locale: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.records) - RECORDS)
        if unknown:
            known = ", ".join(sorted(RECORDS))
            raise ValueError(f"unknown record {unknown[0]!r} (known: {known})")
        object.__setattr__(self, "records", frozenset(self.records))


@dataclass(frozen=True)
class UserState:
    """One user's state. Times are epoch seconds, None for never; ``session`` is the stored
    session key ("" when the session has none); ``distress_bits``: bit 0 is the latest turn."""

    first_seen: float | None = None
    last_activity: float | None = None
    session: str = ""
    session_start: float | None = None
    turns: int = 0
    last_disclosure: float | None = None
    last_break_reminder: float | None = None
    last_wind_down: float | None = None
    last_referral: float | None = None
    referrals: int = 0
    last_crisis: float | None = None
    dependency_days: tuple[int, ...] = field(default=())
    distress_bits: int = 0


def day_number(now: float, zone: ZoneInfo) -> int:
    """The calendar day of ``now`` in ``zone``, as a proleptic Gregorian ordinal."""
    return datetime.fromtimestamp(now, zone).date().toordinal()


def _is_new_session(state: UserState, now: float, session: str, gap: float) -> bool:
    if state.last_activity is None:
        return True
    if session:
        return session != state.session
    return now - state.last_activity > gap


def current(state: UserState, now: float, session: str | None, gap: float) -> UserState:
    """``state`` as seen by a request at ``now`` in ``session`` (None: no session key)."""
    key = session or ""
    if not _is_new_session(state, now, key, gap):
        return state
    return replace(
        state,
        session=key,
        session_start=now,
        turns=0,
        last_break_reminder=None,
        last_wind_down=None,
        referrals=0,
        distress_bits=0,
    )


def _recent_days(days: Iterable[int], today: int) -> tuple[int, ...]:
    """The days still in the window; tomorrow is kept too (another replica's clock may be ahead
    across midnight), so at most ``DEPENDENCY_WINDOW_DAYS + 1`` days are ever kept."""
    return tuple(sorted({d for d in days if today - DEPENDENCY_WINDOW_DAYS < d <= today + 1}))


def observed(
    state: UserState,
    now: float,
    session: str | None,
    gap: float,
    observation: Observation,
    today: int,
) -> UserState:
    """``state`` after one user turn at ``now`` (``today``: its day number, :func:`day_number`)."""
    base = current(state, now, session, gap)
    records = observation.records
    days = base.dependency_days + ((today,) if observation.dependency else ())
    referred = bool(records & {"referral", "crisis_referral"})
    return UserState(  # built whole: dataclasses.replace costs 3x as much, once per request
        first_seen=base.first_seen if base.first_seen is not None else now,
        last_activity=now,
        session=base.session,
        session_start=base.session_start,
        turns=base.turns + 1,
        last_disclosure=now if "disclosure" in records else base.last_disclosure,
        last_break_reminder=now if "break_reminder" in records else base.last_break_reminder,
        last_wind_down=now if "wind_down" in records else base.last_wind_down,
        last_referral=now if referred else base.last_referral,
        referrals=base.referrals + (1 if referred else 0),
        last_crisis=now if observation.crisis else base.last_crisis,
        dependency_days=_recent_days(days, today),
        distress_bits=((base.distress_bits << 1) | int(observation.distress)) & _DISTRESS_MASK,
    )


# --------------------------------------------------------------------------- stored form

_TIMES = {
    "fs": "first_seen",
    "la": "last_activity",
    "ss": "session_start",
    "ld": "last_disclosure",
    "lb": "last_break_reminder",
    "lw": "last_wind_down",
    "lr": "last_referral",
    "lc": "last_crisis",
}
_COUNTS = {"tn": "turns", "rc": "referrals", "db": "distress_bits"}


def to_fields(state: UserState) -> dict[str, str]:
    """The stored form: short field names, times in whole milliseconds, absent when never."""
    out: dict[str, str] = {}
    for name, attr in _TIMES.items():
        value = getattr(state, attr)
        if value is not None:
            out[name] = str(round(value * 1000))
    for name, attr in _COUNTS.items():
        out[name] = str(getattr(state, attr))
    if state.session:
        out["sk"] = state.session
    if state.dependency_days:
        out["dd"] = ",".join(str(d) for d in state.dependency_days)
    return out


def _number(raw: str | bytes) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def from_fields(fields: Mapping[str, str] | Mapping[bytes, bytes]) -> UserState:
    """Read the stored form back; unknown or malformed fields are ignored (never raised)."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    values: dict[str, object] = {}
    for name, attr in _TIMES.items():
        number = _number(text[name]) if name in text else None
        if number is not None:
            values[attr] = number / 1000
    for name, attr in _COUNTS.items():
        number = _number(text[name]) if name in text else None
        if number is not None:
            values[attr] = int(number)
    values["session"] = text.get("sk", "")
    days = (_number(d) for d in text.get("dd", "").split(",") if d)
    values["dependency_days"] = tuple(sorted(int(d) for d in days if d is not None))
    return UserState(**values)  # type: ignore[arg-type]
