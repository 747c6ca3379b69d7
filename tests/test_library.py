"""The library API over the default pack: load, check, conversation(), and the CLI's verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import guardrail
from guardrail import Conversation, Message, PolicyError, TextGuard, check, conversation
from guardrail.cli.check import REQUIRED_SIGNALS
from guardrail.policy.model import Case
from guardrail.policy.testing import collect_cases, run_case

from tests.kit.paths import ROOT
from tests.kit.policysets import PACK
from tests.kit.serve import run_guardrail


CASES = collect_cases(PACK)


def as_dicts(conv: Conversation) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in conv.messages]


def test_the_pack_loads_through_the_public_api() -> None:
    policies = guardrail.load_policies(ROOT / "policies")
    assert isinstance(policies, guardrail.PolicySet)
    assert policies.policies and policies.source.endswith("policies")
    assert policies.default_locale in policies.locales


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_bad_policy_folder_fails_like_the_proxy(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "policies:\n"
        "  - id: bad.one\n"
        "    category: x\n"
        "    description: d\n"
        "    severity: high\n"
        "    condition: reply.nope\n"
        "    actions: [annotate]\n"
    )
    with pytest.raises(PolicyError) as info:
        guardrail.load_policies(tmp_path)
    error = info.value
    assert isinstance(error, guardrail.GuardrailError)
    assert (Path(error.file or "").name, error.line, error.policy_id) == ("p.yaml", 6, "bad.one")
    served = run_guardrail("serve", "--policies", str(tmp_path),
                           "--upstream", "http://127.0.0.1:9", "--port", "0")  # fmt: skip
    assert served.returncode == 2
    assert served.stderr.strip() == f"guardrail serve: error: {error}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_check_over_the_default_pack(case: Case) -> None:
    """check() with plain dicts judges every inline case of the pack as ``guardrail test`` does
    (whether the pack's cases pass is the pack's own test; here: the same answers)."""
    verdict = check(
        PACK, as_dicts(case.conversation), case.reply, locale=case.locale, facts=case.facts
    )
    judged = run_case(PACK, case)
    assert (case.policy in [h.policy for h in verdict.hits if h.error is None]) == judged.hit
    assert verdict.reply == judged.reply
    assert verdict == PACK.evaluate(
        case.conversation, case.reply, locale=case.locale, facts=case.facts
    )


def _cli_cases() -> list[dict[str, Any]]:
    picked = [c for c in CASES if c.kind == "hit"][::7] + [c for c in CASES if c.kind == "ok"][:3]
    out = []
    for i, case in enumerate(picked):
        line: dict[str, Any] = {
            "id": f"c{i}",
            "messages": as_dicts(case.conversation),
            "reply": case.reply,
        }
        if case.locale is not None:
            line["locale"] = case.locale
        out.append(line)
    return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_check_gives_what_guardrail_check_prints(tmp_path: Path) -> None:
    cases = _cli_cases()
    assert len(cases) >= 5
    jsonl = tmp_path / "cases.jsonl"
    jsonl.write_text("".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8")
    done = run_guardrail("check", "--jsonl", str(jsonl), "--policies", str(ROOT / "policies"),
                         timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(printed) == len(cases)
    for case, cli in zip(cases, printed):
        verdict = check(PACK, case["messages"], case["reply"], locale=case.get("locale"))
        signals = {name: False for name in REQUIRED_SIGNALS} | dict(verdict.signals)
        mine = {
            "id": case["id"],
            "hits": [h.to_dict() for h in verdict.hits],
            "signals": signals,
            "reply": verdict.reply,
        }
        assert mine == cli


def test_conversation_from_dicts_messages_and_content_parts() -> None:
    conv = conversation(
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "I feel"}, {"type": "text", "text": "low."}]},
            Message("assistant", "I'm sorry."),
            {"role": "user", "content": None, "name": "ignored"},
        ]
    )
    assert conv == Conversation.of(
        ("system", "Be kind."), ("user", "I feel\nlow."), ("assistant", "I'm sorry."), ("user", "")
    )
    assert conversation(conv) is conv
    # parts are read as the proxy reads them: text parts only, joined by a line break
    typed = [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "input_text", "text": "a"}]
    assert conversation([{"role": "user", "content": typed}]).messages[0].content == "a"
    assert conversation([]) == Conversation()


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "robot", "content": "a secret text"}], "messages[0].role"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([{"role": "user", "content": "x"}, "a secret text"], "messages[1]"),
    ],
)
def test_a_malformed_message_names_where_never_what(messages: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        conversation(messages)
    assert "secret" not in str(info.value)


def test_text_guard_over_the_pack_gives_the_checked_reply() -> None:
    case = next(c for c in CASES if c.policy == "dependency.permanence" and c.kind == "hit")
    messages = as_dicts(case.conversation)
    expected = check(PACK, messages, case.reply)
    assert expected.changed
    guard = TextGuard(PACK, conversation(messages), holdback="sentence")
    released = "".join(guard.feed(case.reply[i : i + 4]) for i in range(0, len(case.reply), 4))
    result = guard.finish()
    assert released + result.tail + result.append == expected.reply
    assert result.verdict is not None
    assert [h.policy for h in result.verdict.hits] == [h.policy for h in expected.hits]
