"""The fixture packs' own inline tests, one pytest item per case (testing.py)."""

from __future__ import annotations

import pytest

from guardrail.policy import Case, load_policies
from guardrail.policy.testing import collect_cases, run_case

from tests.kit.paths import POLICY_FIXTURES


BASIC = load_policies(POLICY_FIXTURES / "basic")
FAILING = load_policies(POLICY_FIXTURES / "failing")


@pytest.mark.parametrize("case", collect_cases(BASIC), ids=lambda c: c.id)
def test_basic_pack_case(case: Case) -> None:
    result = run_case(BASIC, case)
    assert result.ok, result.explain()


def test_collect_cases_records_where() -> None:
    cases = collect_cases(FAILING)
    assert [c.id for c in cases] == [
        "demo.cheer:hit[0]",
        "demo.cheer:hit[1]",
        "demo.cheer:hit[2]",
        "demo.cheer:ok[0]",
        "demo.cheer:ok[1]",
        "demo.cheer:todo_hit[0]",
        "demo.cheer:todo_hit[1]",
        "demo.cheer:todo_ok[0]",
    ]
    assert cases[0].file.endswith("failing.yaml") and cases[0].line == 13
    assert cases[1].line == 16


def test_statuses_and_explanations() -> None:
    results = {r.case.id: r for r in (run_case(FAILING, c) for c in collect_cases(FAILING))}
    assert results["demo.cheer:hit[0]"].status == "pass"
    missed = results["demo.cheer:hit[1]"]
    assert missed.status == "fail" and not missed.ok
    assert "expected a hit of demo.cheer, got none" in missed.explain()
    assert missed.explain().startswith(f"{missed.case.file}:16: FAIL demo.cheer hit case #1")
    wrong_text = results["demo.cheer:hit[2]"].explain()
    assert "--- expected reply" in wrong_text and "+++ actual reply" in wrong_text
    assert "-A DIFFERENT NOTE" in wrong_text and "+NOTE" in wrong_text
    assert results["demo.cheer:ok[1]"].status == "fail"
    assert results["demo.cheer:todo_hit[0]"].status == "todo"
    fixed = results["demo.cheer:todo_hit[1]"]
    assert fixed.status == "fixed" and fixed.ok and "promote it" in fixed.explain()
    assert results["demo.cheer:todo_ok[0]"].status == "todo"
