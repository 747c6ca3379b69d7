"""``load_policies(path)``: a folder (or one file) of policy YAML -> a checked ``PolicySet``.

Runs once, before anything is served. A folder means every ``*.yaml`` / ``*.yml`` directly in it,
in sorted order; names (lists, detectors, policy ids) are global across the files. Anything
malformed raises ``guardrail.errors.PolicyError`` naming the file, the line and, where there is
one, the policy id: bad YAML, an unknown key, a wrong type, a bad regex, an unknown list, a
condition naming a missing detector, a duplicate name, a template naming an unknown resource key,
an action without its text, a cycle among composite detectors, locales with different keys.
After loading, every regex is compiled and every text formatted; evaluation compiles nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from guardrail.errors import PolicyError
from guardrail.policy.detectors import (
    DEFAULT_CONTRASTS,
    DEFAULT_NEGATORS,
    SCOPES,
    Composite,
    Filters,
    Leaf,
    phrase_pattern,
    word_pattern,
)
from guardrail.policy.engine import PolicySet
from guardrail.policy.model import Policy
from guardrail.policy.policyload import PolicyContext, build_policy
from guardrail.policy.resources import Resources
from guardrail.policy.yamlsource import Fields, Src, YMap, YSeq, read_yaml

__all__ = ["load_policies"]

_TOP_KEYS = ("lists", "detectors", "policies", "resources")
_LEAF_KEYS = (
    "description",
    "scope",
    "turns",
    "phrases",
    "lists",
    "regex",
    "unless_negated",
    "unless_hedged",
    "unless_quoted",
    "min_matches",
    "internal",
)
_COMPOSITE_KEYS = ("description", "any_of", "all_of", "internal")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_KEYWORDS = frozenset({"and", "or", "not"})


@dataclass
class _Collected:
    """Sections gathered from every file, before anything is built."""

    lists: dict[str, tuple[object, Src]] = field(default_factory=dict)
    detectors: dict[str, tuple[object, Src]] = field(default_factory=dict)
    policies: list[tuple[object, Src]] = field(default_factory=list)
    resources: tuple[object, Src] | None = None


def _files(root: Path) -> list[Path]:
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise PolicyError("no *.yaml or *.yml policy files in this folder", file=str(root))
        return files
    if root.is_file():
        return [root]
    raise PolicyError("no such policy file or folder", file=str(root))


def _add_named(into: dict[str, tuple[object, Src]], section: object, src: Src, what: str) -> None:
    names = src.expect(section, YMap, f"'{what}s'")
    for name, value in names.items():
        where = src.at(names.key_lines[name])
        if what != "list" and (not _NAME.fullmatch(name) or name in _KEYWORDS):
            raise where.error(
                f"{what} name {name!r} must match [A-Za-z0-9_.-]+ and not be and/or/not"
            )
        if name in into:
            first = into[name][1]
            raise where.error(
                f"{what} {name!r} is defined twice: {first.file}:{first.line} and here"
            )
        into[name] = (value, where)


def _collect(files: list[Path]) -> tuple[_Collected, str]:
    out = _Collected()
    digest = hashlib.sha256()
    for path in files:
        display = str(path)
        doc, raw = read_yaml(path, display)
        digest.update(path.name.encode() + b"\0" + raw.encode("utf-8") + b"\0")
        if doc is None:
            continue
        top = Fields(doc, Src(display, 1), "a policy file", _TOP_KEYS)
        if top.has("lists"):
            _add_named(out.lists, top.map["lists"], top.at("lists"), "list")
        if top.has("detectors"):
            _add_named(out.detectors, top.map["detectors"], top.at("detectors"), "detector")
        if top.has("policies"):
            seq = top.need("policies", YSeq)
            out.policies.extend((item, top.src.at(line)) for item, line in zip(seq, seq.item_lines))
        if top.has("resources"):
            if out.resources is not None:
                first = out.resources[1]
                raise top.at("resources").error(
                    f"'resources' is defined twice: {first.file}:{first.line} and here"
                )
            out.resources = (top.map["resources"], top.at("resources"))
    return out, digest.hexdigest()[:12]


def _lists(collected: _Collected) -> dict[str, tuple[str, ...]]:
    return {
        name: tuple(text for text, _ in src.strings(value, f"list {name!r}"))
        for name, (value, src) in collected.lists.items()
    }


def _leaf(name: str, f: Fields, lists: dict[str, tuple[str, ...]], filters: Filters) -> Leaf:
    if not f.has("scope"):
        raise f.src.error(f"detector {name!r} lacks required key 'scope'")
    scope = f.choice("scope", SCOPES, "reply")
    if f.has("turns") and scope not in ("user_turns", "assistant_turns"):
        raise f.at("turns").error("'turns' applies only to scope user_turns or assistant_turns")
    turns = f.get("turns", int, 3 if scope == "assistant_turns" else 1)
    min_matches = f.get("min_matches", int, 1)
    if turns < 1 or min_matches < 1:
        raise f.src.error("'turns' and 'min_matches' must be at least 1")
    if not any(f.has(k) for k in ("phrases", "lists", "regex")):
        raise f.src.error(f"detector {name!r} needs phrases, lists or regex (or any_of/all_of)")
    phrases = (
        [p for p, _ in f.at("phrases").strings(f.map["phrases"], "'phrases'")]
        if f.has("phrases")
        else []
    )
    if f.has("lists"):
        for list_name, where in f.at("lists").strings(f.map["lists"], "'lists'"):
            if list_name not in lists:
                raise where.error(f"detector {name!r} names unknown list {list_name!r}")
            phrases.extend(lists[list_name])
    patterns: list[re.Pattern[str]] = []
    combined = phrase_pattern(phrases)
    if combined is not None:
        patterns.append(re.compile(combined))
    if f.has("regex"):
        for text, where in f.at("regex").strings(f.map["regex"], "'regex'"):
            try:
                patterns.append(re.compile(text, re.IGNORECASE))
            except re.error as exc:
                raise where.error(f"detector {name!r}: bad regex {text!r}: {exc}") from None
    return Leaf(
        name=name,
        scope=scope,
        patterns=tuple(patterns),
        filters=filters,
        turns=turns,
        unless_negated=f.get("unless_negated", bool, False),
        unless_hedged=f.get("unless_hedged", bool, False),
        unless_quoted=f.get("unless_quoted", bool, False),
        min_matches=min_matches,
        internal=f.get("internal", bool, False),
        description=f.get("description", str, ""),
    )


def _detectors(
    collected: _Collected, lists: dict[str, tuple[str, ...]], filters: Filters
) -> tuple[list[Leaf], list[Composite]]:
    leaves: list[Leaf] = []
    composites: dict[str, Composite] = {}
    where: dict[str, Src] = {}
    for name, (value, src) in collected.detectors.items():
        raw = src.expect(value, YMap, f"detector {name!r}")
        where[name] = src
        if "any_of" in raw or "all_of" in raw:
            extra = [k for k in raw if k in _LEAF_KEYS and k not in _COMPOSITE_KEYS]
            if extra:
                raise src.at(raw.key_lines[extra[0]]).error(
                    f"detector {name!r}: {extra[0]!r} cannot be combined with any_of/all_of "
                    "(a composite takes its scope from its parts)"
                )
            f = Fields(raw, src, f"detector {name!r}", _COMPOSITE_KEYS)
            if f.has("any_of") and f.has("all_of"):
                raise f.src.error(f"detector {name!r} has both any_of and all_of")
            mode = "any" if f.has("any_of") else "all"
            parts = f.at(f"{mode}_of").strings(f.map[f"{mode}_of"], f"'{mode}_of'")
            if not parts:
                raise f.at(f"{mode}_of").error(f"'{mode}_of' must not be empty")
            for part, part_src in parts:
                if part not in collected.detectors:
                    raise part_src.error(f"detector {name!r} names unknown detector {part!r}")
            composites[name] = Composite(
                name,
                tuple(p for p, _ in parts),
                mode,
                internal=f.get("internal", bool, False),
                description=f.get("description", str, ""),
            )
        else:
            leaves.append(
                _leaf(name, Fields(raw, src, f"detector {name!r}", _LEAF_KEYS), lists, filters)
            )
    return leaves, _ordered(composites, where)


def _ordered(composites: dict[str, Composite], where: dict[str, Src]) -> list[Composite]:
    """Composites in dependency order; a cycle is an error naming it."""
    order: list[Composite] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if name not in composites or state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(path[path.index(name) :] + [name])
            raise where[name].error(f"detectors form a cycle: {cycle}")
        state[name] = 1
        for part in composites[name].parts:
            visit(part, path + [name])
        state[name] = 2
        order.append(composites[name])

    for name in composites:
        visit(name, [])
    return order


def _resources(collected: _Collected) -> Resources:
    if collected.resources is None:
        return Resources()
    value, src = collected.resources
    f = Fields(value, src, "'resources'", ("locales", "default_locale", "aliases"))
    locales_map = f.need("locales", YMap)
    if not locales_map:
        raise f.at("locales").error("'locales' must define at least one locale")
    locales: dict[str, dict[str, str]] = {}
    first_keys: tuple[str, frozenset[str]] | None = None
    for locale, entries in locales_map.items():
        where = f.src.at(locales_map.key_lines[locale])
        raw = where.expect(entries, YMap, f"locale {locale!r}")
        values: dict[str, str] = {}
        for key, item in raw.items():
            item_src = where.at(raw.key_lines[key])
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            values[key] = item_src.expect(item, str, f"{key!r} of locale {locale!r}")
        if "source" not in values:
            raise where.error(f"locale {locale!r} must cite a 'source' for its numbers")
        keys = frozenset(values)
        if first_keys is None:
            first_keys = (locale, keys)
        elif keys != first_keys[1]:
            diff = sorted(keys.symmetric_difference(first_keys[1]))
            raise where.error(
                f"locale {locale!r} defines different keys than {first_keys[0]!r}: "
                + ", ".join(diff)
            )
        locales[locale] = values
    default = f.need("default_locale", str)
    if default not in locales:
        raise f.at("default_locale").error(f"default_locale {default!r} is not a defined locale")
    aliases: dict[str, str] = {}
    if f.has("aliases"):
        amap = f.need("aliases", YMap)
        for alias, target in amap.items():
            asrc = f.src.at(amap.key_lines[alias])
            if asrc.expect(target, str, f"alias {alias!r}") not in locales:
                raise asrc.error(f"alias {alias!r} points at undefined locale {target!r}")
            aliases[alias] = target
    return Resources(locales=locales, default_locale=default, aliases=aliases)


def _reads_reply(ps: PolicySet, name: str) -> bool:
    det = ps.detectors.get(name)
    return isinstance(det, Leaf) and det.reads_reply


def load_policies(path: str | Path) -> PolicySet:
    """Load, check and compile the policies at ``path`` (a folder or one file)."""
    root = Path(path)
    collected, digest = _collect(_files(root))
    lists = _lists(collected)
    filters = Filters(
        negators=word_pattern(DEFAULT_NEGATORS + lists.get("negators", ())),
        contrasts=word_pattern(DEFAULT_CONTRASTS + lists.get("contrasts", ())),
    )
    leaves, composites = _detectors(collected, lists, filters)
    resources = _resources(collected)
    draft = PolicySet(policies=(), leaves=leaves, composites=composites, resources=resources)
    ctx = PolicyContext(
        detectors=frozenset(draft.detectors),
        leaves_of=draft.leaves_of,
        reads_reply=lambda n: _reads_reply(draft, n),
        resources=resources,
    )
    policies: list[Policy] = []
    seen: dict[str, Src] = {}
    for value, src in collected.policies:
        policy = build_policy(value, src, ctx)
        if policy.id in seen:
            first = seen[policy.id]
            raise Src(src.file, policy.line, policy.id).error(
                f"policy id defined twice: {first.file}:{first.line} and here"
            )
        seen[policy.id] = Src(src.file, policy.line)
        policies.append(policy)
    return PolicySet(
        policies=policies,
        leaves=leaves,
        composites=composites,
        resources=resources,
        source=str(root),
        digest=digest,
        lists=lists,
    )
