"""`guardrail check` (the eval contract) and `guardrail test`, run as real processes."""

from __future__ import annotations

import pytest
import json
from pathlib import Path

from tests.kit.paths import POLICY_FIXTURES
from tests.kit.serve import run_guardrail


pytestmark = pytest.mark.subprocess

BASIC = POLICY_FIXTURES / "basic"


CASES = [
    {
        "id": "a",
        "messages": [{"role": "user", "content": "I feel hopeless"}],
        "reply": "Ok.",
        "source": "x",
        "extra": 1,
    },
    "this line is not json",
    {"id": "b", "messages": [{"role": "user", "content": "hi"}], "reply": 5},
    {
        "id": "c",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "will you leave?"},
        ],
        "reply": "I will always be here. Bye.",
    },
    {"messages": [], "reply": "no id here"},
]


def _jsonl() -> str:
    lines = [c if isinstance(c, str) else json.dumps(c) for c in CASES]
    return "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n"


@pytest.mark.slow
def test_check_contract_with_a_malformed_line() -> None:
    proc = run_guardrail("check", "--jsonl", "-", "--policies", str(BASIC), stdin=_jsonl())
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress: stderr is not a terminal
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", None, "b", "c", None]
    assert out[1] == {"id": None, "error": "line 2: not valid JSON"}
    assert out[2] == {"id": "b", "error": 'line 4: "reply" missing or not a string'}
    first = out[0]
    assert set(first) == {"id", "hits", "signals", "reply"}
    assert [(h["policy"], h["category"], h["action"], h["mode"]) for h in first["hits"]] == [
        ("referral.missing", "referral", "append", "enforce")
    ]
    assert first["signals"]["user.distress"] is True
    assert {"user.distress", "user.crisis", "reply.referral"} <= set(first["signals"])
    assert all(isinstance(v, bool) for v in first["signals"].values())
    assert first["reply"].startswith("Ok.\n\nIf you need to talk")
    assert "evidence" not in first["hits"][0]  # no text unless --explain
    assert out[3]["reply"] == "I'm glad to keep talking. Bye."
    assert out[4]["reply"] == "no id here" and out[4]["hits"] == []


@pytest.mark.slow
def test_check_explain_adds_evidence_with_excerpt(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(CASES[0]) + "\n", encoding="utf-8")
    proc = run_guardrail(
        "check",
        "--jsonl",
        str(path),
        "--explain",
        "--locale",
        "en-GB",
        env={"GUARDRAIL_POLICIES": str(BASIC)},
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    (evidence,) = result["hits"][0]["evidence"]
    assert evidence == {
        "detector": "user.distress",
        "construct": None,
        "scope": "user_turns",
        "turn": 0,
        "sentence": None,
        "span": [7, 15],
        "excerpt": "hopeless",
    }
    assert "Samaritans" in result["reply"]


@pytest.mark.slow
def test_check_explain_names_the_construct_of_each_detector_that_fired(tmp_path: Path) -> None:
    """A leaf's own ``construct`` wins; a leaf without one takes its composite's (issue 15, 8)."""
    (tmp_path / "p.yaml").write_text(
        """
detectors:
  user.burden:
    construct: burdensomeness
    scope: last_user
    phrases: [a burden to everyone]
  user.trapped:
    scope: last_user
    phrases: [no way out]
  user.low:
    construct: hopelessness
    any_of: [user.burden, user.trapped]
policies:
  - id: nudge
    category: referral
    description: a test policy
    severity: high
    condition: user.low
    actions:
      - append: {text: ["Talk to someone you trust."]}
    tests:
      hit: [{user: "I am a burden to everyone", reply: "Ok."}]
      ok: [{user: "hello", reply: "Hi."}]
""",
        encoding="utf-8",
    )
    case = {"id": "x", "messages": [{"role": "user", "content": "a burden to everyone, no way out"}],
            "reply": "Ok."}
    proc = run_guardrail("check", "--jsonl", "-", "--explain", "--policies", str(tmp_path),
                stdin=json.dumps(case) + "\n")
    assert proc.returncode == 0, proc.stderr
    (hit,) = json.loads(proc.stdout)["hits"]
    assert hit["constructs"] == ["burdensomeness", "hopelessness"]
    assert [(e["detector"], e["construct"]) for e in hit["evidence"]] == [
        ("user.burden", "burdensomeness"),
        ("user.trapped", "hopelessness"),
    ]
    plain = run_guardrail("check", "--jsonl", "-", "--policies", str(tmp_path), stdin=json.dumps(case))
    assert "constructs" not in json.loads(plain.stdout)["hits"][0]  # only with --explain


def test_check_bad_policies_exit_2() -> None:
    proc = run_guardrail("check", "--jsonl", "-", "--policies", str(POLICY_FIXTURES / "missing"), stdin="")
    assert proc.returncode == 2
    assert "no such policy file or folder" in proc.stderr


@pytest.mark.slow
def test_policy_test_command_passes() -> None:
    proc = run_guardrail("test", str(BASIC))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7 cases of 3/3 policies: 7 passed, 0 failed" in proc.stdout


@pytest.mark.slow
def test_policy_test_command_reports_failures() -> None:
    proc = run_guardrail("test", str(POLICY_FIXTURES / "failing"))
    assert proc.returncode == 1
    out = proc.stdout
    where = POLICY_FIXTURES / "failing" / "failing.yaml"
    assert f"{where}:16: FAIL demo.cheer hit case #1" in out
    assert "expected a hit of demo.cheer, got none" in out
    assert "--- expected reply\n  +++ actual reply" in out
    assert "FIXED demo.cheer todo_hit case #1" in out and "promote it" in out
    assert f"{where}:27: TODO demo.cheer:todo_hit[0] (known gap)" in out
    assert "8 cases of 1/1 policy: 2 passed, 3 failed, 2 known gaps (todo), 1 fixed" in out
    assert "  demo.cheer  2 passed, 3 failed, 2 known gaps, 1 fixed: promote them" in out


@pytest.mark.slow
def test_policy_test_command_reports_each_policy() -> None:
    proc = run_guardrail("test", str(BASIC))
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert sorted(line[0] for line in lines) == [
        "dependency.always",
        "referral.missing",
        "validation.praise",
    ]
    assert all(line[2:4] == ["passed,", "0"] for line in lines)


@pytest.mark.slow
def test_policy_test_command_load_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("policies:\n  - id: x\n    bogus: 1\n", encoding="utf-8")
    proc = run_guardrail("test", str(tmp_path))
    assert proc.returncode == 2
    assert f"{tmp_path / 'bad.yaml'}:3: policy 'x': unknown key 'bogus'" in proc.stderr


@pytest.mark.slow
def test_check_explain_covers_sentence_hits_conditions_and_regenerate(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "detectors:\n"
        "  user.low: {scope: last_user, phrases: [low]}\n"
        "  reply.odd: {scope: sentence, phrases: [oddword]}\n"
        "  reply.help: {scope: reply, phrases: [counsellor]}\n"
        "policies:\n"
        "  - id: s.swap\n"
        "    category: containment\n"
        "    description: swaps a sentence\n"
        "    severity: high\n"
        "    condition: reply.odd and user.low\n"
        "    actions: [{replace: {text: '[swapped]'}}]\n"
        "  - id: r.refer\n"
        "    category: referral\n"
        "    description: refers\n"
        "    severity: medium\n"
        "    condition: user.low and not reply.help\n"
        "    actions: [{append: {text: Talk to someone.}}]\n"
        "    regenerate: {instruction: Suggest someone to talk to.}\n",
        encoding="utf-8",
    )
    case = {
        "id": "e",
        "messages": [{"role": "user", "content": "feeling low"}],
        "reply": "Fine. An oddword here.",
    }
    proc = run_guardrail(
        "check", "--jsonl", "-", "--explain", "--policies", str(tmp_path), stdin=json.dumps(case)
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    swap, refer = result["hits"]
    assert swap["condition"] == "reply.odd and user.low"
    assert [(e["detector"], e["sentence"], e["excerpt"]) for e in swap["evidence"]] == [
        ("user.low", None, "low"),
        ("reply.odd", 1, "oddword"),
    ]
    assert refer["condition"] == "user.low and not reply.help"
    assert [e["detector"] for e in refer["evidence"]] == ["user.low"]  # "not" supports nothing
    assert refer["regenerate"] == {
        "instruction": "Suggest someone to talk to.",
        "fallback": "append",
    }
    assert result["reply"] == "Fine. [swapped]\n\nTalk to someone."
    assert "regenerate" not in swap
