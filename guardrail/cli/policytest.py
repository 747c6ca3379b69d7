"""Run every policy's inline tests (hit, ok, todo_hit, todo_ok cases in the policy YAML).

A hit case must produce a hit of its policy, an ok case must not, and `expect` must equal the
reply after every policy acted. todo_hit/todo_ok cases are known gaps: they are reported but never
fail, and are flagged "fixed, promote it" once they pass. The report ends with one line per
policy (cases passed and failed, known gaps remaining, gaps fixed) and a total. Exit status: 0
all passed, 1 a case failed, 2 the policies could not be loaded.

Several sources (``guardrail test default ./mine``) are tested as one composed set
(``policy.testing.run_composed``): the cases of a policy an override turned off are skipped and
listed with the override's place; a case whose ``expect`` only a later source changes passes,
counted as "changed by later sources" and listed with ``-v``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from guardrail.cli.check import chosen_policies
from guardrail.errors import PolicyError
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.model import Policy
from guardrail.policy.testing import CaseResult, run_composed, skipped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="*",
        default=None,
        help="policy folder, file or 'default' (the bundled pack); several are applied in order "
        "(default: $GUARDRAIL_POLICIES or default)",
    )
    parser.add_argument(
        "-k",
        dest="only",
        metavar="TEXT",
        default=None,
        help="only run cases of policies whose id contains TEXT",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case")
    parser.set_defaults(run=run)


def _untested(policies: Sequence[Policy]) -> list[str]:
    """Warnings for policies without both a hit case and an ok case."""
    out = []
    for policy in policies:
        kinds = {case.kind for case in policy.tests}
        missing = [k for k in ("hit", "ok") if k not in kinds]
        if missing:
            out.append(
                f"{policy.file}:{policy.line}: warning: policy {policy.id!r} has no "
                + " and no ".join(missing)
                + " cases"
            )
    return out


def _per_policy(results: list[CaseResult], policies: Sequence[Policy]) -> list[str]:
    """One line per policy: cases passed, failed, known gaps left, gaps fixed (to promote)."""
    order = [p.id for p in policies] or sorted({r.case.policy for r in results})
    by_policy: dict[str, dict[str, int]] = {pid: {} for pid in order}
    for result in results:
        counts = by_policy.setdefault(result.case.policy, {})
        counts[result.status] = counts.get(result.status, 0) + 1
    width = max((len(pid) for pid in by_policy), default=0)
    lines = []
    for pid, counts in by_policy.items():
        line = (
            f"  {pid:<{width}}  {counts.get('pass', 0)} passed, {counts.get('fail', 0)} failed, "
            f"{counts.get('todo', 0)} known gap{'' if counts.get('todo', 0) == 1 else 's'}"
        )
        if counts.get("fixed"):
            line += f", {counts['fixed']} fixed: promote them"
        lines.append(line)
    return lines


def report(
    results: list[CaseResult],
    out: TextIO,
    *,
    policies: Sequence[Policy] = (),
    verbose: bool = False,
    off: Sequence[tuple[Policy, str]] = (),
) -> int:
    """Print failures, known gaps, untested policies and a summary; return the exit status.
    ``off``: policies turned off by an override, with where (their cases are not run)."""
    counts = {"pass": 0, "fail": 0, "todo": 0, "fixed": 0}
    changed = 0
    for result in results:
        counts[result.status] += 1
        changed += result.changed
        if result.status in ("fail", "fixed"):
            print(result.explain(), file=out)
        elif result.status == "todo":
            print(f"{result.case.where}: TODO {result.case.id} (known gap)", file=out)
        elif verbose and result.changed:
            print(
                f"{result.case.where}: PASS {result.case.id} (the reply is changed by a later "
                "source; 'expect' holds for the sources up to the case's own)",
                file=out,
            )
        elif verbose:
            print(f"{result.case.where}: {result.status.upper()} {result.case.id}", file=out)
    for policy, where in off:
        print(
            f"{policy.file}:{policy.line}: SKIP {policy.id}: {len(policy.tests)} cases not run, "
            f"the policy is turned off ({where})",
            file=out,
        )
    for warning in _untested(policies):
        print(warning, file=out)
    for line in _per_policy(results, policies):
        print(line, file=out)
    tested = len({r.case.policy for r in results})
    total = max(len(policies), tested)
    extra = ""
    if off:
        extra += f", {sum(len(p.tests) for p, _ in off)} skipped (policy turned off)"
    if changed:
        extra += f", {changed} changed by later sources"
    print(
        f"{len(results)} cases of {tested}/{total} polic{'y' if total == 1 else 'ies'}: "
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['todo']} known gaps (todo), "
        f"{counts['fixed']} fixed (promote them){extra}",
        file=out,
    )
    return 1 if counts["fail"] else 0


def run(args: argparse.Namespace) -> int:
    policyset = load_policies(chosen_policies(args.path))
    chosen = [p for p in policyset.policies if args.only is None or args.only in p.id]
    cases = [case for policy in chosen for case in policy.tests]
    sources = policyset.composition.sources
    prefixes: dict[int, PolicySet | None] = {}

    def written_for(index: int) -> PolicySet | None:
        if index not in prefixes:
            try:
                prefixes[index] = load_policies(list(sources[: index + 1]))
            except PolicyError:  # the source uses a later one's names: judge it composed
                prefixes[index] = None
        return prefixes[index]

    results = run_composed(policyset, cases, written_for)
    changes = policyset.composition.changes
    off = [
        (p, "; ".join(changes.get(p.id, ())))
        for p in skipped(policyset)
        if args.only is None or args.only in p.id
    ]
    return report(results, sys.stdout, policies=chosen, verbose=args.verbose, off=off)
