"""``load_policies(sources)``: policy YAML, from one source or a list -> a checked ``PolicySet``.

Runs once, before anything is served. A source is a folder (every ``*.yaml`` / ``*.yml`` directly
in it, in sorted order), one file, or ``default``, the bundled pack (``sources``). Sources are read
in the order given and make one namespace: names (lists, detectors, policy ids, resource keys)
are global across their files, so a later source uses an earlier one's lists, detectors (signals)
and resources; defining a name again is an error naming both places. What an earlier source
defines is changed only through a file's ``overrides:`` block (``overrides``): a policy's mode or
whether it runs, a list's or a detector's phrases, resource values. A turned-off policy is built
and checked like any other, then left out of the set (``PolicySet.composition`` keeps it for
``guardrail test``).

Stages: ``collect`` reads every file of every source; lists (with their phrase edits), detectors,
resources and policies are built in that order; the override blocks' policy changes come last.
Anything malformed raises ``guardrail.errors.PolicyError`` naming the file, the line and, where
there is one, the policy id: bad YAML, an unknown key, a wrong type, a bad regex, an unknown list, a
condition naming a missing detector, a duplicate name, a template naming an unknown resource key,
an action without its text, a cycle among composite detectors, locales with different keys, a
regex that backtracks catastrophically (``patterns``: every ``regex:`` entry also runs under a
time bound).
After loading, every regex is compiled and every text formatted; evaluation compiles nothing.

Detector keys beyond the basics: ``first_sentences: N`` (reply scopes: only the reply's first N
sentences count, e.g. "the reply opens with a crisis line"); composites ``any_of`` (with
``at_least: N`` parts, or ``min_matches: N`` distinct matches among leaf parts), ``all_of`` and
``none_of``; ``fact`` and ``judge`` detectors read the facts the request flow gathers
(``factload``, ``facts``). Policy keys: ``regenerate: {instruction, fallback}``, ``records``;
``prepend``/``append`` take an optional ``unless`` condition over reply detectors (see
``policyload``); inline cases may set ``facts`` and ``judge`` answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeAlias

from guardrail.errors import PolicyError
from guardrail.policy.boundedregex import Matcher
from guardrail.policy.detectors import (
    DEFAULT_CONTRASTS,
    DEFAULT_NEGATORS,
    SCOPES,
    Composite,
    Filters,
    Leaf,
    phrase_key,
    phrase_pattern,
)
from guardrail.policy.engine import PolicySet
from guardrail.policy.collect import Collected, collect, twice
from guardrail.policy.factload import build_fact_leaf, is_fact_detector
from guardrail.policy.facts import FactLeaf
from guardrail.policy.model import Composition, Policy
from guardrail.policy.overrides import (
    apply_policy_changes,
    by_name,
    check_order,
    edit_phrases,
)
from guardrail.policy.patterns import (
    Written,
    compile_regex,
    compile_trie,
    compile_words,
    refuse_backtracking,
)
from guardrail.policy.policyload import PolicyContext, build_policy
from guardrail.policy.prefilter import necessary_literals, phrase_literal, phrase_literals
from guardrail.policy.resources import compose_resources
from guardrail.policy.sources import PolicySource, as_list, parse_sources
from guardrail.policy.yamlsource import Fields, Src, YMap

__all__ = ["load_policies"]

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
    "first_sentences",
    "internal",
    "construct",
)
_COMPOSITE_KEYS = (
    "description",
    "any_of",
    "all_of",
    "none_of",
    "at_least",
    "min_matches",
    "internal",
    "construct",
)
_COMPOSITE_MODES = ("any", "all", "none")
_Locate: TypeAlias = Callable[[str], tuple[Src | None, int | None]]


def _locate(named: dict[str, tuple[object, Src]], collected: Collected) -> _Locate:
    def locate(name: str) -> tuple[Src | None, int | None]:
        where = named[name][1] if name in named else None
        return where, collected.origin(where)

    return locate


def _lists(collected: Collected) -> dict[str, tuple[str, ...]]:
    lists = {
        name: tuple(text for text, _ in src.strings(value, f"list {name!r}"))
        for name, (value, src) in collected.lists.items()
    }
    locate = _locate(collected.lists, collected)
    for name, edits in by_name(collected.overrides.lists).items():
        lists[name] = edit_phrases(lists.get(name, ()), edits, "list", locate)
    return lists


def _leaf(
    name: str,
    f: Fields,
    lists: dict[str, tuple[str, ...]],
    filters: Filters,
    written: Written,
    edit: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None,
) -> Leaf:
    """A leaf detector from its fields: where it reads, what it looks for, how it counts."""
    scope, turns, min_matches = _reach(name, f)
    first = _first_sentences(f, scope)
    if not any(f.has(k) for k in ("phrases", "lists", "regex")):
        raise f.src.error(f"detector {name!r} needs phrases, lists or regex (or any_of/all_of)")
    phrases = _phrases(name, f, lists)
    if edit is not None:  # the override blocks' phrase edits
        phrases = list(edit(tuple(phrases)))
    patterns, prefilters = _patterns(name, f, phrases, min_matches, written)
    return Leaf(
        name=name,
        scope=scope,
        patterns=tuple(patterns),
        filters=filters,
        prefilters=tuple(prefilters),
        turns=turns,
        unless_negated=f.get("unless_negated", bool, False),
        unless_hedged=f.get("unless_hedged", bool, False),
        unless_quoted=f.get("unless_quoted", bool, False),
        min_matches=min_matches,
        internal=f.get("internal", bool, False),
        description=f.get("description", str, ""),
        construct=f.get("construct", str, ""),
        first_sentences=first,
    )


def _reach(name: str, f: Fields) -> tuple[str, int, int]:
    """A leaf's scope, its turn window and its ``min_matches``, checked together."""
    if not f.has("scope"):
        raise f.src.error(f"detector {name!r} lacks required key 'scope'")
    scope = f.choice("scope", SCOPES, "reply")
    if f.has("turns") and scope not in ("user_turns", "assistant_turns"):
        raise f.at("turns").error("'turns' applies only to scope user_turns or assistant_turns")
    turns = f.get("turns", int, 3 if scope == "assistant_turns" else 1)
    min_matches = f.get("min_matches", int, 1)
    if turns < 1 or min_matches < 1:
        raise f.src.error("'turns' and 'min_matches' must be at least 1")
    return scope, turns, min_matches


def _first_sentences(f: Fields, scope: str) -> int | None:
    """A reply or sentence leaf's ``first_sentences`` (None: it reads every sentence)."""
    if not f.has("first_sentences"):
        return None
    if scope not in ("reply", "sentence"):
        raise f.at("first_sentences").error(
            "'first_sentences' applies only to scope reply or sentence"
        )
    first = f.get("first_sentences", int, 1)
    if first < 1:
        raise f.at("first_sentences").error("'first_sentences' must be at least 1")
    return first


def _phrases(name: str, f: Fields, lists: dict[str, tuple[str, ...]]) -> list[str]:
    """A leaf's own phrases, then those of the lists it names, in order."""
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
    return phrases


def _patterns(
    name: str, f: Fields, phrases: list[str], min_matches: int, written: Written
) -> tuple[list[Matcher], list[tuple[str, ...] | None]]:
    """A leaf's compiled patterns (phrase tries, then its regexes) and each one's prefilter
    literals (None: always run); each regex is noted in ``written`` for the load checks."""
    patterns: list[Matcher] = []
    prefilters: list[tuple[str, ...] | None] = []
    for chunk in _phrase_chunks(phrases, min_matches):
        combined = phrase_pattern(chunk)
        if combined is not None:
            patterns.append(compile_trie(combined, chunk))
            prefilters.append(phrase_literals(chunk))
    if f.has("regex"):
        for text, where in f.at("regex").strings(f.map["regex"], "'regex'"):
            parts = compile_regex(name, text, where, min_matches)
            patterns.extend(parts)
            prefilters.extend(necessary_literals(p.pattern, p.flags) for p in parts)
            written.append((name, text, where, parts))
    return patterns, prefilters


_PHRASE_CHUNK = 120


def _phrase_chunks(phrases: list[str], min_matches: int) -> list[list[str]]:
    """Phrases in sorted runs of at most ``_PHRASE_CHUNK``: one trie per run keeps each trie's
    prefilter small enough to be used (a single huge trie would get none). Sorting keeps
    phrases that share a beginning ("panic attack", "panic attacks") in one trie, so the
    longest still wins; with ``min_matches`` above 1 the phrases stay in one trie."""
    keys = sorted({phrase_key(p) for p in phrases} - {""})
    if min_matches > 1:
        return [keys] if keys else []
    # phrases made only of short or common words ("all i have is you") get a trie of their own,
    # without a prefilter, so that they do not cost the others theirs
    plain = [k for k in keys if phrase_literal(k) is None]
    keyed = [k for k in keys if phrase_literal(k) is not None]
    runs = [keyed[i : i + _PHRASE_CHUNK] for i in range(0, len(keyed), _PHRASE_CHUNK)]
    return runs + ([plain] if plain else [])


def _detectors(
    collected: Collected, lists: dict[str, tuple[str, ...]], filters: Filters, written: Written
) -> tuple[list[Leaf], list[Composite], list[FactLeaf]]:
    leaves: list[Leaf] = []
    composites: dict[str, Composite] = {}
    facts: list[FactLeaf] = []
    where: dict[str, Src] = {}
    edits = by_name(collected.overrides.detectors)
    locate = _locate(collected.detectors, collected)
    for name, found in edits.items():
        for one in found:
            check_order(name, "detector", one.src, one.source, *locate(name))
    for name, (value, src) in collected.detectors.items():
        raw = src.expect(value, YMap, f"detector {name!r}")
        where[name] = src
        if any(f"{mode}_of" in raw for mode in _COMPOSITE_MODES):
            if name in edits:
                raise edits[name][0].src.error(
                    f"detector {name!r} is a composite: edit the phrases of its leaf parts"
                )
            composites[name] = _composite(name, raw, src, collected)
        elif is_fact_detector(raw):
            facts.append(build_fact_leaf(name, raw, src))
        else:
            fields = Fields(raw, src, f"detector {name!r}", _LEAF_KEYS)
            edit = (
                partial(edit_phrases, edits=edits[name], what="detector", locate=locate)
                if name in edits
                else None
            )
            leaves.append(_leaf(name, fields, lists, filters, written, edit))
    return leaves, _ordered(composites, where), facts


def _composite(name: str, raw: YMap, src: Src, collected: Collected) -> Composite:
    extra = [k for k in raw if k in _LEAF_KEYS and k not in _COMPOSITE_KEYS]
    if extra:
        raise src.at(raw.key_lines[extra[0]]).error(
            f"detector {name!r}: {extra[0]!r} cannot be combined with any_of/all_of/none_of "
            "(a composite takes its scope from its parts)"
        )
    f = Fields(raw, src, f"detector {name!r}", _COMPOSITE_KEYS)
    modes = [mode for mode in _COMPOSITE_MODES if f.has(f"{mode}_of")]
    if len(modes) > 1:
        raise f.at(f"{modes[1]}_of").error(
            f"detector {name!r} has " + " and ".join(f"{m}_of" for m in modes) + ": pick one"
        )
    mode = modes[0]
    key = f"{mode}_of"
    parts = f.at(key).strings(f.map[key], f"'{key}'")
    if not parts:
        raise f.at(key).error(f"'{key}' must not be empty")
    for part, part_src in parts:
        if part not in collected.detectors:
            raise part_src.error(f"detector {name!r} names unknown detector {part!r}")
    at_least = f.get("at_least", int, 1)
    for key in ("at_least", "min_matches"):
        if f.has(key) and mode != "any":
            raise f.at(key).error(f"{key!r} goes with any_of only")
    min_matches = f.get("min_matches", int, 0)
    if f.has("min_matches"):
        if f.has("at_least"):
            raise f.at("min_matches").error("a composite takes 'at_least' or 'min_matches'")
        if min_matches < 1:
            raise f.at("min_matches").error("'min_matches' must be at least 1")
        for part, part_src in parts:
            raw_part = collected.detectors[part][0]
            if isinstance(raw_part, YMap) and any(f"{m}_of" in raw_part for m in _COMPOSITE_MODES):
                raise part_src.error(
                    f"detector {name!r} counts matches, so its parts must be leaf detectors; "
                    f"{part!r} is a composite"
                )
            if isinstance(raw_part, YMap) and is_fact_detector(raw_part):
                raise part_src.error(
                    f"detector {name!r} counts matches in text, so its parts must be text "
                    f"detectors; {part!r} reads a fact"
                )
    if not 1 <= at_least <= len(parts):
        raise f.at("at_least").error(
            f"'at_least' must be between 1 and the number of parts ({len(parts)})"
        )
    return Composite(
        name,
        tuple(p for p, _ in parts),
        mode,
        internal=f.get("internal", bool, False),
        description=f.get("description", str, ""),
        construct=f.get("construct", str, ""),
        at_least=at_least,
        min_matches=min_matches,
    )


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


def _reads_reply(ps: PolicySet, name: str) -> bool:
    det = ps.detectors.get(name)
    return isinstance(det, Leaf) and det.reads_reply


def load_policies(path: str | Path | PolicySource | Sequence[str | Path]) -> PolicySet:
    """Load, check and compile the policies at ``path``: a folder, one file, ``"default"`` (the
    bundled pack), or a list of them applied in order (``["default", "mine/"]``)."""
    try:
        sources = as_list(parse_sources(path, commas=False))
    except ValueError as exc:
        raise PolicyError(f"policy sources: {exc}", file=str(path)) from None
    collected, digest = collect(sources)
    lists = _lists(collected)
    filters = Filters(
        negators=compile_words(DEFAULT_NEGATORS + lists.get("negators", ())),
        contrasts=compile_words(DEFAULT_CONTRASTS + lists.get("contrasts", ())),
    )
    written: Written = []
    leaves, composites, facts = _detectors(collected, lists, filters, written)
    resources = compose_resources(collected.resources, collected.overrides.resources)
    draft = PolicySet(
        policies=(), leaves=leaves, composites=composites, resources=resources, facts=facts
    )
    ctx = PolicyContext(
        detectors=frozenset(draft.detectors),
        judges=frozenset(f.name for f in facts if f.judge is not None),
        leaves_of=draft.leaves_of,
        reads_reply=lambda n: _reads_reply(draft, n),
        resources=resources,
        resolve=draft.resolve_signals,
    )
    built: list[Policy] = []
    seen: dict[str, Src] = {}
    for value, src in collected.policies:
        policy = build_policy(value, src, ctx)
        here = Src(src.file, policy.line, policy.id)
        if policy.id in seen:
            first = seen[policy.id]
            later = collected.origin(first) != collected.origin(here)
            raise here.error(f"policy id defined twice: {twice(first, here, later)}")
        seen[policy.id] = Src(src.file, policy.line)
        built.append(policy)
    policies, disabled, changes = apply_policy_changes(
        built, collected.overrides.policies, collected.origin
    )
    refuse_backtracking(written, policies, draft)
    return PolicySet(
        policies=policies,
        leaves=leaves,
        composites=composites,
        resources=resources,
        facts=facts,
        source=", ".join(str(p) for p in sources),
        digest=digest,
        lists=lists,
        composition=Composition(
            sources=tuple(str(p) for p in sources),
            origin={p.id: collected.origin(seen[p.id]) or 0 for p in built},
            disabled=disabled,
            changes=changes,
        ),
    )
