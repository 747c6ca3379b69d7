"""The audit trail: one JSON event per hit, keyed conversation hash, excerpt only when asked."""

from __future__ import annotations

import pytest
import hashlib
import hmac
import io
import json
import stat
from pathlib import Path

from guardrail.observe.audit import SCHEMA, AuditConfig, Auditor, RotatingFile, conversation_hash
from guardrail.policy import Conversation, load_policies

from tests.kit.metrics import value
from tests.kit.paths import DEFAULT_PACK, OPS_POLICIES
from tests.kit.serve import SENTINEL


PS = load_policies(OPS_POLICIES)
CONV = Conversation.of(("system", "be kind"), ("user", f"{SENTINEL} I want to end it all"))
REPLY = f"I will always be here for you. {SENTINEL} You are absolutely right."


def events(config: AuditConfig, reply: str = REPLY, **kw: object) -> list[dict[str, object]]:
    out = io.StringIO()
    auditor = Auditor(config, stream=out)
    verdict = PS.evaluate(CONV, reply)
    written = auditor.record(
        request_id="req-1",
        route="/",
        api="openai.chat",
        conversation=CONV,
        conversation_id=kw.get("conversation_id"),  # type: ignore[arg-type]
        verdicts=[verdict, None],
        replies=[reply, None],
        policy_digest=PS.digest,
    )
    lines = out.getvalue().splitlines()
    assert written == len(lines)
    return [json.loads(line) for line in lines]


def test_one_event_per_hit_with_the_documented_fields_and_no_text() -> None:
    found = events(AuditConfig(key=b"k" * 32))
    assert [e["policy"] for e in found] == ["ops.crisis", "ops.dependency", "ops.agree_shadow"]
    first = found[0]
    assert set(first) == {
        "schema",
        "event",
        "time",
        "request_id",
        "conversation",
        "route",
        "api",
        "stream",
        "choice",
        "locale",
        "policy",
        "category",
        "severity",
        "action",
        "mode",
        "policy_digest",
        "constructs",
        "evidence",
    }
    assert first["schema"] == SCHEMA and first["event"] == "policy_hit"
    assert (first["category"], first["action"], first["mode"]) == ("referral", "prepend", "enforce")
    assert found[2]["mode"] == "shadow" and first["locale"] == "en-US"
    assert str(first["time"]).endswith("Z")
    dump = json.dumps(found)
    assert SENTINEL not in dump and "end it all" not in dump and "always be here" not in dump


def test_each_event_says_which_detector_and_span_decided_without_the_text() -> None:
    crisis = events(AuditConfig(key=b"k" * 32))[0]
    assert crisis["evidence"] == [
        {
            "detector": "user.crisis",
            "scope": "last_user",
            "turn": 1,
            "sentence": None,
            "span": [22, 40],
        }
    ]
    start, end = 22, 40
    assert CONV.messages[1].content[start:end] == "want to end it all"  # the offsets point there
    assert "end it all" not in json.dumps(crisis)


@pytest.mark.slow
def test_each_event_names_the_clinical_construct_that_fired_in_the_default_pack() -> None:
    """Issue 15 item 8: a reviewer reads "partner or family abuse", not only a detector id."""
    pack = load_policies(DEFAULT_PACK)
    conv = Conversation.of(("user", f"{SENTINEL} my husband hits me when he drinks"))
    out = io.StringIO()
    Auditor(AuditConfig(key=b"k" * 32), stream=out).record(
        request_id="req-2",
        route="/",
        api="openai.chat",
        conversation=conv,
        conversation_id=None,
        verdicts=[pack.evaluate(conv, "I see.")],
        replies=["I see."],
        policy_digest=pack.digest,
    )
    found = {e["policy"]: e for e in map(json.loads, out.getvalue().splitlines())}
    abuse = found["referral.crisis.domestic_abuse"]
    assert abuse["constructs"] == ["partner or family abuse"]
    assert [e["detector"] for e in abuse["evidence"]] == ["user.crisis.abuse"]
    assert SENTINEL not in out.getvalue()


def test_conversation_hash_is_an_hmac_of_the_first_user_message_or_the_id_header() -> None:
    key = b"correlation-key-0123456789"
    first = f"{SENTINEL} I want to end it all"
    expected = hmac.new(key, b"first-user\x00" + first.encode(), hashlib.sha256).hexdigest()[:32]
    assert conversation_hash(key, CONV, None) == expected
    later = Conversation(
        (*CONV.messages, *Conversation.of(("assistant", "x"), ("user", "y")).messages)
    )
    assert conversation_hash(key, later, None) == expected  # same conversation, later turn
    assert conversation_hash(b"another-key-0123456789", CONV, None) != expected
    by_id = conversation_hash(key, CONV, "conv-42")
    assert by_id == hmac.new(key, b"id\x00conv-42", hashlib.sha256).hexdigest()[:32]
    assert events(AuditConfig(key=key), conversation_id="conv-42")[0]["conversation"] == by_id


def test_default_key_is_random_per_process_instance() -> None:
    a, b = Auditor(AuditConfig()), Auditor(AuditConfig())
    assert a.key != b.key and len(a.key) == 32


def test_excerpt_holds_only_the_matched_spans_when_turned_on() -> None:
    found = events(AuditConfig(excerpt=True))
    by_policy = {e["policy"]: e["excerpts"] for e in found}
    assert by_policy["ops.crisis"] == [
        {"detector": "user.crisis", "scope": "last_user", "text": "want to end it all"}
    ]
    assert by_policy["ops.dependency"][0]["text"] == "always be here for you"
    assert by_policy["ops.agree_shadow"][0]["text"].lower() == "you are absolutely right"
    assert SENTINEL not in json.dumps(found)  # outside every span


def test_off_sink_writes_nothing() -> None:
    assert events(AuditConfig(sink="off")) == []


def test_file_sink_rotates_by_size_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    auditor = Auditor(AuditConfig(sink="file", path=path, max_bytes=2000, backups=2))
    verdict = PS.evaluate(CONV, REPLY)
    for i in range(12):
        auditor.record(
            request_id=f"r{i}",
            route="/",
            api="openai.chat",
            conversation=CONV,
            conversation_id=None,
            verdicts=[verdict],
        )
    auditor.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        p = tmp_path / name
        assert p.stat().st_size <= 2000
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        for line in p.read_text().splitlines():
            assert json.loads(line)["event"] == "policy_hit"
    newest = [json.loads(x)["request_id"] for x in path.read_text().splitlines()]
    assert newest[-1] == "r11"


def test_rotating_file_without_backups_truncates(tmp_path: Path) -> None:
    f = RotatingFile(tmp_path / "a.log", max_bytes=10, backups=0)
    f.write("123456\n")
    f.write("abcdef\n")
    f.close()
    assert (tmp_path / "a.log").read_text() == "abcdef\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log"]


def test_a_failing_sink_is_counted_and_never_raises() -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("disk full")

    before = value("guardrail_audit_events_total", result="failed")
    auditor = Auditor(AuditConfig(), stream=Broken())
    written = auditor.record(
        request_id="r",
        route="/",
        api="openai.chat",
        conversation=CONV,
        conversation_id=None,
        verdicts=[PS.evaluate(CONV, REPLY)],
    )
    assert written == 0
    assert value("guardrail_audit_events_total", result="failed") == before + 3
