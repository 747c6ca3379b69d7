"""What counts as a crisis referral, of which kind, and how many the audit trail holds.

California's SB 243 (Bus. & Prof. Code §§22601-22605) asks an operator to report, each year from
2027-07-01, how many times it referred people to crisis services. guardrail counts such referrals in
two places that follow the same rule, so the live counter and the yearly report agree:

* ``guardrail_crisis_referrals_total{locale, kind}`` as replies are judged (``Recorder``);
* ``guardrail report referrals`` from the audit trail, the record to keep for the report.

The rule. A *crisis referral* is a hit, in ``enforce`` mode and without an evaluation error, of a
crisis referral policy, in a reply that reached the person: when another policy blocked the
reply, only a crisis policy's own ``block`` counts (its block text is what was sent). A hit whose
prepend was left out because the reply already led with the crisis line still counts: the reply
the person read carried the referral. Shadow hits change nothing and never count.

Crisis referral policies and their kind (:func:`referral_kind`), by policy id:

* ``referral.crisis``: ``suicide_self_harm`` (the subject of SB 243 and NY GBL Art. 47);
* ``referral.crisis.<kind>`` and ``referral.acute.<kind>``: ``<kind>`` when it is one of
  :data:`CRISIS_KINDS` (``child``, ``domestic_abuse``, ``sexual_violence``, ``medical``,
  ``harm_others``), else ``other``;
* :data:`FOLLOW_UP_POLICIES` (the containment pack keeping the crisis line within reach in later
  replies after a crisis was seen): ``crisis_followup``;
* with a policy set at hand, any other policy whose action text carries a locale's crisis line
  or contact (``record.crisis_policies``): ``other``.

Nothing here reads or keeps text: an audit event's ``time``, ``request_id``, ``choice``,
``locale``, ``policy``, ``action``, ``mode`` and ``error`` are the only fields read, and a tally
holds counts keyed by period, locale and kind.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CRISIS_KINDS",
    "FOLLOW_UP_POLICIES",
    "PERIODS",
    "Tally",
    "delivered_kinds",
    "referral_kind",
]

CRISIS_KINDS = (
    "suicide_self_harm",  # referral.crisis: suicidal ideation or self-harm
    "medical",  # referral.acute.medical: an overdose taken, someone not breathing
    "harm_others",  # referral.acute.harm_others: a threat to hurt someone
    "child",  # referral.crisis.child: a child at risk
    "domestic_abuse",  # referral.crisis.domestic_abuse
    "sexual_violence",  # referral.crisis.sexual_violence
    "crisis_followup",  # the crisis line kept within reach after a recent crisis
    "other",  # another policy that adds crisis resources
)
"""The ``kind`` label values of ``guardrail_crisis_referrals_total`` (a closed set)."""

FOLLOW_UP_POLICIES = frozenset({"referral.crisis_recent"})
"""Policies of the containment pack that keep the crisis line in later replies after a crisis
was seen (fact ``crisis.hours_since``): each hit is a referral of kind ``crisis_followup``."""

PERIODS = ("year", "month")
_PREFIXES = ("referral.crisis.", "referral.acute.")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,3}")
_GROUPS_OPEN = 64
"""Replies whose events are still being gathered; events of one reply are written together,
so a reply is complete once a few others followed it."""


def referral_kind(policy: str, others: Iterable[str] = ()) -> str | None:
    """The kind of crisis referral a hit of ``policy`` gives, or None when it gives none.

    ``others``: ids of further policies known to add crisis resources (kind ``other``)."""
    if policy == "referral.crisis":
        return "suicide_self_harm"
    if policy in FOLLOW_UP_POLICIES:
        return "crisis_followup"
    for prefix in _PREFIXES:
        if policy.startswith(prefix):
            kind = policy[len(prefix) :]
            return kind if kind in CRISIS_KINDS else "other"
    return "other" if policy in others else None


@dataclass(frozen=True, slots=True)
class _Hit:
    policy: str
    action: str
    enforce: bool  # mode enforce (a shadow hit changes nothing)
    error: bool  # evaluating the policy raised (fail closed: action "block")


def _counted(hits: Iterable[_Hit], kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    """(policy, kind) of the hits of one reply that are delivered crisis referrals."""
    hits = list(hits)
    blocked = any(h.enforce and h.action == "block" for h in hits)
    out = []
    for hit in hits:
        kind = kinds.get(hit.policy)
        if kind is None or not hit.enforce or hit.error or (blocked and hit.action != "block"):
            continue
        out.append((hit.policy, kind))
    return out


def delivered_kinds(hits: Iterable[Any], kinds: Mapping[str, str]) -> list[str]:
    """The crisis referral kinds delivered by one judged reply's hits (``Verdict.hits``), one
    per hit of a crisis policy: ``kinds`` maps crisis policy ids to their kind."""
    found = (_Hit(h.policy, h.action, h.mode == "enforce", h.error is not None) for h in hits)
    return [kind for _, kind in _counted(found, kinds)]


class _Malformed(ValueError):
    """An audit line that is not a readable ``policy_hit`` event."""


@dataclass
class Tally:
    """Crisis referrals counted from audit lines, by period (``year`` or ``month``, UTC),
    locale and kind; feed lines with :meth:`add_line`, then :meth:`close`.

    ``others``: ids of further crisis policies (kind ``other``, see the module docstring).
    Counts: ``referrals[period][(locale, kind)]`` (one per delivered hit), ``replies[period]``
    (replies that carried at least one crisis referral). ``lines``, ``events`` (policy hits
    read), ``malformed`` (lines skipped: not JSON, not an object, a field missing or of the
    wrong type), ``other_events`` (well-formed lines of another event or schema) and
    ``duplicates`` (a referral already counted: the same file read twice) say what was read.
    """

    by: str = "year"
    others: frozenset[str] = frozenset()
    referrals: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    events: int = 0
    malformed: int = 0
    other_events: int = 0
    duplicates: int = 0
    _open: OrderedDict[tuple[str, int], tuple[str, str, list[_Hit]]] = field(
        default_factory=OrderedDict, repr=False
    )
    _seen: set[tuple[str, int, str]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.by not in PERIODS:
            raise ValueError(f"by must be one of {', '.join(PERIODS)}, got {self.by!r}")

    def add_line(self, line: str | bytes) -> None:
        """One audit line (blank lines are ignored, not counted)."""
        if not line.strip():
            return
        self.lines += 1
        try:
            event = _decode(line)
        except _Malformed:
            self.malformed += 1
            return
        if event is None:
            self.other_events += 1
            return
        self.events += 1
        key, when, locale, hit = event
        period = self.period_of(when)
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = (period, locale, [])
            while len(self._open) > _GROUPS_OPEN:
                self._finish(*self._open.popitem(last=False))
        group[2].append(hit)

    def close(self) -> None:
        """Count the replies still being gathered (call once, after the last line)."""
        while self._open:
            self._finish(*self._open.popitem(last=False))

    def _finish(self, key: tuple[str, int], group: tuple[str, str, list[_Hit]]) -> None:
        period, locale, hits = group
        kinds = {h.policy: k for h in hits if (k := referral_kind(h.policy, self.others))}
        fresh = 0
        for policy, kind in _counted(hits, kinds):
            if (*key, policy) in self._seen:
                self.duplicates += 1
                continue
            self._seen.add((*key, policy))
            counts = self.referrals.setdefault(period, {})
            counts[(locale, kind)] = counts.get((locale, kind), 0) + 1
            fresh += 1
        if fresh:
            self.replies[period] = self.replies.get(period, 0) + 1
        elif kinds:
            self.referrals.setdefault(period, {})

    def period_of(self, time: datetime) -> str:
        return f"{time.year:04d}" if self.by == "year" else f"{time.year:04d}-{time.month:02d}"


def _decode(line: str | bytes) -> tuple[tuple[str, int], datetime, str, _Hit] | None:
    """A ``policy_hit`` event's fields, None for another event, or raise _Malformed."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _Malformed("not JSON") from exc
    if not isinstance(obj, dict):
        raise _Malformed("not an object")
    schema, event = obj.get("schema"), obj.get("event")
    if not isinstance(schema, str) or not isinstance(event, str):
        raise _Malformed("no schema or event")
    if not schema.startswith("guardrail.audit/") or event != "policy_hit":
        return None
    fields = {}
    for name in ("time", "request_id", "locale", "policy", "action", "mode"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise _Malformed(f"{name} missing")
        fields[name] = value
    choice = obj.get("choice")
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise _Malformed("choice missing")
    try:
        when = datetime.fromisoformat(fields["time"].replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Malformed("time unreadable") from exc
    if when.tzinfo is None or when.utcoffset():
        raise _Malformed("time not in UTC")
    locale = fields["locale"] if _LOCALE.fullmatch(fields["locale"]) else "other"
    enforce, error = fields["mode"] == "enforce", obj.get("error") is not None
    hit = _Hit(fields["policy"], fields["action"], enforce, error)
    return (fields["request_id"], choice), when, locale, hit
