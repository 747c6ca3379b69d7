"""Facts in the engine (issue 14 item 3, issue 15 item 7): ``fact`` and ``judge`` detectors,
state-based policies skipped without their state, ``records``, and inline cases with facts.

Each test tries to break one promise of the contract: without facts nothing changes; a policy is
never decided on part of the state it reads; a judge left unanswered reads false and is named;
records come only from what a reply actually got."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from guardrail.errors import PolicyError
from guardrail.policy import Conversation, JudgeSpec, PolicySet, SentenceSplitter, load_policies
from guardrail.policy.testing import collect_cases, run_case

PACK = """\
detectors:
  user.sad: {scope: last_user, phrases: [sad]}
  reply.bad: {scope: sentence, phrases: [you are broken]}
  reply.mentions_ai: {scope: reply, phrases: [an ai]}
  session.long: {construct: long session, fact: session.minutes, at_least: 180}
  session.first: {fact: session.turns, equals: 1}
  disclosed.recently: {fact: disclosure.minutes_since, at_most: 30}
  user.minor: {fact: user.minor, is: true}
  night: {fact: clock.local_hour, at_most: 4}
  referral.recent: {fact: referral.minutes_since, at_most: 30, when_unknown: false}
  unused.fact: {fact: crisis.hours_since, at_most: 6}
  sad.judge:
    construct: low mood (semantic)
    judge:
      rubric: >-
        Does the person's last message say they feel low?
      reads: last_user
      endpoint: small
  sad.any: {any_of: [user.sad, sad.judge]}
policies:
  - id: session.break
    category: containment
    description: a break after a long session, for minors
    condition: session.long and user.minor
    records: [break_reminder]
    actions:
      - append: {text: "Time for a break."}
    tests:
      hit:
        - user: "hello"
          reply: "Hi."
          facts: {session.minutes: 200, user.minor: true}
          expect: "Hi.\\n\\nTime for a break."
      ok:
        - user: "hello"
          reply: "Hi."
        - user: "hello"
          reply: "Hi."
          facts: {session.minutes: 200, user.minor: false}
  - id: session.either
    category: other
    description: reads two state facts under or
    condition: session.first or disclosed.recently
  - id: late.night
    category: containment
    description: the clock alone, not state
    severity: low
    condition: night
    records: [wind_down]
    actions:
      - append: {text: "It is late."}
  - id: nudge
    category: referral
    description: distress nudge, paced by state when there is some
    severity: high
    condition: user.sad and not referral.recent
    records: [referral]
    actions:
      - append: {text: "Talk to someone you trust."}
  - id: nudge.weak
    category: referral
    description: a weaker nudge of the same kind
    severity: low
    condition: user.sad
    records: [crisis_referral]
    actions:
      - append: {text: "A weaker nudge."}
  - id: sad.semantic
    category: other
    description: the judge or the words
    condition: sad.any
    records: [disclosure]
    mode: shadow
    tests:
      hit:
        - user: "meh"
          reply: "Ok."
          judge: {sad.judge: true}
      ok:
        - user: "meh"
          reply: "Ok."
          judge: {sad.judge: false}
  - id: rewrite.long
    category: other
    description: a sentence rewrite that reads state
    condition: reply.bad and session.long
    actions:
      - replace: {text: "You are doing your best."}
"""


@pytest.fixture
def ps(write: Callable[..., Path]) -> PolicySet:
    return load_policies(write(PACK))


def _conv(text: str = "hello") -> Conversation:
    return Conversation.of(("user", text))


def _ids(verdict: object) -> set[str]:
    return {h.policy for h in verdict.hits}  # type: ignore[attr-defined]


def test_fact_detectors_publish_signals(ps: PolicySet) -> None:
    facts = {"session.minutes": 180.0, "session.turns": 1.0, "user.minor": True,
             "disclosure.minutes_since": 31.0, "clock.local_hour": 4.0}
    signals = ps.evaluate(_conv(), "Hi.", facts=facts).signals
    assert signals["session.long"] and signals["session.first"] and signals["user.minor"]
    assert signals["night"] and not signals["disclosed.recently"]
    signals = ps.evaluate(_conv(), "Hi.", facts={**facts, "session.minutes": 179.9}).signals
    assert not signals["session.long"]


def test_state_policies_are_skipped_without_facts(ps: PolicySet) -> None:
    verdict = ps.evaluate(_conv(), "Hi.")
    assert ("session.break", "no_state") in verdict.skipped
    assert ("session.either", "no_state") in verdict.skipped
    assert "session.break" not in _ids(verdict) and verdict.reply == "Hi."
    # the clock is not state: missing, it reads false, and its policy is evaluated
    assert "late.night" not in {pid for pid, _ in verdict.skipped}
    assert verdict.signals["night"] is False


def test_a_policy_is_never_decided_on_part_of_its_state(ps: PolicySet) -> None:
    """``session.first or disclosed.recently`` would hold on session.turns alone; without
    disclosure.minutes_since it must still be skipped, not hit."""
    verdict = ps.evaluate(_conv(), "Hi.", facts={"session.turns": 1.0})
    assert "session.either" not in _ids(verdict)
    assert ("session.either", "no_state") in verdict.skipped
    verdict = ps.evaluate(
        _conv(), "Hi.", facts={"session.turns": 1.0, "disclosure.minutes_since": math.inf}
    )
    assert "session.either" in _ids(verdict)
    assert ("session.either", "no_state") not in verdict.skipped


@pytest.mark.parametrize("bad", ["200", None, math.nan, True, [200]])
def test_a_malformed_fact_counts_as_missing(ps: PolicySet, bad: object) -> None:
    verdict = ps.evaluate(
        _conv(), "Hi.", facts={"session.minutes": bad, "user.minor": True}  # type: ignore[dict-item]
    )
    assert ("session.break", "no_state") in verdict.skipped
    verdict = ps.evaluate(_conv(), "Hi.", facts={"session.minutes": 200, "user.minor": 1})  # type: ignore[dict-item]
    assert ("session.break", "no_state") in verdict.skipped  # 1 is no boolean


def test_when_unknown_keeps_a_policy_working_without_state(ps: PolicySet) -> None:
    sad = _conv("I am sad")
    verdict = ps.evaluate(sad, "Ok.")
    assert "nudge" in _ids(verdict) and verdict.reply.endswith("Talk to someone you trust.")
    assert "nudge" not in {pid for pid, _ in verdict.skipped}
    paced = ps.evaluate(sad, "Ok.", facts={"referral.minutes_since": 5.0})
    assert "nudge" not in _ids(paced)
    again = ps.evaluate(sad, "Ok.", facts={"referral.minutes_since": 45.0})
    assert "nudge" in _ids(again)


def test_state_facts_needed_lists_what_policies_read(
    ps: PolicySet, write: Callable[..., Path], tmp_path: Path
) -> None:
    assert ps.state_facts_needed == frozenset(
        {"session.minutes", "session.turns", "disclosure.minutes_since", "user.minor",
         "referral.minutes_since"}
    )  # not the clock, not judges, not a detector no policy reads (crisis.hours_since)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "p.yaml").write_text(
        "detectors:\n  user.sad: {scope: last_user, phrases: [sad]}\n"
        "policies:\n  - {id: p, category: c, description: d, condition: user.sad}\n"
    )
    loaded = load_policies(plain)
    assert loaded.state_facts_needed == frozenset() and loaded.judges == ()
    verdict = loaded.evaluate(_conv("sad"), "Ok.")
    assert verdict.skipped == () and verdict.judges_unanswered == ()


def test_judges_are_exposed_and_read_as_facts(ps: PolicySet) -> None:
    assert ps.judges == (
        JudgeSpec("sad.judge", "Does the person's last message say they feel low?", "last_user",
                  "small"),
    )
    unanswered = ps.evaluate(_conv("meh"), "Ok.")
    assert unanswered.judges_unanswered == ("sad.judge",)
    assert unanswered.signals["sad.judge"] is False and "sad.semantic" not in _ids(unanswered)
    yes = ps.evaluate(_conv("meh"), "Ok.", facts={"judge.sad.judge": True})
    (hit,) = [h for h in yes.hits if h.policy == "sad.semantic"]
    assert yes.judges_unanswered == () and hit.facts == (("sad.judge", "judge.sad.judge", True),)
    assert hit.constructs == ("low mood (semantic)",)  # a judge's construct names the hit
    no = ps.evaluate(_conv("meh"), "Ok.", facts={"judge.sad.judge": False})
    assert "sad.semantic" not in _ids(no) and no.judges_unanswered == ()


def test_records_come_from_what_the_reply_got(ps: PolicySet) -> None:
    verdict = ps.evaluate(_conv("sad"), "Ok.", facts={"session.minutes": 200.0,
                                                       "user.minor": True})
    # nudge (high) and nudge.weak (low) both hit; only nudge's append is placed
    assert {"nudge", "nudge.weak", "session.break"} <= _ids(verdict)
    assert verdict.records == frozenset({"referral", "break_reminder"})
    # a shadow-mode hit did nothing, so it records nothing
    shadow = ps.evaluate(_conv("meh"), "Ok.", facts={"judge.sad.judge": True})
    assert "sad.semantic" in _ids(shadow) and "disclosure" not in shadow.records


def test_the_library_check_takes_facts(ps: PolicySet) -> None:
    from guardrail.library import check

    messages = [{"role": "user", "content": "hello"}]
    assert check(ps, messages, "Hi.").reply == "Hi."
    verdict = check(ps, messages, "Hi.", facts={"session.minutes": 200.0, "user.minor": True})
    assert verdict.reply == "Hi.\n\nTime for a break." and "break_reminder" in verdict.records


def test_a_hit_names_the_facts_behind_it(ps: PolicySet) -> None:
    verdict = ps.evaluate(_conv(), "Hi.", facts={"session.minutes": 200.0, "user.minor": True})
    (hit,) = [h for h in verdict.hits if h.policy == "session.break"]
    assert hit.facts == (("session.long", "session.minutes", 200.0),
                         ("user.minor", "user.minor", True))
    assert hit.constructs == ("long session",)  # user.minor names no construct


def test_sentence_policies_reading_state_are_skipped_too(ps: PolicySet) -> None:
    reply = "Honestly, you are broken. Let's talk."
    assert ps.evaluate(_conv(), reply).reply == reply
    rewritten = ps.evaluate(_conv(), reply, facts={"session.minutes": 200.0})
    assert rewritten.reply.startswith("You are doing your best.")


def test_streaming_with_facts_matches_evaluate(ps: PolicySet) -> None:
    facts = {"session.minutes": 200.0, "user.minor": True, "referral.minutes_since": 3.0}
    reply = "Ok. You are broken, honestly. Bye."
    whole = ps.evaluate(_conv("sad"), reply, facts=facts)
    scan = ps.start(_conv("sad"), facts=facts)
    splitter = SentenceSplitter()
    out = [scan.feed_sentence(s) for s in splitter.feed(reply)]
    out.extend(scan.feed_sentence(s) for s in [splitter.flush()] if s)
    streamed = scan.finish()
    assert streamed.hits == whole.hits and streamed.records == whole.records
    assert streamed.skipped == whole.skipped and streamed.reply == whole.reply


def test_inline_cases_set_facts_and_judges(ps: PolicySet) -> None:
    cases = {c.id: c for c in collect_cases(ps)}
    assert cases["session.break:hit[0]"].facts == {"session.minutes": 200.0, "user.minor": True}
    assert cases["session.break:ok[0]"].facts is None
    assert cases["sad.semantic:hit[0]"].facts == {"judge.sad.judge": True}
    results = [run_case(ps, c) for c in cases.values()]
    assert all(r.ok for r in results), [r.explain() for r in results if not r.ok]
    skipped = run_case(ps, cases["session.break:ok[0]"])
    assert "session.break" in skipped.skipped


def test_a_failing_case_names_its_facts(ps: PolicySet) -> None:
    from dataclasses import replace

    (hit,) = [c for c in collect_cases(ps) if c.id == "session.break:hit[0]"]
    case = replace(hit, kind="ok")  # a hit case judged as ok: fails
    result = run_case(ps, case)
    assert not result.ok
    assert "facts: session.minutes=200, user.minor=true" in result.explain()
    unskipped = replace(case, facts=None, kind="hit")
    assert "was skipped: a state fact it reads was not given" in run_case(ps, unskipped).explain()


# ------------------------------------------------------------------ load errors

HEAD = """\
detectors:
  user.sad: {scope: last_user, phrases: [sad]}
  reply.ok: {scope: reply, phrases: [ok]}
"""
POLICY = """\
policies:
  - id: p.one
    category: c
    description: d
    condition: user.sad
"""
LOAD_ERRORS = [
    ("unknown fact", "  x: {fact: session.hours, at_least: 1}  # <-\n", "unknown fact 'session.hours'"),
    ("two tests", "  x: {fact: session.minutes, at_least: 1, at_most: 3}  # <-\n", "exactly one of"),
    ("no test", "  x: {fact: session.minutes}  # <-\n", "exactly one of"),
    ("is on a number", "  x: {fact: session.minutes, is: true}  # <-\n", "is a number"),
    ("number on a bool", "  x: {fact: user.minor, at_least: 1}  # <-\n", "test it with 'is'"),
    ("text threshold", "  x: {fact: session.minutes, at_least: '3'}  # <-\n", "must be a number"),
    ("judge via fact", "  x: {fact: judge.x, is: true}  # <-\n", "read by a 'judge' detector"),
    ("unknown key", "  x: {fact: session.minutes, at_least: 1, scope: reply}  # <-\n", "unknown key 'scope'"),
    ("judge reads", "  x: {judge: {rubric: r, reads: everything}}  # <-\n", "'reads' must be one of"),
    ("judge rubric", "  x: {judge: {rubric: '  '}}  # <-\n", "'rubric' must not be empty"),
    ("judge key", "  x: {judge: {rubric: r, model: m}}  # <-\n", "unknown key 'model'"),
]


def _marked(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if "# <-" in line)


@pytest.mark.parametrize(("name", "line", "fragment"), LOAD_ERRORS, ids=[c[0] for c in LOAD_ERRORS])
def test_bad_fact_detectors_name_file_and_line(
    write: Callable[..., Path], name: str, line: str, fragment: str
) -> None:
    text = HEAD + line + POLICY
    with pytest.raises(PolicyError) as info:
        load_policies(write(text))
    assert fragment in str(info.value)
    assert info.value.line == _marked(text) and str(info.value.file).endswith("policy.yaml")


POLICY_ERRORS = [
    ("unknown record", "    records: [reminder]  # <-\n", "unknown record 'reminder'"),
    ("case fact", "    tests:\n      ok:\n        - user: a\n          reply: b\n"
     "          facts: {session.hourz: 1}  # <-\n", "unknown fact 'session.hourz'"),
    ("case fact type", "    tests:\n      ok:\n        - user: a\n          reply: b\n"
     "          facts: {user.minor: 1}  # <-\n", "must be true or false"),
    ("case judge", "    tests:\n      ok:\n        - user: a\n          reply: b\n"
     "          judge: {user.sad: true}  # <-\n", "is not a judge detector"),
]


@pytest.mark.parametrize(("name", "tail", "fragment"), POLICY_ERRORS, ids=[c[0] for c in POLICY_ERRORS])
def test_bad_records_and_case_facts_name_file_line_and_policy(
    write: Callable[..., Path], name: str, tail: str, fragment: str
) -> None:
    text = HEAD + POLICY + tail
    with pytest.raises(PolicyError) as info:
        load_policies(write(text))
    assert fragment in str(info.value)
    assert info.value.line == _marked(text) and info.value.policy_id == "p.one"


def test_facts_cannot_be_counted_nor_read_by_unless(write: Callable[..., Path]) -> None:
    counting = HEAD + "  x: {fact: session.minutes, at_least: 1}\n  y: {any_of: [user.sad, x], min_matches: 2}\n"
    with pytest.raises(PolicyError, match="reads a fact"):
        load_policies(write(counting + POLICY))
    unless = (
        HEAD + "  x: {fact: session.minutes, at_least: 1}\n" + POLICY
        + "    actions:\n      - append: {text: t, unless: x}\n"
    )
    with pytest.raises(PolicyError, match="'unless' may read only reply detectors"):
        load_policies(write(unless))


# ------------------------------------------------------------------ commands


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail", *args],
        check=False, input=stdin, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.subprocess
def test_check_explain_shows_facts_skipped_records_and_judges(
    write: Callable[..., Path],
) -> None:
    folder = write(PACK)
    lines = [
        {"id": "with", "messages": [{"role": "user", "content": "I am sad"}], "reply": "Ok.",
         "facts": {"session.minutes": 200, "user.minor": True, "referral.minutes_since": "inf"}},
        {"id": "without", "messages": [{"role": "user", "content": "hi"}], "reply": "Ok."},
        {"id": "bad", "messages": [], "reply": "Ok.", "facts": {"session.hours": 2}},
    ]
    proc = _run("check", "--jsonl", "-", "--explain", "--policies", str(folder),
                stdin="\n".join(json.dumps(x) for x in lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    got = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    (brk,) = [h for h in got["with"]["hits"] if h["policy"] == "session.break"]
    assert brk["facts"] == [
        {"detector": "session.long", "fact": "session.minutes", "value": 200.0},
        {"detector": "user.minor", "fact": "user.minor", "value": True},
    ]
    assert got["with"]["records"] == ["break_reminder", "referral"]
    assert got["with"]["judges_unanswered"] == ["sad.judge"]
    assert {"policy": "session.break", "reason": "no_state"} in got["without"]["skipped"]
    assert "unknown fact 'session.hours'" in got["bad"]["error"]


@pytest.mark.subprocess
def test_policy_test_command_runs_cases_with_facts(write: Callable[..., Path]) -> None:
    proc = _run("test", str(write(PACK)), "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "session.break:hit[0] (facts: session.minutes=200, user.minor=true)" in proc.stdout
    broken = PACK.replace("facts: {session.minutes: 200, user.minor: true}",
                          "facts: {session.minutes: 100, user.minor: true}")
    proc = _run("test", str(write(broken)))
    assert proc.returncode == 1
    assert "facts: session.minutes=100, user.minor=true" in proc.stdout
