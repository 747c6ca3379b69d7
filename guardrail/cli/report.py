"""Reports from the audit trail. ``guardrail report referrals``: crisis referrals per year (or
month), locale and kind, for the yearly count SB 243 asks operators to file.

    guardrail report referrals --audit /var/log/guardrail/audit.jsonl --audit ...jsonl.1
    guardrail report referrals --audit audit.jsonl --by month --format csv

What counts as a crisis referral, and of which kind, is the rule of ``guardrail.observe.referrals``
(the live counter ``guardrail_crisis_referrals_total`` follows the same one). Rotated and
gzip-compressed files (``.gz``) may be given together, in any order; an event read twice (the
same file given twice) is counted once. Periods are calendar years or months in UTC.

The output holds counts only: periods, locales, kinds. No conversation hash, request id, policy
id or excerpt is ever printed, whatever the audit lines hold. Lines that are not readable audit
events (not JSON, a field missing) are skipped and counted; ``--strict`` turns any skipped line
into exit status 1. Exit status: 0 done, 1 lines were skipped under ``--strict``, 2 a file
could not be read.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from guardrail.cli.check import chosen_policies
from guardrail.errors import GuardrailError
from guardrail.observe.record import crisis_policies
from guardrail.observe.referrals import PERIODS, Tally
from guardrail.policy import load_policies

SCHEMA = "guardrail.referrals/1"
FORMATS = ("text", "json", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report", required=True, metavar="REPORT")
    referrals = sub.add_parser(
        "referrals",
        help="crisis referrals per period, locale and kind, from the audit trail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    referrals.add_argument(
        "--audit",
        action="append",
        required=True,
        metavar="FILE",
        help="an audit file (repeat for rotated files; .gz is read compressed; - for stdin)",
    )
    referrals.add_argument("--by", choices=PERIODS, default="year", help="period (default: year)")
    referrals.add_argument("--format", choices=FORMATS, default="text", help="default: text")
    referrals.add_argument(
        "--policies",
        action="append",
        default=None,
        metavar="PATH",
        help="the policy sources whose other crisis-resource policies count as kind 'other', "
        "as for guardrail check (default: $GUARDRAIL_POLICIES or default)",
    )
    referrals.add_argument(
        "--strict", action="store_true", help="exit 1 when any line had to be skipped"
    )
    referrals.set_defaults(run=run)


def _lines(name: str) -> Iterator[bytes]:
    if name == "-":
        yield from sys.stdin.buffer
        return
    opener: Any = gzip.open if name.endswith(".gz") else open
    with opener(name, "rb") as stream:
        yield from stream


def tally(names: list[str], by: str, others: frozenset[str]) -> Tally:
    """Read every file; raise GuardrailError naming the file that cannot be read."""
    counts = Tally(by=by, others=others)
    for name in names:
        try:
            for line in _lines(name):
                counts.add_line(line)
        except (OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise GuardrailError(f"cannot read audit file {name}: {reason}") from exc
    counts.close()
    return counts


def as_dict(counts: Tally) -> dict[str, Any]:
    """The report as one JSON object (schema ``guardrail.referrals/1``)."""
    periods = []
    for period in sorted(counts.referrals):
        rows = counts.referrals[period]
        by_locale: dict[str, int] = {}
        for (locale, _), n in rows.items():
            by_locale[locale] = by_locale.get(locale, 0) + n
        periods.append(
            {
                "period": period,
                "replies": counts.replies.get(period, 0),
                "referrals": sum(rows.values()),
                "by_locale": dict(sorted(by_locale.items())),
                "counts": [
                    {"locale": locale, "kind": kind, "referrals": n}
                    for (locale, kind), n in sorted(rows.items())
                ],
            }
        )
    return {
        "schema": SCHEMA,
        "by": counts.by,
        "periods": periods,
        "read": {
            "lines": counts.lines,
            "policy_hits": counts.events,
            "other_events": counts.other_events,
            "malformed_skipped": counts.malformed,
            "duplicates": counts.duplicates,
        },
    }


def write_text(report: dict[str, Any], out: IO[str]) -> None:
    read = report["read"]
    out.write(
        f"Crisis referrals by {report['by']} (UTC), from {read['lines']} audit lines: "
        f"{read['policy_hits']} policy hits, {read['other_events']} other events, "
        f"{read['malformed_skipped']} malformed lines skipped, "
        f"{read['duplicates']} duplicates ignored\n"
    )
    if not report["periods"]:
        out.write("no crisis referrals\n")
        return
    header = ("period", "locale", "kind", "referrals")
    rows = [
        (p["period"], c["locale"], c["kind"], str(c["referrals"]))
        for p in report["periods"]
        for c in p["counts"]
    ]
    totals = [
        (p["period"], "all", "replies with a referral", str(p["replies"]))
        for p in report["periods"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows, *totals]) for i in range(3)]
    for row in [header, *rows, *totals]:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths)]
        out.write("  ".join([*cells, row[3].rjust(9)]) + "\n")


def write_csv(report: dict[str, Any], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("period", "locale", "kind", "referrals"))
    for period in report["periods"]:
        for row in period["counts"]:
            writer.writerow((period["period"], row["locale"], row["kind"], row["referrals"]))


def run(args: argparse.Namespace) -> int:
    policies = load_policies(chosen_policies(args.policies))
    counts = tally(args.audit, args.by, crisis_policies(policies))
    report = as_dict(counts)
    out = io.StringIO()
    if args.format == "json":
        out.write(json.dumps(report, indent=2) + "\n")
    elif args.format == "csv":
        write_csv(report, out)
    else:
        write_text(report, out)
    sys.stdout.write(out.getvalue())
    if counts.malformed:
        print(
            f"guardrail report: {counts.malformed} malformed audit line(s) skipped",
            file=sys.stderr,
        )
    return 1 if args.strict and counts.malformed else 0
