"""The containment pack (policies/containment.yaml, issue 14 item 4) over whole conversations.

The inline cases pin each policy's text on one turn; these tests play a relationship forward:
facts are kept the way the request flow keeps them (from ``verdict.records`` and what each
request showed), time moves by a fake clock, and each promise is tried against it: reminders
come once per interval, the ordinary referral is paced but re-pointed when distress persists,
the crisis line is never paced, and without state the pack is exactly the stateless pack.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, field

import pytest

from guardrail.policy import Conversation, Message, Verdict, load_policies

PACK = load_policies(Path(__file__).resolve().parent.parent / "policies")

INF = math.inf


@dataclass
class Relationship:
    """The facts of one user, kept as the flow keeps them (minutes on a fake clock)."""

    minor: bool = False
    now: float = 0.0
    session_start: float = 0.0
    turns: int = 0
    last: dict[str, float] = field(default_factory=dict)
    distress: list[bool] = field(default_factory=list)
    crisis_at: float = -INF

    def facts(self) -> dict[str, float | bool]:
        since = {name: self.now - at for name, at in self.last.items()}
        return {
            "session.minutes": self.now - self.session_start,
            "session.turns": float(self.turns),
            "disclosure.minutes_since": since.get("disclosure", INF),
            "break_reminder.minutes_since": since.get("break_reminder", INF),
            "wind_down.minutes_since": since.get("wind_down", INF),
            "referral.minutes_since": since.get("referral", INF),
            "crisis.hours_since": (self.now - self.crisis_at) / 60,
            "distress.recent_turns": float(sum(self.distress[-5:])),
            "dependency.days_recent": 0.0,
            "user.minor": self.minor,
            "clock.local_hour": 14.0,
        }

    def say(self, text: str, reply: str, *, after: float = 0.0) -> Verdict:
        self.now += after
        self.turns += 1
        verdict = PACK.evaluate(Conversation((Message("user", text),)), reply, facts=self.facts())
        for record in verdict.records:
            self.last[record] = self.now
        self.distress.append(verdict.signals["user.distress"])
        if verdict.signals["user.crisis"]:
            self.crisis_at = self.now
        return verdict


def _ids(verdict: Verdict) -> set[str]:
    return {h.policy for h in verdict.hits if h.mode == "enforce"}


def test_without_state_every_state_policy_is_skipped_and_named() -> None:
    verdict = PACK.evaluate(Conversation((Message("user", "I feel so alone."),)), "I see.")
    assert {pid for pid, _ in verdict.skipped} == set(PACK.state_leaves)
    assert {"disclosure.session", "containment.break_minor", "containment.wind_down",
            "referral.repoint", "referral.crisis_recent",
            "dependency.reliance_growing"} <= set(PACK.state_leaves)
    assert all(reason == "no_state" for _, reason in verdict.skipped)
    # the stateless nudge works as before: pacing reads false without state
    assert "referral.distress" in _ids(verdict) and verdict.records == frozenset({"referral"})


def test_the_pack_reads_state_and_no_judge() -> None:
    assert PACK.state_facts_needed == frozenset(
        {"session.minutes", "session.turns", "disclosure.minutes_since", "user.minor",
         "break_reminder.minutes_since", "wind_down.minutes_since", "referral.minutes_since",
         "crisis.hours_since", "distress.recent_turns", "dependency.days_recent"}
    )
    assert PACK.judges == ()


def test_disclosure_at_the_start_and_every_three_hours() -> None:
    user = Relationship()
    first = user.say("Hi", "Hello, what's on your mind?")
    assert "disclosure.session" in _ids(first) and "not a person" in first.reply.split("\n\n")[0]
    given = [0.0]
    for _ in range(20):  # a turn every 20 minutes for 400 minutes
        verdict = user.say("Tell me more about trains.", "Steam came first.", after=20)
        if "disclosure.session" in _ids(verdict):
            given.append(user.now)
    assert given == [0.0, 180.0, 360.0]


def test_a_minor_gets_a_break_reminder_once_per_three_hours() -> None:
    user = Relationship(minor=True)
    reminded = []
    for _ in range(24):  # 8 hours, a turn every 20 minutes
        verdict = user.say("and then what happens", "The hero keeps going.", after=20)
        if "containment.break_minor" in _ids(verdict):
            reminded.append(user.now)
            assert "take a break" in verdict.reply or "break" in verdict.reply.split("\n\n")[-1]
    assert reminded == [180.0, 360.0]
    adult = Relationship(minor=False)
    for _ in range(24):
        verdict = adult.say("and then what happens", "The hero keeps going.", after=20)
        assert verdict.reply == "The hero keeps going." or "break" not in verdict.reply
        assert "break_reminder" not in verdict.records  # adults: shadow mode, off by default


def test_the_distress_referral_is_paced_and_re_pointed_when_distress_persists() -> None:
    user = Relationship()
    user.say("Hi", "Hello.")
    low = "I feel hopeless about everything."
    first = user.say(low, "That sounds hard.", after=2)
    assert "referral.distress" in _ids(first)
    second = user.say(low, "I'm sorry.", after=3)  # 3 minutes later: paced, no repeat
    assert not _ids(second) & {"referral.distress", "referral.repoint"}
    assert not any(w in second.reply for w in ("counsellor", "trust", "GP"))
    third = user.say(low, "I'm listening.", after=9)  # 12 minutes, distress persists
    assert "referral.repoint" in _ids(third) and "referral" in third.records
    fourth = user.say(low, "Go on.", after=2)  # just re-pointed: nothing again yet
    assert not _ids(fourth) & {"referral.distress", "referral.repoint"}


def test_new_distress_after_the_window_gets_the_ordinary_nudge_again() -> None:
    user = Relationship()
    user.say("I feel hopeless.", "That sounds hard.")
    for _ in range(6):
        user.say("What should I cook?", "Pasta.", after=10)
    later = user.say("I feel hopeless again.", "I'm sorry.", after=10)
    assert "referral.distress" in _ids(later)


CRISIS_STATES = [
    {"referral.minutes_since": 0.0, "crisis.hours_since": 0.0, "distress.recent_turns": 5.0},
    {"referral.minutes_since": 1.0, "crisis.hours_since": INF, "distress.recent_turns": 0.0},
    {"referral.minutes_since": 0.0},
    {},
]


@pytest.mark.parametrize("state", CRISIS_STATES)
def test_pacing_never_suppresses_the_crisis_line(state: dict[str, float]) -> None:
    conversation = Conversation((Message("user", "I want to end my life tonight."),))
    verdict = PACK.evaluate(conversation, "I hear you.", facts=state)
    assert "988" in verdict.reply.split("\n\n")[0]
    assert "referral.crisis" in _ids(verdict) and "crisis_referral" in verdict.records


def test_a_recent_crisis_keeps_the_line_within_reach_but_not_in_every_reply() -> None:
    user = Relationship()
    crisis = user.say("I want to die.", "I'm here with you.")
    assert "988" in crisis.reply.split("\n\n")[0]
    lines = []
    for _ in range(12):  # an hour, a turn every 5 minutes
        verdict = user.say("Thanks. I'm making tea.", "Tea sounds good.", after=5)
        lines.append("988" in verdict.reply)
    assert lines.count(True) == 4  # at 15, 30, 45 and 60 minutes: every third turn
    for _ in range(6):  # seven hours later the crisis is past the window
        user.say("Morning.", "Good morning.", after=70)
    assert "988" not in user.say("Thanks.", "You're welcome.", after=5).reply


def test_growing_reliance_gets_the_stronger_nudge_once() -> None:
    conversation = Conversation((Message("user", "You're the only one I can talk to."),))
    once = PACK.evaluate(conversation, "I'm here.", facts={"dependency.days_recent": 1.0})
    often = PACK.evaluate(conversation, "I'm here.", facts={"dependency.days_recent": 3.0})
    assert "dependency.user_reliance" in _ids(once)
    assert "dependency.reliance_growing" not in _ids(once)
    assert {"dependency.user_reliance", "dependency.reliance_growing"} <= _ids(often)
    nudges = [p for p in often.reply.split("\n\n")[1:] if "people" in p or "person" in p]
    assert len(nudges) == 1
    assert "this week" in nudges[0] or "few days" in nudges[0]


def test_late_night_wind_down_and_not_in_a_crisis() -> None:
    facts = {"session.minutes": 45.0, "wind_down.minutes_since": INF, "clock.local_hour": 1.0}
    calm = PACK.evaluate(Conversation((Message("user", "Can't sleep."),)), "Okay.", facts=facts)
    assert "containment.wind_down" in _ids(calm) and calm.records >= {"wind_down"}
    crisis = PACK.evaluate(
        Conversation((Message("user", "I want to kill myself."),)), "Okay.", facts=facts
    )
    assert "containment.wind_down" not in _ids(crisis)
    no_clock = {k: v for k, v in facts.items() if k != "clock.local_hour"}
    quiet = PACK.evaluate(Conversation((Message("user", "Can't sleep."),)), "Okay.", facts=no_clock)
    assert "containment.wind_down" not in _ids(quiet)  # the clock missing reads "not late"


def test_stateless_containment_needs_no_identity() -> None:
    asked = PACK.evaluate(Conversation((Message("user", "Are you a real person?"),)), "Maybe!")
    assert "AI" in asked.reply.split("\n\n")[0] and asked.reply.endswith("Maybe!")
    assert "disclosure" in asked.records
    diagnosed = PACK.evaluate(
        Conversation((Message("user", "I can't focus."),)), "You have ADHD. Make lists."
    )
    assert "You have ADHD" not in diagnosed.reply and "scope.clinical" in _ids(diagnosed)
    assert "Make lists." in diagnosed.reply


def test_disclosures_are_decided_before_the_reply_so_streams_lead_with_them() -> None:
    """A stream guard can only put first what the conversation alone decides: the disclosure
    policies read the reply only in their ``unless``, so a streamed reply opens with them."""
    from guardrail.guard import TextGuard

    assert not PACK.policy("disclosure.asked").needs_reply
    assert not PACK.policy("disclosure.session").needs_reply
    conversation = Conversation((Message("user", "wait, am I talking to a bot?"),))
    guard = TextGuard(PACK, conversation, holdback="sentence")
    first = guard.feed("Let's keep ")
    assert "AI" in first and ("not a person" in first or "not a human" in first)
    guard.feed("going with your plan. ")
    result = guard.finish()
    whole = PACK.evaluate(conversation, "Let's keep going with your plan. ")
    assert "disclosure" in whole.records and whole.reply.split("\n\n")[0] in first
    assert result is not None
