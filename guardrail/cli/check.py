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

Semantic judges: when the policy set has ``judge:`` detectors, their endpoints come from the
``judges:`` setting of ``--config FILE`` (or ``$GUARDRAIL_CONFIG``, and ``$GUARDRAIL_JUDGES``),
each case's judges are asked as the proxy would ask them (the same text, timeout and fail mode;
the budget paces the run instead of failing questions), the answers feed the evaluation, and each
output line gets ``"judges": {"<detector id>": true|false|null}``, the judge's own answer (null:
unanswered; a ``judge_unanswered`` warning on stderr says why, and the outcome counts are printed
there at the end). ``--no-judges`` evaluates
without asking them (every judge unanswered), for the lexical detectors' figures alone.

A line may also carry "facts" ({"session.minutes": 200, "user.minor": true, ...}; "inf" for
never) and "judge" answers ({"user.crisis.judge": true}), evaluated as the proxy would with
that state. --explain then adds, per hit, the facts that made it true ("facts": [{detector,
fact, value}]), and per line "skipped" (policies that read a fact the line did not give),
"records" (what the proxy would remember) and "judges_unanswered".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from guardrail.errors import PolicyError
from guardrail.formats import jsontext
from guardrail.judge.answer import Answer, JudgeQuestion, fact_name
from guardrail.policy import Conversation, Message, PolicySet, Verdict, load_policies
from guardrail.policy.facts import BOOL_FACTS, FACTS, Facts
from guardrail.policy.model import ROLES
from guardrail.policy.sources import PolicySource, parse_sources
from guardrail.config.loading import load_judges
from guardrail.config.settings import DEFAULT_POLICIES

if TYPE_CHECKING:  # the judges' HTTP client is loaded only when a policy set has judges
    from guardrail.judge.offline import OfflineJudges

REQUIRED_SIGNALS = ("user.distress", "user.crisis", "reply.referral")
_PROGRESS_EVERY = 500


def default_policies() -> PolicySource:
    """$GUARDRAIL_POLICIES if set (comma-separated sources, ``default`` for the bundled pack),
    else the bundled pack (``settings.DEFAULT_POLICIES``)."""
    env = os.environ.get("GUARDRAIL_POLICIES")
    if env:
        try:
            return parse_sources(env)
        except ValueError as exc:
            raise PolicyError(f"environment GUARDRAIL_POLICIES: {exc}", file=env) from None
    return DEFAULT_POLICIES


def chosen_policies(given: Sequence[str] | None) -> PolicySource:
    """The sources named on the command line (each may be comma-separated), in order, else
    :func:`default_policies`."""
    if not given:
        return default_policies()
    try:
        return parse_sources([item for arg in given for item in _split(arg)])
    except ValueError as exc:
        raise PolicyError(f"policy sources: {exc}", file=", ".join(given)) from None


def _split(arg: str) -> list[str]:
    items = arg.split(",")
    if len(items) > 1 and not all(item.strip() for item in items):
        raise ValueError(f"empty item in {arg!r}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jsonl", required=True, metavar="FILE", help="JSONL cases to check, or - for stdin"
    )
    parser.add_argument(
        "--policies",
        action="append",
        default=None,
        metavar="PATH",
        help="policy folder, file or 'default' (the bundled pack); repeat it (or separate with "
        "commas) to apply several in order (default: $GUARDRAIL_POLICIES or default)",
    )
    parser.add_argument("--locale", default=None, help="locale for resource texts")
    parser.add_argument(
        "--explain", action="store_true", help="add each hit's evidence, with the matched excerpt"
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="config file whose `judges:` setting gives the judge endpoints (default: "
        "$GUARDRAIL_CONFIG)",
    )
    parser.add_argument(
        "--no-judges",
        action="store_true",
        help="do not ask the policy set's semantic judges (their signals stay false)",
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


def parse_facts(obj: dict[str, Any]) -> dict[str, float | bool] | None:
    """A case's "facts" and "judge" answers as one facts mapping (None: neither given)."""
    facts, judge = obj.get("facts"), obj.get("judge")
    if facts is None and judge is None:
        return None
    out: dict[str, float | bool] = {}
    if not isinstance(facts, (dict, type(None))) or not isinstance(judge, (dict, type(None))):
        raise _Bad('"facts" and "judge" must be JSON objects')
    for name, value in (facts or {}).items():
        if name not in FACTS:
            raise _Bad(f'unknown fact {name!r} in "facts" (known: {", ".join(FACTS)})')
        if value == "inf":
            value = float("inf")
        if name in BOOL_FACTS and not isinstance(value, bool):
            raise _Bad(f"fact {name!r} must be true or false")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name not in BOOL_FACTS and not number:
            raise _Bad(f'fact {name!r} must be a number ("inf" for never)')
        out[name] = value if isinstance(value, bool) else float(value)
    for name, value in (judge or {}).items():
        if not isinstance(value, bool):
            raise _Bad(f"the answer of judge {name!r} must be true or false")
        out[f"judge.{name}"] = value
    return out


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


def policy_judges(ps: PolicySet) -> tuple[JudgeQuestion, ...]:
    """The judges the policy set's ``judge:`` detectors ask (``PolicySet.judges``, none on an
    engine without judge detectors)."""
    return tuple(getattr(ps, "judges", ()))


def _evaluate(
    ps: PolicySet,
    conv: Conversation,
    reply: str,
    locale: str | None,
    answers: Mapping[str, Answer] | None,
    facts: Facts | None = None,
) -> Verdict:
    """The verdict with the line's own facts and, when judges were asked, their answers (a
    judge answer given in the line itself wins over none)."""
    if answers and ps.judges:
        asked: dict[str, float | bool | None] = {
            fact_name(judge): answer.fact for judge, answer in answers.items()
        }
        facts = {**asked, **(facts or {})}
    return ps.evaluate(conv, reply, locale=locale, facts=facts)


def check_line(
    ps: PolicySet,
    line: str,
    number: int,
    *,
    locale: str | None = None,
    explain: bool = False,
    answers: Mapping[str, Answer] | None = None,
) -> dict[str, Any]:
    """The result object for one input line (an error object if it cannot be processed).

    ``answers``: the judges' answers for this case (``judge id -> Answer``), if any were asked."""
    case_id: Any = None
    try:
        obj = json.loads(line)
        if isinstance(obj, dict):
            case_id = obj.get("id")
        conv, reply, case_locale = parse_case(obj)
        facts = parse_facts(obj)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, _Bad) else "not valid JSON"
        return {"id": case_id, "error": f"line {number}: {reason}"}
    try:
        verdict = _evaluate(ps, conv, reply, case_locale or locale, answers, facts)
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
            if judged.facts:
                hit["facts"] = [
                    {"detector": d, "fact": f, "value": _json_number(v)} for d, f, v in judged.facts
                ]
            request = requests.get(hit["policy"])
            if request is not None:
                hit["regenerate"] = {
                    "instruction": request.instruction,
                    "fallback": request.fallback,
                }
    out = {"id": case_id, "hits": result["hits"], "signals": signals, "reply": verdict.reply}
    if answers is not None:
        out["judges"] = {judge: answer.answer for judge, answer in answers.items()}
    if explain:
        out["skipped"] = [{"policy": pid, "reason": why} for pid, why in verdict.skipped]
        out["records"] = sorted(verdict.records)
        out["judges_unanswered"] = list(verdict.judges_unanswered)
    return out


def _json_number(value: float | bool) -> float | bool | str:
    """A fact's value for JSON: infinity (never) as "inf"."""
    return "inf" if value == float("inf") and not isinstance(value, bool) else value


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(stream, 1):
        # a byte that is not UTF-8 reads as U+FFFD: the case is still checked (issue 11)
        text = raw.decode("utf-8", "replace")
        if text.strip():
            yield number, text


def _case(text: str) -> tuple[list[Message], str] | None:
    """The messages and reply of a line, for its judges (None: check_line reports the error)."""
    try:
        conv, reply, _ = parse_case(json.loads(text))
    except (ValueError, RecursionError):
        return None
    return list(conv.messages), reply


def _judged(
    lines: Iterable[tuple[int, str]], judges: OfflineJudges | None
) -> Iterator[tuple[int, str, Mapping[str, Answer] | None]]:
    """Each line with its judges' answers, asked ``judges.batch_size`` cases at a time."""
    if judges is None:
        for number, text in lines:
            yield number, text, None
        return
    pending: list[tuple[int, str]] = []
    for item in itertools.chain(lines, [None]):
        if item is not None:
            pending.append(item)
        if pending and (item is None or len(pending) >= judges.batch_size):
            found = judges.answers([_case(text) for _, text in pending])
            for (number, text), answers in zip(pending, found):
                yield number, text, answers
            pending.clear()


def check_stream(
    ps: PolicySet,
    stream: IO[bytes],
    out: IO[str],
    *,
    locale: str | None = None,
    explain: bool = False,
    progress: IO[str] | None = None,
    judges: OfflineJudges | None = None,
) -> int:
    """Check every case of ``stream``; write one JSON line each to ``out``; return the count.

    ``judges``: ask these judges about every case (``guardrail.judge.offline``)."""
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    count = 0
    batch: list[str] = []
    for number, text, answers in _judged(_lines(stream), judges):
        result = check_line(ps, text, number, locale=locale, explain=explain, answers=answers)
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


def _judges(ps: PolicySet, args: argparse.Namespace) -> OfflineJudges | None:
    """The policy set's judges with their endpoints, unless there are none or ``--no-judges``."""
    judges = policy_judges(ps)
    if not judges or args.no_judges:
        return None
    configured = args.config is not None or any(
        name in os.environ for name in ("GUARDRAIL_CONFIG", "GUARDRAIL_JUDGES")
    )
    if not configured:  # nothing to ask: each line's own "judge" answers (or none) are used
        print(
            "guardrail check: judges not asked: no `judges:` endpoints configured "
            "(--config FILE or GUARDRAIL_JUDGES); lines' own \"judge\" answers are used",
            file=sys.stderr,
        )
        return None
    endpoints = load_judges(args.config)
    from guardrail.judge.offline import OfflineJudges
    from guardrail.observe.logs import configure_logging

    configure_logging("warning", stream=sys.stderr)  # judge_unanswered events: never on stdout
    return OfflineJudges(endpoints, judges)


def run(args: argparse.Namespace) -> int:
    ps = load_policies(chosen_policies(args.policies))
    judges = _judges(ps, args)
    try:
        return _check(ps, args, judges)
    finally:
        if judges is not None:
            judges.close()
            for line in judges.summary():
                print(f"guardrail check: {line}", file=sys.stderr)


def _check(ps: PolicySet, args: argparse.Namespace, judges: OfflineJudges | None) -> int:
    progress = sys.stderr if sys.stderr.isatty() else None
    options: dict[str, Any] = {
        "locale": args.locale,
        "explain": args.explain,
        "progress": progress,
        "judges": judges,
    }
    with open(sys.stdout.fileno(), "w", encoding="utf-8", closefd=False, buffering=1 << 16) as out:
        if args.jsonl == "-":
            check_stream(ps, sys.stdin.buffer, out, **options)
            return 0
        try:
            with open(args.jsonl, "rb") as stream:
                check_stream(ps, stream, out, **options)
        except OSError as exc:
            print(
                f"guardrail check: error: cannot read {args.jsonl}: {exc.strerror}", file=sys.stderr
            )
            return 2
    return 0
