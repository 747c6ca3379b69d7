"""The override block: tuning what a policy set's sources define without copying their files.

A policy file may carry a top-level ``overrides:`` mapping (the model is Falco's tuning of
included rules)::

    overrides:
      policies:
        validation.pure: {enabled: false}        # not run, not counted
        referral.distress: {mode: shadow}        # run and counted, changes no reply
      lists:
        negators: {append: ["nah"], remove: ["hardly"]}
      detectors:
        user.distress.lonely: {append: ["no one to sit with at lunch"]}
      resources:
        locales:
          en-GB: {crisis_line: ..., crisis_contact: ..., source: https://...}

Stages and guarantees: :func:`read_overrides` checks a block's shape (unknown keys, types, an
empty edit) as it is read, every entry keeping its file and line; the loader then applies the
blocks in source order after collecting every definition, so each override names something
defined, in its own source or an earlier one, or fails with its file and line (and the policy id).
Phrase edits (``append`` / ``remove``) act on a list's phrases, or on a leaf detector's phrases
(its own and those of the lists it names); removing a phrase that is not there is an error, so a
pack update that drops or rewords a phrase is noticed. Policies may change ``mode`` (enforce,
shadow) and ``enabled``; the resource part is ``resources.compose_resources``' business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from guardrail.policy.detectors import phrase_key
from guardrail.policy.model import Policy
from guardrail.policy.yamlsource import Fields, Src, YMap

__all__ = [
    "MODES",
    "Overrides",
    "PhraseEdit",
    "PolicyChange",
    "apply_policy_changes",
    "by_name",
    "check_order",
    "edit_phrases",
    "read_overrides",
]

_BLOCK_KEYS = ("policies", "lists", "detectors", "resources")
_POLICY_KEYS = ("mode", "enabled")
_EDIT_KEYS = ("append", "remove")
MODES = ("enforce", "shadow")


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One policy's override: a new ``mode`` and/or ``enabled`` (None: unchanged)."""

    policy: str
    mode: str | None
    enabled: bool | None
    src: Src
    source: int

    def describe(self) -> str:
        parts = ([f"mode: {self.mode}"] if self.mode else []) + (
            [] if self.enabled is None else [f"enabled: {str(self.enabled).lower()}"]
        )
        return f"{self.src.file}:{self.src.line}: {', '.join(parts)}"


@dataclass(frozen=True, slots=True)
class PhraseEdit:
    """Phrases to add to, and to take from, one list or leaf detector."""

    name: str
    append: tuple[str, ...]
    remove: tuple[tuple[str, Src], ...]
    src: Src
    source: int


@dataclass
class Overrides:
    """Every override block of a policy set, in source order."""

    policies: list[PolicyChange] = field(default_factory=list)
    lists: list[PhraseEdit] = field(default_factory=list)
    detectors: list[PhraseEdit] = field(default_factory=list)
    resources: list[tuple[object, Src]] = field(default_factory=list)


def read_overrides(into: Overrides, value: object, src: Src, source: int) -> None:
    """Read one ``overrides:`` block written at ``src`` in source number ``source``."""
    block = Fields(value, src, "'overrides'", _BLOCK_KEYS)
    if block.has("policies"):
        pmap = block.need("policies", YMap)
        for pid, change in pmap.items():
            where = Src(src.file, pmap.key_lines[pid], pid)
            f = Fields(change, where, f"the override of policy {pid!r}", _POLICY_KEYS)
            if not f.map:
                raise where.error("an override of a policy sets 'mode' or 'enabled'")
            mode = f.choice("mode", MODES, "") if f.has("mode") else None
            enabled = f.get("enabled", bool, True) if f.has("enabled") else None
            into.policies.append(PolicyChange(pid, mode, enabled, where, source))
    for section, edits in (("lists", into.lists), ("detectors", into.detectors)):
        if not block.has(section):
            continue
        emap = block.need(section, YMap)
        what = section[:-1]
        for name, edit in emap.items():
            where = block.at(section).at(emap.key_lines[name])
            f = Fields(edit, where, f"the override of {what} {name!r}", _EDIT_KEYS)
            append = (
                tuple(p for p, _ in f.at("append").strings(f.map["append"], "'append'"))
                if f.has("append")
                else ()
            )
            remove = (
                tuple(f.at("remove").strings(f.map["remove"], "'remove'"))
                if f.has("remove")
                else ()
            )
            if not append and not remove:
                raise where.error(f"an override of a {what} appends or removes phrases")
            edits.append(PhraseEdit(name, append, remove, where, source))
    if block.has("resources"):
        into.resources.append((block.map["resources"], block.at("resources")))


def check_order(
    name: str, what: str, src: Src, source: int, defined: Src | None, origin: int | None
) -> None:
    """An override names something defined in its own source or an earlier one."""
    if defined is None or origin is None:
        raise src.error(
            f"override names unknown {what} {name!r} (an override changes what a source "
            "listed before it, or its own, defines)"
        )
    if origin > source:
        raise src.error(
            f"override names {what} {name!r}, defined in a later source "
            f"({defined.file}:{defined.line}): list that source before this one"
        )


def edit_phrases(
    phrases: tuple[str, ...],
    edits: list[PhraseEdit],
    what: str,
    locate: Callable[[str], tuple[Src | None, int | None]],
) -> tuple[str, ...]:
    """``phrases`` after ``edits`` (all naming one list or detector), in order."""
    out = list(phrases)
    for edit in edits:
        check_order(edit.name, what, edit.src, edit.source, *locate(edit.name))
        for text, where in edit.remove:
            key = phrase_key(text)
            kept = [p for p in out if phrase_key(p) != key]
            if len(kept) == len(out):
                raise where.error(f"{what} {edit.name!r} has no phrase {text!r} to remove")
            out = kept
        out.extend(edit.append)
    return tuple(out)


def by_name(edits: list[PhraseEdit]) -> dict[str, list[PhraseEdit]]:
    """Phrase edits grouped by the list or detector they name, each group in order."""
    out: dict[str, list[PhraseEdit]] = {}
    for edit in edits:
        out.setdefault(edit.name, []).append(edit)
    return out


def apply_policy_changes(
    policies: list[Policy],
    changes: list[PolicyChange],
    origin: Callable[[Src | None], int | None],
) -> tuple[list[Policy], tuple[Policy, ...], dict[str, tuple[str, ...]]]:
    """The override blocks' policy changes applied in order (``origin``: a place -> the index
    of its source): the policies that run, those turned off, and each changed policy's
    overrides (``file:line: what``)."""
    by_id = {p.id: p for p in policies}
    where = {p.id: Src(p.file, p.line, p.id) for p in policies}
    enabled = dict.fromkeys(by_id, True)
    found: dict[str, list[PolicyChange]] = {}
    for change in changes:
        defined = where.get(change.policy)
        check_order(change.policy, "policy", change.src, change.source, defined, origin(defined))
        policy = by_id[change.policy]
        if change.mode is not None:
            by_id[change.policy] = replace(policy, mode=change.mode)
        if change.enabled is not None:
            enabled[change.policy] = change.enabled
        found.setdefault(change.policy, []).append(change)
    running = [p for p in by_id.values() if enabled[p.id]]
    disabled = tuple(p for p in by_id.values() if not enabled[p.id])
    described = {pid: tuple(c.describe() for c in mine) for pid, mine in found.items()}
    return running, disabled, described
