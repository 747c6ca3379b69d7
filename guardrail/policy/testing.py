"""Running the inline tests of policies (``tests: hit/ok/todo_hit/todo_ok`` in their YAML).

Used by ``guardrail test`` and by pytest (one parametrized item per case)::

    ps = load_policies("policies")
    @pytest.mark.parametrize("case", collect_cases(ps), ids=lambda c: c.id)
    def test_policy_case(case):
        result = run_case(ps, case)
        assert result.ok, result.explain()

What each kind of case requires:

* ``hit``: the policy hits (in either mode, without an error);
* ``ok``: the policy does not hit;
* ``expect`` (any kind): the final reply, after every policy of the set acted, equals it exactly;
* ``todo_hit`` / ``todo_ok``: known gaps. They never fail; while the gap remains the result is
  "todo", and once the case would pass as a ``hit`` / ``ok`` case it is "fixed" (promote it).

A set composed of several sources (``load_policies([...])``) is tested as it will serve:
:func:`run_composed` judges every case against the whole set, hit or no hit as above. An
``expect`` was written for the set as far as the case's own source (a later source's policies
and overrides were unknown to its author): where the composed reply differs, the case is judged
again against that prefix of the sources, and passes, marked ``changed``, if the reply there is
the expected one. Cases of policies an override turned off are not run (:func:`skipped`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from guardrail.policy.engine import PolicySet
from guardrail.policy.model import Case, Policy, Verdict

__all__ = ["Case", "CaseResult", "collect_cases", "run_case", "run_composed", "skipped"]

Status = Literal["pass", "fail", "todo", "fixed"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case. ``ok`` is False only for status "fail"."""

    case: Case
    status: Status
    hit: bool
    reply: str
    hits: tuple[str, ...]
    problems: tuple[str, ...] = ()
    error: str | None = None
    reply_differs: bool = False
    """The final reply differs from the case's ``expect`` (in the set the case was run on)."""
    changed: bool = False
    """The reply differs from ``expect`` only because a later source changes it (the case
    passes against the sources up to its own: :func:`run_composed`)."""

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def explain(self) -> str:
        """A readable report: where the case is, what was expected and what happened."""
        case = self.case
        head = f"{case.where}: {self.status.upper()} {case.policy} {case.kind} case #{case.index}"
        lines = [head]
        lines.extend(f"  {problem}" for problem in self.problems)
        if self.status == "fixed":
            what = "hits" if case.kind == "todo_hit" else "no longer hits"
            lines.append(
                f"  the policy now {what}: promote it to a "
                f"{'hit' if case.kind == 'todo_hit' else 'ok'} case"
            )
        if self.error is not None:
            lines.append(f"  policy error: {self.error}")
        lines.append(f"  hits: {', '.join(self.hits) or '(none)'}")
        if case.expect is not None and self.reply != case.expect:
            diff = difflib.unified_diff(
                case.expect.splitlines(keepends=True),
                self.reply.splitlines(keepends=True),
                fromfile="expected reply",
                tofile="actual reply",
            )
            lines.extend("  " + d.rstrip("\n") for d in diff)
        return "\n".join(lines)


def collect_cases(policyset: PolicySet) -> list[Case]:
    """Every inline case of every policy, policies in set order, cases in file order."""
    return [case for policy in policyset.policies for case in policy.tests]


def _expected_hit(case: Case) -> bool:
    return case.kind in ("hit", "todo_hit")


def run_case(policyset: PolicySet, case: Case) -> CaseResult:
    """Evaluate one case against the whole policy set and judge it."""
    verdict: Verdict = policyset.evaluate(case.conversation, case.reply, locale=case.locale)
    mine = next((h for h in verdict.hits if h.policy == case.policy), None)
    hit = mine is not None and mine.error is None
    problems: list[str] = []
    want = _expected_hit(case)
    if hit != want:
        problems.append(
            f"expected {'a hit' if want else 'no hit'} of {case.policy}, "
            f"got {'a hit' if hit else 'none'}"
        )
    differs = case.expect is not None and verdict.reply != case.expect
    if differs:
        problems.append("the reply after actions differs from 'expect':")
    status: Status
    if case.kind in ("hit", "ok"):
        status = "fail" if problems or (mine is not None and mine.error) else "pass"
    else:
        status = "todo" if problems else "fixed"
    return CaseResult(
        case=case,
        status=status,
        hit=hit,
        reply=verdict.reply,
        hits=tuple(h.policy for h in verdict.hits),
        problems=tuple(problems),
        error=mine.error if mine is not None else None,
        reply_differs=differs,
    )


def skipped(policyset: PolicySet) -> tuple[Policy, ...]:
    """The policies an override turned off: their cases are not run."""
    return policyset.composition.disabled


def run_composed(
    policyset: PolicySet,
    cases: list[Case],
    written_for: Callable[[int], PolicySet | None],
) -> list[CaseResult]:
    """Every case against the composed set; an ``expect`` that only a later source breaks is
    judged against ``written_for(i)``, the set of sources 0..i (i: the case's own source; None
    when that prefix does not load on its own: then the case fails as it stands)."""
    origin = policyset.composition.origin
    last = len(policyset.composition.sources) - 1
    results = []
    for case in cases:
        result = run_case(policyset, case)
        own = origin.get(case.policy, last)
        if (
            result.status == "fail"
            and result.reply_differs
            and len(result.problems) == 1
            and result.error is None
        ):
            base = written_for(own) if own < last else None
            if base is not None and run_case(base, case).status == "pass":
                result = replace(result, status="pass", problems=(), changed=True)
        results.append(result)
    return results
