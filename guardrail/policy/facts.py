"""Facts: what the request flow knows about time and history, and the detectors that read them.

The engine stays pure. Before evaluation the request flow gathers FACTS, numbers and booleans
from the state store, the clock and semantic judges, into one mapping (the vocabulary is
``FACTS``), and passes it to ``PolicySet.evaluate(..., facts=...)``. Two detector kinds read it:

* ``fact``: ``{fact: session.minutes, at_least: 180}`` (or ``at_most``, ``equals``, ``is``)
  publishes a boolean signal usable in any condition, like any detector;
* ``judge``: ``{judge: {rubric, reads, endpoint}}`` is answered by the runtime (a model behind
  an OpenAI-compatible endpoint) and read here as the fact ``judge.<detector id>``.

What a missing fact means, decided per detector at load (``FactLeaf.read`` and ``fact_values``):

* a STATE fact (any fact but ``clock.*`` and ``judge.*``) missing, or of the wrong type: the
  detector's signal stays absent, and every policy reading it is skipped, never decided on part
  of what it needs (``Verdict.skipped`` lists it with the reason "no_state"), unless the
  detector says ``when_unknown: true|false``, which then is its value (a policy that only
  refines itself with state, like referral pacing, works as it did without it);
* a judge left unanswered: false, and ``Verdict.judges_unanswered`` names it;
* the clock missing: false.

A policy that reads no fact costs nothing extra: its signals, its evaluation and the verdict
are what they were before facts existed (``PolicySet.state_facts_needed`` is empty when no policy
reads state, so the flow can skip the store altogether).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "BOOL_FACTS",
    "FACTS",
    "JUDGE_READS",
    "RECORDS",
    "TESTS",
    "FactLeaf",
    "FactValue",
    "Facts",
    "FactValues",
    "JudgeSpec",
    "fact_values",
    "is_state_fact",
]

FactValue = float | bool | None
Facts = Mapping[str, FactValue]

FACTS: Mapping[str, str] = {
    "session.minutes": "minutes since this session started",
    "session.turns": "user turns in this session, this one included",
    "disclosure.minutes_since": "minutes since the last AI disclosure to this user (inf: never)",
    "break_reminder.minutes_since": "minutes since the last break reminder (inf: never)",
    "wind_down.minutes_since": "minutes since the last wind-down this session (inf: never)",
    "referral.minutes_since": "minutes since the last distress referral given (inf: never)",
    "referral.session_count": "distress referrals given this session",
    "crisis.hours_since": "hours since a crisis was last seen from this user (inf: never)",
    "dependency.days_recent": (
        "distinct days among the last 7 (today included) with a dependency hit, this request not "
        "counted"
    ),
    "distress.recent_turns": "user turns with distress among the last 5 before this one",
    "user.days_since_last_use": "days since this user's previous activity (inf: first use)",
    "user.minor": "the user is marked a minor (true/false)",
    "clock.local_hour": "the hour, 0-23, in the configured time zone (not state)",
}
"""The fact vocabulary a ``fact`` detector may read (``judge.<id>`` facts come from judges)."""

BOOL_FACTS = frozenset({"user.minor"})
RECORDS = frozenset({"disclosure", "break_reminder", "wind_down", "referral", "crisis_referral"})
"""What a policy may declare under ``records:``: what its hit did, for the flow to write."""
JUDGE_READS = ("last_user", "conversation", "reply")
TESTS = ("at_least", "at_most", "equals", "is")
_NUMBERS = (float, int)


def is_state_fact(name: str) -> bool:
    """Whether ``name`` comes from the state store (everything but the clock and judges)."""
    return not name.startswith(("clock.", "judge."))


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """What the runtime asks a judge: the ``rubric`` question, over the text ``reads`` names
    (``last_user``, ``conversation`` or ``reply``), at the configured endpoint ``endpoint``.
    Its answer comes back as the fact ``judge.<id>``."""

    id: str
    rubric: str
    reads: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class FactLeaf:
    """A detector over one fact: true when ``test`` (at_least, at_most, equals, is) holds of
    the fact's value against ``value``.

    ``when_unknown``: the signal's value when the fact is missing or malformed (None: a state
    fact's signal stays absent and policies reading it are skipped; any other fact reads false).
    ``judge`` is set for a judge detector, whose fact is ``judge.<name>``.
    """

    name: str
    fact: str
    test: str
    value: float | bool
    when_unknown: bool | None = None
    internal: bool = False
    description: str = ""
    construct: str = ""
    judge: JudgeSpec | None = None

    _op: Callable[[float, float], bool] = field(
        default=operator.eq, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        op = {"at_least": operator.ge, "at_most": operator.le}.get(self.test, operator.eq)
        object.__setattr__(self, "_op", op)

    @property
    def state(self) -> bool:
        """Whether a missing fact skips the policies reading it (a state fact, no fallback)."""
        return self.when_unknown is None and is_state_fact(self.fact)

    def known(self, facts: Facts | None) -> FactValue:
        """The fact's value if present and of the right type (None otherwise): a boolean for
        ``is``, else an int or float that is not NaN (a bool is no number here)."""
        if facts is None:
            return None
        got = facts.get(self.fact)
        if got is None:
            return None
        if self.test == "is":
            return got if type(got) is bool else None
        if type(got) not in _NUMBERS or got != got:  # got != got: NaN
            return None
        return float(got)

    def read(self, facts: Facts | None) -> bool | None:
        """The signal: the test over the fact, or None when the fact is unknown."""
        got = self.known(facts)
        if got is None:
            return None
        if self.test == "is":
            return got is self.value
        return bool(self._op(got, self.value))


@dataclass(frozen=True, slots=True)
class FactValues:
    """What the fact detectors say for one facts mapping: their signals (a state detector whose
    fact is missing is absent), those detectors (``missing``) and the judges left unanswered."""

    values: Mapping[str, bool]
    missing: frozenset[str]
    unanswered: tuple[str, ...]


def fact_values(leaves: Iterable[FactLeaf], facts: Facts | None) -> FactValues:
    """Read every fact detector of ``leaves`` against ``facts`` (None: the flow gave none)."""
    values: dict[str, bool] = {}
    missing: list[str] = []
    unanswered: list[str] = []
    for leaf in leaves:
        got = leaf.read(facts)
        if got is not None:
            values[leaf.name] = got
            continue
        if leaf.judge is not None:
            unanswered.append(leaf.name)
        if leaf.state:
            missing.append(leaf.name)
        else:
            values[leaf.name] = bool(leaf.when_unknown)
    return FactValues(values, frozenset(missing), tuple(unanswered))
