"""Reading ``fact`` and ``judge`` detectors from policy YAML (load time only).

    session.long:                      # a fact detector
      construct: long session
      fact: session.minutes            # a name of ``facts.FACTS``
      at_least: 180                    # or at_most / equals (numbers), is: true|false (booleans)
      when_unknown: false              # optional: the value without the fact (default: skip)

    user.crisis.judge:                 # a judge detector, answered by the runtime
      construct: suicidal ideation (semantic)
      judge:
        rubric: Does the person's last message express thoughts of ending their life?
        reads: last_user               # last_user | conversation | reply
        endpoint: default              # a judge endpoint of the settings

Guarantees of a built detector: its fact is in the vocabulary, its test fits the fact's type
(``is`` for booleans, a number for the others), exactly one test is given; a judge has a
non-empty rubric, a known ``reads`` and an endpoint name. Errors name the file and line.
"""

from __future__ import annotations

from guardrail.policy.facts import BOOL_FACTS, FACTS, JUDGE_READS, TESTS, FactLeaf, JudgeSpec
from guardrail.policy.yamlsource import Fields, Src, YMap

__all__ = ["FACT_KEYS", "JUDGE_KEYS", "build_fact_leaf", "build_judge_leaf", "is_fact_detector"]

FACT_KEYS = ("description", "fact", *TESTS, "when_unknown", "internal", "construct")
JUDGE_KEYS = ("description", "judge", "internal", "construct")
_JUDGE_SPEC_KEYS = ("rubric", "reads", "endpoint")


def is_fact_detector(raw: YMap) -> bool:
    """Whether a detector mapping is a fact or judge detector."""
    return "fact" in raw or "judge" in raw


def build_fact_leaf(name: str, raw: YMap, src: Src) -> FactLeaf:
    """A fact or judge detector from its mapping."""
    if "judge" in raw:
        return build_judge_leaf(name, raw, src)
    f = Fields(raw, src, f"detector {name!r}", FACT_KEYS)
    fact = f.need("fact", str)
    if fact.startswith("judge."):
        raise f.at("fact").error(
            f"detector {name!r}: judge answers are read by a 'judge' detector, not 'fact'"
        )
    if fact not in FACTS:
        raise f.at("fact").error(
            f"detector {name!r} reads unknown fact {fact!r} (known: {', '.join(FACTS)})"
        )
    tests = [t for t in TESTS if f.has(t)]
    if len(tests) != 1:
        raise f.src.error(
            f"detector {name!r} needs exactly one of {', '.join(TESTS)}"
            + (f", not {' and '.join(tests)}" if tests else "")
        )
    test = tests[0]
    value: float | bool
    if fact in BOOL_FACTS:
        if test != "is":
            raise f.at(test).error(f"fact {fact!r} is true or false: test it with 'is'")
        value = f.get("is", bool, True)
    else:
        if test == "is":
            raise f.at(test).error(
                f"fact {fact!r} is a number: test it with at_least, at_most or equals"
            )
        raw_value = f.map[test]
        if isinstance(raw_value, bool) or not isinstance(raw_value, (int, float)):
            raise f.at(test).error(f"{test!r} of detector {name!r} must be a number")
        value = float(raw_value)
    when_unknown = f.get("when_unknown", bool, False) if f.has("when_unknown") else None
    return FactLeaf(
        name=name,
        fact=fact,
        test=test,
        value=value,
        when_unknown=when_unknown,
        internal=f.get("internal", bool, False),
        description=f.get("description", str, ""),
        construct=f.get("construct", str, ""),
    )


def build_judge_leaf(name: str, raw: YMap, src: Src) -> FactLeaf:
    """A judge detector: the fact ``judge.<name>``, true when the judge answers yes; unanswered
    reads false (``Verdict.judges_unanswered`` names it)."""
    f = Fields(raw, src, f"detector {name!r}", JUDGE_KEYS)
    g = Fields(f.map["judge"], f.at("judge"), f"'judge' of detector {name!r}", _JUDGE_SPEC_KEYS)
    rubric = " ".join(g.need("rubric", str).split())
    if not rubric:
        raise g.at("rubric").error(f"detector {name!r}: the judge's 'rubric' must not be empty")
    reads = g.choice("reads", JUDGE_READS, "last_user")
    endpoint = g.get("endpoint", str, "default").strip()
    if not endpoint:
        raise g.at("endpoint").error(f"detector {name!r}: 'endpoint' must not be empty")
    return FactLeaf(
        name=name,
        fact=f"judge.{name}",
        test="is",
        value=True,
        when_unknown=False,
        internal=f.get("internal", bool, False),
        description=f.get("description", str, ""),
        construct=f.get("construct", str, ""),
        judge=JudgeSpec(name, rubric, reads, endpoint),
    )
