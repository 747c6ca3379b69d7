"""``guardrail report referrals``: crisis referrals per period, locale and kind, read from the
audit file of a real proxy; no personal data out, malformed lines skipped and counted."""

from __future__ import annotations

import pytest

import contextlib
import gzip
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardrail.cli import main
from guardrail.observe.referrals import Tally, referral_kind

from .conftest import SENTINEL, Run

pytestmark = [pytest.mark.subprocess]

THIS_YEAR = str(datetime.now(UTC).year)


def report(*args: str) -> subprocess.CompletedProcess[str]:
    """The command run through ``main()`` in this process (its output captured)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(["report", "referrals", *args])
        except SystemExit as exc:  # argparse refusing the arguments
            status = int(exc.code or 0)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def run_process(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """The command as a real process."""
    command = [sys.executable, "-m", "guardrail", "report", "referrals", *args]
    return subprocess.run(command, input=stdin, capture_output=True, check=False)


def as_json(*args: str) -> dict[str, Any]:
    done = report(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def counts(data: dict[str, Any], period: str) -> dict[tuple[str, str], int]:
    (found,) = [p for p in data["periods"] if p["period"] == period]
    return {(c["locale"], c["kind"]): c["referrals"] for c in found["counts"]}


def test_yearly_counts_by_locale_and_kind_from_a_real_audit_file(served: Run) -> None:
    assert served.statuses == [200] * 8
    data = as_json("--audit", str(served.audit))
    assert data["schema"] == "guardrail.referrals/1" and data["by"] == "year"
    assert [p["period"] for p in data["periods"]] == [THIS_YEAR]
    # five replies to "I want to end my life" (one of them streamed, one whose reply already
    # led with 988) and one overdose, which also reads as self-harm; en-GB and fr-FR (intl)
    # get their own lines; the low mood and the lovely day are no crisis
    assert counts(data, THIS_YEAR) == {
        ("en-US", "suicide_self_harm"): 4,
        ("en-US", "medical"): 1,
        ("en-GB", "suicide_self_harm"): 1,
        ("intl", "suicide_self_harm"): 1,
    }
    (year,) = data["periods"]
    assert year["replies"] == 6 and year["referrals"] == 7
    assert year["by_locale"] == {"en-GB": 1, "en-US": 5, "intl": 1}
    assert data["read"]["malformed_skipped"] == 0 and data["read"]["duplicates"] == 0
    assert data["read"]["policy_hits"] == data["read"]["lines"] > 7  # distress hits too


def test_the_live_counter_agrees_with_the_report(served: Run) -> None:
    live = {
        (labels["locale"], labels["kind"]): value
        for labels, value in served.metrics["guardrail_crisis_referrals_total"]
        if value
    }
    reported = counts(as_json("--audit", str(served.audit)), THIS_YEAR)
    assert live == {k: float(v) for k, v in reported.items()}
    series = served.metrics["guardrail_crisis_referrals_total"]
    zero = {(lab["locale"], lab["kind"]) for lab, _ in series}
    assert ("en-IE", "child") in zero and ("other", "other") in zero  # known series from zero


def test_no_personal_data_in_any_format_even_with_excerpts_in_the_audit(served: Run) -> None:
    audit = served.audit.read_text()
    assert '"text":"end my life"' in audit  # excerpts were on: the audit holds what people wrote
    events = [json.loads(line) for line in audit.splitlines()]
    secrets = {SENTINEL, "end my life"} | {e["conversation"] for e in events}
    secrets |= {e["request_id"] for e in events} | {"referral.crisis", "referral.acute"}
    for fmt in ("text", "json", "csv"):
        for by in ("year", "month"):
            done = report("--audit", str(served.audit), "--format", fmt, "--by", by)
            assert done.returncode == 0
            for secret in secrets:
                assert secret not in done.stdout + done.stderr, (fmt, secret)


def test_text_and_csv_formats(served: Run) -> None:
    text = report("--audit", str(served.audit)).stdout
    assert "0 malformed lines skipped" in text
    rows = [line.split() for line in text.splitlines()[1:]]
    assert rows[0] == ["period", "locale", "kind", "referrals"]
    assert [THIS_YEAR, "en-US", "medical", "1"] in rows
    assert [THIS_YEAR, "en-US", "suicide_self_harm", "4"] in rows
    assert rows[-1] == [THIS_YEAR, "all", "replies", "with", "a", "referral", "6"]
    csv = report("--audit", str(served.audit), "--format", "csv", "--by", "month").stdout
    lines = csv.splitlines()
    assert lines[0] == "period,locale,kind,referrals"
    month = datetime.now(UTC).strftime("%Y-%m")
    assert f"{month},en-US,suicide_self_harm,4" in lines and len(lines) == 5


def _moved(line: str, when: str) -> str:
    event = json.loads(line)
    event["time"] = when
    event["request_id"] = event["request_id"] + when  # another request
    return json.dumps(event)


def test_months_and_years_split_at_utc_boundaries(served: Run, tmp_path: Path) -> None:
    real = served.audit.read_text().splitlines()
    moved = tmp_path / "moved.jsonl"
    lines = [_moved(line, "2026-12-31T23:59:59.999Z") for line in real]
    lines += [_moved(line, "2027-01-01T00:00:00.000Z") for line in real]
    lines += [_moved(line, "2027-02-15T10:00:00+00:00") for line in real]
    moved.write_text("\n".join(lines) + "\n")
    years = as_json("--audit", str(moved))
    assert [p["period"] for p in years["periods"]] == ["2026", "2027"]
    assert [p["replies"] for p in years["periods"]] == [6, 12]
    months = as_json("--audit", str(moved), "--by", "month")
    assert [p["period"] for p in months["periods"]] == ["2026-12", "2027-01", "2027-02"]
    assert counts(months, "2027-02")[("en-GB", "suicide_self_harm")] == 1


def test_rotated_and_compressed_files_and_the_same_file_twice(served: Run, tmp_path: Path) -> None:
    lines = served.audit.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    first, second = tmp_path / "audit.jsonl.1.gz", tmp_path / "audit.jsonl"
    with gzip.open(first, "wb") as out:
        out.writelines(lines[:half])
    second.write_bytes(b"".join(lines[half:]))
    whole = as_json("--audit", str(served.audit))
    split = as_json("--audit", str(second), "--audit", str(first))
    assert split["periods"] == whole["periods"]
    twice = as_json("--audit", str(served.audit), "--audit", str(served.audit))
    assert twice["periods"] == whole["periods"]
    assert twice["read"]["duplicates"] == 7


def test_malformed_lines_are_skipped_counted_and_fail_under_strict(
    served: Run, tmp_path: Path
) -> None:
    real = served.audit.read_text().splitlines()
    broken_event = json.loads(real[0])
    del broken_event["time"]
    hostile = json.loads(real[0])
    hostile["locale"] = "<script>alert(1)</script>"
    hostile["request_id"] = "another"
    bad = [
        "not json at all",
        "[1, 2, 3]",
        "{}",
        json.dumps(broken_event),
        json.dumps({**json.loads(real[0]), "time": "yesterday"}),
        json.dumps({**json.loads(real[0]), "time": "2027-01-01T00:00:00"}),  # no zone
        json.dumps({**json.loads(real[0]), "choice": True}),
        real[1][: len(real[1]) // 2],  # a line cut off by a crash
        "\udcff garbage",
    ]
    other = json.dumps({"schema": "guardrail.audit/2", "event": "state_erased", "x": 1})
    path = tmp_path / "audit.jsonl"
    lines = [*real, *bad, other, json.dumps(hostile), ""]
    path.write_text("\n".join(lines) + "\n", errors="surrogateescape")
    data = as_json("--audit", str(path))
    assert data["read"]["malformed_skipped"] == len(bad)
    assert data["read"]["other_events"] == 1
    assert counts(data, THIS_YEAR)[("other", counts_kind(hostile))] == 1
    assert "script" not in json.dumps(data)
    done = report("--audit", str(path), "--strict")
    assert done.returncode == 1 and f"{len(bad)} malformed" in done.stderr
    assert report("--audit", str(path)).returncode == 0


def counts_kind(event: dict[str, Any]) -> str:
    kind = referral_kind(event["policy"])
    assert kind is not None
    return kind


def test_a_missing_file_or_a_bad_period_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    done = report("--audit", str(missing))
    assert done.returncode == 2 and not done.stdout
    assert "cannot read audit file" in done.stderr and "nope.jsonl" in done.stderr
    done = report("--audit", str(missing), "--by", "week")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_a_real_process_reading_stdin(served: Run) -> None:
    done = run_process("--audit", "-", "--format", "csv", stdin=served.audit.read_bytes())
    assert done.returncode == 0 and f"{THIS_YEAR},en-GB,suicide_self_harm,1".encode() in done.stdout
    assert SENTINEL.encode() not in done.stdout + done.stderr


def test_blocked_shadow_and_failed_hits_are_not_referrals() -> None:
    """The rule on events shaped like the audit's: a reply blocked by another policy, a shadow
    hit and a fail-closed error deliver no referral; a crisis policy's own block does."""
    def line(request: str, policy: str, action: str, mode: str = "enforce", **extra: Any) -> str:
        event = {
            "schema": "guardrail.audit/1", "event": "policy_hit",
            "time": "2027-03-01T12:00:00.000Z", "request_id": request, "choice": 0,
            "locale": "en-US", "policy": policy, "action": action, "mode": mode, **extra,
        }  # fmt: skip
        return json.dumps(event)

    tally = Tally(others=frozenset({"ops.crisis"}))
    for text in (
        line("a", "referral.crisis", "prepend"),
        line("a", "ops.block", "block"),  # another policy blocked reply a
        line("b", "referral.crisis", "prepend", mode="shadow"),
        line("c", "referral.crisis", "block", error="RuntimeError"),  # failed closed
        line("d", "ops.crisis", "block"),  # a crisis policy's own block text was sent
        line("e", "referral.crisis.child", "prepend"),
        line("e", "referral.crisis.unheard_of", "prepend"),
    ):
        tally.add_line(text)
    tally.close()
    assert tally.referrals == {"2027": {("en-US", "other"): 2, ("en-US", "child"): 1}}
    assert tally.replies == {"2027": 2}
