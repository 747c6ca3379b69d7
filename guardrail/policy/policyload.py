"""Building one ``Policy`` from its YAML mapping: fields, condition, actions, inline tests.

Runs at load time only. Guarantees of a built policy: its condition names only defined detectors;
a sentence action (remove/replace) has a reply or sentence detector in its condition to locate
sentences by; every text template names only known resource keys and is pre-formatted for every
locale; each inline test case records the file and line it was written on.

``unless`` (on prepend/append) reads reply detectors only and must be false for an empty reply,
so a text a stream guard decides before the reply arrives is never one the whole reply would
drop. ``regenerate: {instruction, fallback}``: the instruction is a template like the texts
(resource keys allowed, formatted per locale); ``fallback`` must be one of the policy's own
actions (default: its strongest), because ``Verdict.reply`` already holds what those actions did
and that is what the proxy sends when a second attempt is not possible or fails again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from guardrail.policy.conditions import Condition, parse_condition
from guardrail.policy.facts import BOOL_FACTS, FACTS, RECORDS
from guardrail.policy.model import (
    ACTION_ORDER,
    ROLES,
    SEVERITY_ORDER,
    Action,
    ActionKind,
    Case,
    CaseKind,
    Conversation,
    Message,
    Policy,
)
from guardrail.policy.resources import Resources, format_text, template_fields
from guardrail.policy.yamlsource import Fields, Src, YMap, YSeq

__all__ = ["PolicyContext", "build_policy"]

_POLICY_KEYS = (
    "id",
    "category",
    "description",
    "severity",
    "mode",
    "maturity",
    "on_error",
    "condition",
    "actions",
    "regenerate",
    "records",
    "tests",
)
_ID = re.compile(r"[a-z0-9_.\-]+")
_TEXT_ACTIONS = ("replace", "append", "prepend", "block")
_ACTIONS = ("annotate", "remove") + _TEXT_ACTIONS
_CASE_KINDS: tuple[CaseKind, ...] = ("hit", "ok", "todo_hit", "todo_ok")
_CASE_KEYS = ("messages", "user", "reply", "expect", "locale", "note", "facts", "judge")


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy may refer to: detectors (with their leaves and scopes) and resources."""

    detectors: frozenset[str]
    leaves_of: Callable[[str], frozenset[str]]
    reads_reply: Callable[[str], bool]
    resources: Resources
    resolve: Callable[[Mapping[str, bool]], Mapping[str, bool]] = dict
    """Leaf values -> every signal, composites included (``PolicySet.resolve_signals``)."""
    judges: frozenset[str] = frozenset()
    """The judge detectors (an inline case may give their answers)."""


def build_policy(value: object, src: Src, ctx: PolicyContext) -> Policy:
    """Build and check one policy mapping read at ``src``."""
    src.expect(value, YMap, "a policy")
    assert isinstance(value, YMap)
    pid = value.get("id")
    if isinstance(pid, str):
        src = Src(src.file, value.line, pid)
    f = Fields(value, src, "a policy", _POLICY_KEYS)
    pid = f.need("id", str)
    if not _ID.fullmatch(pid):
        raise f.at("id").error(f"policy id {pid!r} must match [a-z0-9_.-]+")
    category = f.need("category", str).strip()
    description = f.need("description", str).strip()
    if not category or not description:
        raise f.src.error("category and description must not be empty")
    severity = f.choice("severity", SEVERITY_ORDER, "medium")
    mode = f.choice("mode", ("enforce", "shadow"), "enforce")
    maturity = f.choice("maturity", ("experimental", "stable"), "stable")
    on_error = f.choice("on_error", ("open", "closed"), "open")
    if not f.has("condition"):
        raise f.src.error("a policy lacks required key 'condition'")
    try:
        condition = parse_condition(f.map["condition"], ctx.detectors)
    except ValueError as exc:
        raise f.at("condition").error(str(exc)) from None
    names = condition.names()
    leaves = frozenset().union(*(ctx.leaves_of(n) for n in names))
    locators = frozenset(n for n in leaves if ctx.reads_reply(n))
    actions = _actions(f, ctx)
    if any(a.kind in ("remove", "replace") for a in actions) and not locators:
        raise f.at("actions").error(
            "remove/replace act on the sentences where a reply or sentence detector matched, "
            "but the condition names none"
        )
    tests = _tests(f, pid, ctx.judges) if f.has("tests") else ()
    regenerate, fallback = _regenerate(f, actions, ctx.resources)
    records = _records(f) if f.has("records") else ()
    return Policy(
        id=pid,
        category=category,
        description=description,
        severity=severity,
        condition=condition,
        actions=actions,
        mode=mode,
        maturity=maturity,
        on_error=on_error,
        locators=locators,
        needs_reply=bool(locators),
        tests=tests,
        file=src.file,
        line=value.line,
        regenerate=regenerate,
        records=records,
        fallback=fallback,
    )


def _records(f: Fields) -> tuple[str, ...]:
    """``records: [disclosure, ...]``: what a hit did, each a name of ``facts.RECORDS``."""
    out: list[str] = []
    for name, where in f.at("records").strings(f.map["records"], "'records'"):
        if name not in RECORDS:
            raise where.error(f"unknown record {name!r} (known: {', '.join(sorted(RECORDS))})")
        if name not in out:
            out.append(name)
    return tuple(out)


# ------------------------------------------------------------------ actions


def _regenerate(
    f: Fields, actions: tuple[Action, ...], resources: Resources
) -> tuple[Mapping[str, str] | None, str]:
    """The ``regenerate`` key: a corrective instruction, and the fallback action (one the policy
    declares; default its strongest) whose result ``Verdict.reply`` holds."""
    if not f.has("regenerate"):
        return None, ""
    g = Fields(f.map["regenerate"], f.at("regenerate"), "'regenerate'", ("instruction", "fallback"))
    instruction = " ".join(g.need("instruction", str).split())
    if not instruction:
        raise g.at("instruction").error("'instruction' must not be empty")
    declared = [a.kind for a in actions]
    strongest = max(declared, key=ACTION_ORDER.index)
    fallback = g.get("fallback", str, strongest)
    if fallback not in declared:
        raise g.at("fallback").error(
            f"fallback {fallback!r} is not one of this policy's actions ({', '.join(declared)}): "
            "the fallback is what the policy's own actions already did to the reply"
        )
    texts = _format_all([instruction], g.at("instruction"), resources)
    return {locale: variants[0] for locale, variants in texts.items()}, fallback


def _actions(f: Fields, ctx: PolicyContext) -> tuple[Action, ...]:
    if not f.has("actions"):
        return (Action("annotate"),)
    seq = f.need("actions", YSeq)
    if not seq:
        raise f.at("actions").error("'actions' must not be empty (leave it out to annotate)")
    out: list[Action] = []
    for item, line in zip(seq, seq.item_lines):
        act = _action(item, f.src.at(line), ctx)
        if any(a.kind == act.kind for a in out):
            raise f.src.at(line).error(f"action {act.kind!r} appears twice")
        out.append(act)
    kinds = {a.kind for a in out}
    if {"remove", "replace"} <= kinds:
        raise f.at("actions").error("remove and replace cannot be combined: remove always wins")
    return tuple(out)


def _action(item: object, src: Src, ctx: PolicyContext) -> Action:
    if isinstance(item, str):
        if item == "annotate":
            return Action("annotate", line=src.line)
        if item in _ACTIONS:
            raise src.error(
                f"action {item!r} needs a value, e.g. "
                + ("'remove: sentence'" if item == "remove" else f"'{item}: {{text: ...}}'")
            )
        raise src.error(f"unknown action {item!r} (expected one of: {', '.join(_ACTIONS)})")
    amap = src.expect(item, YMap, "an action")
    if len(amap) != 1:
        raise src.error("an action is a mapping with exactly one key, e.g. 'append: {text: ...}'")
    ((kind, value),) = amap.items()
    if kind not in _ACTIONS:
        raise src.error(f"unknown action {kind!r} (expected one of: {', '.join(_ACTIONS)})")
    if kind == "annotate":
        if value not in (None, {}):
            raise src.error("'annotate' takes no value")
        return Action("annotate", line=src.line)
    if kind == "remove":
        if value != "sentence":
            raise src.error("'remove' takes the value 'sentence'")
        return Action("remove", line=src.line)
    if value is None or (isinstance(value, YMap) and "text" not in value):
        raise src.error(f"action {kind!r} needs a 'text' (a string or a list of variants)")
    allowed = ("text", "unless") if kind in ("append", "prepend") else ("text",)
    fields = Fields(value, src, f"the {kind!r} action", allowed)
    variants = [text for text, _ in fields.at("text").strings(fields.map["text"], "'text'")]
    if not variants or not all(v.strip() for v in variants):
        raise fields.at("text").error(f"action {kind!r} needs a non-empty text")
    action_kind: ActionKind = kind  # type: ignore[assignment]
    texts = _format_all(variants, fields.at("text"), ctx.resources)
    unless = _unless(fields, ctx) if fields.has("unless") else None
    return Action(action_kind, texts, line=src.line, unless=unless)


def _unless(fields: Fields, ctx: PolicyContext) -> Condition:
    """``unless``: a condition over reply detectors only, false for an empty reply (so a text
    decided before the reply is seen, as a stream guard does, is never one it would drop)."""
    src = fields.at("unless")
    try:
        cond = parse_condition(fields.map["unless"], ctx.detectors)
    except ValueError as exc:
        raise src.error(str(exc)) from None
    leaves = frozenset().union(*(ctx.leaves_of(n) for n in cond.names()))
    context = sorted(n for n in leaves if not ctx.reads_reply(n))
    if context:
        raise src.error(
            f"'unless' may read only reply detectors, not {', '.join(context)} "
            "(put conditions on the conversation in the policy's condition)"
        )
    if cond.evaluate(ctx.resolve(dict.fromkeys(leaves, False))):
        raise src.error("'unless' must not hold for an empty reply")
    return cond


def _format_all(
    variants: list[str], src: Src, resources: Resources
) -> Mapping[str, tuple[str, ...]]:
    keys = resources.keys
    for variant in variants:
        try:
            names = template_fields(variant)
        except ValueError as exc:
            raise src.error(f"bad text template: {exc}") from None
        for name in names:
            if name not in keys:
                known = ", ".join(sorted(keys)) or "none: no resources are defined"
                raise src.error(f"template names unknown resource key {{{name}}} (known: {known})")
    return {
        locale: tuple(format_text(v, values) for v in variants)
        for locale, values in resources.locales.items()
    }


# ------------------------------------------------------------------ inline tests


def _tests(f: Fields, pid: str, judges: frozenset[str]) -> tuple[Case, ...]:
    tests = Fields(f.map["tests"], f.at("tests"), "'tests'", _CASE_KINDS)
    out: list[Case] = []
    for kind in _CASE_KINDS:
        if not tests.has(kind):
            continue
        seq = tests.need(kind, YSeq)
        for index, (item, line) in enumerate(zip(seq, seq.item_lines)):
            out.append(_case(item, tests.src.at(line), pid, kind, index, judges))
    return tuple(out)


def _case(
    item: object, src: Src, pid: str, kind: CaseKind, index: int, judges: frozenset[str]
) -> Case:
    f = Fields(item, src, f"a {kind!r} test case", _CASE_KEYS)
    if f.has("messages") and f.has("user"):
        raise f.src.error("a test case has either 'messages' or 'user', not both")
    messages: tuple[Message, ...] = ()
    if f.has("user"):
        messages = (Message("user", f.need("user", str)),)
    elif f.has("messages"):
        seq = f.need("messages", YSeq)
        messages = tuple(_message(m, f.src.at(line)) for m, line in zip(seq, seq.item_lines))
    f.get("note", str, "")
    return Case(
        policy=pid,
        kind=kind,
        index=index,
        conversation=Conversation(messages),
        reply=f.need("reply", str),
        expect=f.get("expect", str, "") if f.has("expect") else None,
        locale=f.get("locale", str, "") or None,
        file=src.file,
        line=src.line,
        facts=_case_facts(f, judges),
    )


def _case_facts(f: Fields, judges: frozenset[str]) -> dict[str, float | bool] | None:
    """A case's ``facts`` (names of ``facts.FACTS``, numbers or, for booleans, true/false; .inf
    for "never") and ``judge`` answers (judge detector -> true/false), as one facts mapping."""
    if not f.has("facts") and not f.has("judge"):
        return None
    out: dict[str, float | bool] = {}
    if f.has("facts"):
        given = f.need("facts", YMap)
        for name, value in given.items():
            where = f.at("facts").at(given.key_lines[name])
            if name not in FACTS:
                raise where.error(f"unknown fact {name!r} (known: {', '.join(FACTS)})")
            if name in BOOL_FACTS:
                out[name] = where.expect(value, bool, f"fact {name!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise where.error(f"fact {name!r} must be a number (.inf for never)")
            else:
                out[name] = float(value)
    if f.has("judge"):
        answers = f.need("judge", YMap)
        for name, value in answers.items():
            where = f.at("judge").at(answers.key_lines[name])
            if name not in judges:
                known = ", ".join(sorted(judges)) or "none are defined"
                raise where.error(f"{name!r} is not a judge detector (judges: {known})")
            out[f"judge.{name}"] = where.expect(value, bool, f"the answer of judge {name!r}")
    return out


def _message(item: object, src: Src) -> Message:
    f = Fields(item, src, "a test message", ("role", "content"))
    role = f.choice("role", ROLES, "user")
    if not f.has("role"):
        raise f.src.error("a test message lacks required key 'role'")
    return Message(role, f.need("content", str))
