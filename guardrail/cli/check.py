"""Evaluate JSONL cases offline: one JSON result per input line, same order, same id.

Input lines: {"id": ..., "messages": [{"role", "content"}...], "reply": "..."} (extra keys are
ignored; an optional "locale" overrides --locale). Output lines: {"id", "hits": [{"policy",
"category", "severity", "action", "mode"}...], "signals": {...}, "reply"}. A line that cannot be
processed gives {"id": <id or null>, "error": "line N: ..."} and the run goes on; the exit status
is 0. --explain adds to each hit its condition, its evidence (for every leaf detector that made
the condition true: detector, its clinical construct, scope, turn, sentence, span and the
matched excerpt; the hit's ``constructs`` list them once each; sentence
actions list the sentences they acted on) and, for a policy with ``regenerate``, its corrective
instruction and fallback (this reads your own file, so the text stays on your machine). Progress goes to stderr, only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from guardrail.formats import jsontext
from guardrail.policy import Conversation, Message, PolicySet, Verdict, load_policies
from guardrail.policy.model import ROLES
from guardrail.config.settings import DEFAULT_POLICIES

REQUIRED_SIGNALS = ("user.distress", "user.crisis", "reply.referral")
_PROGRESS_EVERY = 500


def default_policies() -> Path:
    """$GUARDRAIL_POLICIES if set, else the bundled pack (``settings.DEFAULT_POLICIES``)."""
    env = os.environ.get("GUARDRAIL_POLICIES")
    if env:
        return Path(env)
    return DEFAULT_POLICIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jsonl", required=True, metavar="FILE", help="JSONL cases to check, or - for stdin"
    )
    parser.add_argument(
        "--policies",
        type=Path,
        default=None,
        metavar="PATH",
        help="policy folder or file (default: $GUARDRAIL_POLICIES or policies/)",
    )
    parser.add_argument("--locale", default=None, help="locale for resource texts")
    parser.add_argument(
        "--explain", action="store_true", help="add each hit's evidence, with the matched excerpt"
    )
    parser.set_defaults(run=run)


class _Bad(ValueError):
    """A case line that cannot be processed."""


def _content(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: keep the text ones
        return "".join(
            p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    raise _Bad(f"{where}.content is not a string")


def parse_case(obj: object) -> tuple[Conversation, str, str | None]:
    """Validate one decoded case; raise _Bad with a message that quotes no text."""
    if not isinstance(obj, dict):
        raise _Bad("a case is a JSON object")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise _Bad('"messages" missing or not a list')
    parsed: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _Bad(f"messages[{i}] is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise _Bad(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        parsed.append(Message(role, _content(m.get("content"), f"messages[{i}]")))
    reply = obj.get("reply")
    if not isinstance(reply, str):
        raise _Bad('"reply" missing or not a string')
    locale = obj.get("locale")
    if locale is not None and not isinstance(locale, str):
        raise _Bad('"locale" is not a string')
    return Conversation(tuple(parsed)), reply, locale


def _evidence(
    ps: PolicySet, verdict: Verdict, conv: Conversation, reply: str
) -> list[list[dict[str, Any]]]:
    out = []
    for hit in verdict.hits:
        items = []
        for ev in hit.evidence:
            text = reply if ev.turn is None else conv.messages[ev.turn].content
            items.append(
                {
                    "detector": ev.detector,
                    "construct": ps.constructs.get(ev.detector),
                    "scope": ev.scope,
                    "turn": ev.turn,
                    "sentence": ev.sentence,
                    "span": list(ev.span),
                    "excerpt": text[ev.span[0] : ev.span[1]],
                }
            )
        out.append(items)
    return out


def check_line(
    ps: PolicySet, line: str, number: int, *, locale: str | None = None, explain: bool = False
) -> dict[str, Any]:
    """The result object for one input line (an error object if it cannot be processed)."""
    case_id: Any = None
    try:
        obj = json.loads(line)
        if isinstance(obj, dict):
            case_id = obj.get("id")
        conv, reply, case_locale = parse_case(obj)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, _Bad) else "not valid JSON"
        return {"id": case_id, "error": f"line {number}: {reason}"}
    try:
        verdict = ps.evaluate(conv, reply, locale=case_locale or locale)
    except Exception as exc:  # noqa: BLE001 -- never abort the run; never echo text
        return {"id": case_id, "error": f"line {number}: {type(exc).__name__} in evaluation"}
    result = verdict.to_dict()
    signals = result["signals"]
    for name in REQUIRED_SIGNALS:
        signals.setdefault(name, False)
    if explain:
        requests = {r.policy: r for r in verdict.regenerate}
        for hit, judged, evidence in zip(
            result["hits"], verdict.hits, _evidence(ps, verdict, conv, reply)
        ):
            hit["condition"] = str(ps.policy(hit["policy"]).condition)
            hit["constructs"] = list(judged.constructs)
            hit["evidence"] = evidence
            request = requests.get(hit["policy"])
            if request is not None:
                hit["regenerate"] = {
                    "instruction": request.instruction,
                    "fallback": request.fallback,
                }
    return {"id": case_id, "hits": result["hits"], "signals": signals, "reply": verdict.reply}


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(stream, 1):
        # a byte that is not UTF-8 reads as U+FFFD: the case is still checked (issue 11)
        text = raw.decode("utf-8", "replace")
        if text.strip():
            yield number, text


def check_stream(
    ps: PolicySet,
    stream: IO[bytes],
    out: IO[str],
    *,
    locale: str | None = None,
    explain: bool = False,
    progress: IO[str] | None = None,
) -> int:
    """Check every case of ``stream``; write one JSON line each to ``out``; return the count."""
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    count = 0
    batch: list[str] = []
    lines: Iterable[tuple[int, str]] = _lines(stream)
    for number, text in lines:
        result = check_line(ps, text, number, locale=locale, explain=explain)
        batch.append(jsontext.escape_surrogates(dumps(result)))  # a lone surrogate stays JSON
        count += 1
        if len(batch) >= 256:
            out.write("\n".join(batch) + "\n")
            batch.clear()
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress.write(f"\rchecked {count} cases")
            progress.flush()
    if batch:
        out.write("\n".join(batch) + "\n")
    out.flush()
    if progress is not None:
        progress.write(f"\rchecked {count} cases\n")
    return count


def run(args: argparse.Namespace) -> int:
    ps = load_policies(args.policies if args.policies is not None else default_policies())
    progress = sys.stderr if sys.stderr.isatty() else None
    with open(sys.stdout.fileno(), "w", encoding="utf-8", closefd=False, buffering=1 << 16) as out:
        if args.jsonl == "-":
            check_stream(
                ps,
                sys.stdin.buffer,
                out,
                locale=args.locale,
                explain=args.explain,
                progress=progress,
            )
            return 0
        try:
            with open(args.jsonl, "rb") as stream:
                check_stream(
                    ps, stream, out, locale=args.locale, explain=args.explain, progress=progress
                )
        except OSError as exc:
            print(
                f"guardrail check: error: cannot read {args.jsonl}: {exc.strerror}", file=sys.stderr
            )
            return 2
    return 0
