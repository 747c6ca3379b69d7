"""policies/COMPLIANCE.md stays true to what ships: every policy of the bundled pack is mapped,
every policy it maps exists in the file it names (once that file ships), every metric and
command it names exists, and it says what it is not."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from guardrail.cli import main
from guardrail.observe import metrics as m
from guardrail.policy import load_policies
from guardrail.config.settings import DEFAULT_POLICIES

DOC = (DEFAULT_POLICIES / "COMPLIANCE.md").read_text(encoding="utf-8")
PACK = load_policies(DEFAULT_POLICIES)
_MAPPED = re.compile(r"^\| ((?:`[a-z_.]+`(?:, )?)+) \(([a-z_]+\.yaml)\) \|", re.MULTILINE)


def mapped() -> dict[str, str]:
    """Policy id -> the pack file the doc says defines it."""
    out = {}
    for ids, file in _MAPPED.findall(DOC):
        for policy in re.findall(r"`([a-z_.]+)`", ids):
            out[policy] = file
    return out


def test_every_policy_of_the_bundled_pack_is_mapped_to_its_file() -> None:
    rows = mapped()
    for policy in PACK.policies:
        assert policy.id in rows, f"{policy.id} is not in policies/COMPLIANCE.md"
        assert policy.file.endswith(rows[policy.id]), (policy.id, policy.file)


def test_every_mapped_policy_of_a_shipped_file_exists() -> None:
    """Rows for a pack file that is not shipped (yet) are not checked; once it ships, each
    policy id the doc maps to it must be defined there."""
    shipped = {p.name for p in DEFAULT_POLICIES.glob("*.yaml")}
    ids = {p.id for p in PACK.policies}
    rows = mapped()
    assert len(rows) >= 20
    for policy, file in rows.items():
        if file in shipped:
            assert policy in ids, f"COMPLIANCE.md maps {policy}, which {file} does not define"


def test_every_metric_and_command_it_names_exists() -> None:
    m.init_process()
    known = {f.name for f in m.REGISTRY.collect()} | {
        s.name for f in m.REGISTRY.collect() for s in f.samples
    }
    named = set(re.findall(r"\bguardrail_[a-z_]+\b", DOC))
    assert named and named <= known | {n + "_total" for n in known}, named - known
    for action in re.findall(r'action="([a-z_]+)"', DOC):
        assert action in m.CONTAINMENT_ACTIONS
    for command in set(re.findall(r"`guardrail ([a-z]+(?: referrals)?)", DOC)):
        with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(io.StringIO()):
            main([*command.split(), "--help"])
        assert done.value.code == 0, command


def test_it_cites_each_law_and_says_what_it_is_not() -> None:
    for citation in (
        "Cal. Bus. & Prof. Code §§22601-22605",
        "N.Y. Gen. Bus. Law Art. 47, §§1700-1704",
        "Utah Code §13-72a-203",
        "Art. 50(1)",
    ):
        assert citation in DOC
    assert "**This is not legal advice.**" in DOC
    section = DOC.split("## What guardrail does not cover")[1]
    for gap in ("age verification", "advertising", "Data-protection law", "filing"):
        assert gap in section
