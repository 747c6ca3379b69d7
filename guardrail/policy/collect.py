"""Collecting: every file of every policy source read into one namespace, before anything is built.

The first stage of ``load_policies``. Sources are read in order, the files of a folder in sorted
order; each named thing (list, detector) keeps where it was written and each file the index of its
source, so later stages can tell what a source may override and errors can name both places.
Guarantees of a :class:`Collected`: no list or detector name is defined twice (a second definition
is an error naming both places, and, across sources, saying to use ``overrides:`` instead), every
top-level key is known, every ``overrides:`` block is well formed (``overrides.read_overrides``),
and the digest covers the order of the sources and every file's name and text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from guardrail.errors import PolicyError
from guardrail.policy.overrides import Overrides, read_overrides
from guardrail.policy.yamlsource import Fields, Src, YMap, YSeq, read_yaml

__all__ = ["Collected", "collect", "twice"]

_TOP_KEYS = ("lists", "detectors", "policies", "resources", "overrides")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_KEYWORDS = frozenset({"and", "or", "not"})


@dataclass
class Collected:
    """Sections gathered from every file of every source, before anything is built."""

    lists: dict[str, tuple[object, Src]] = field(default_factory=dict)
    detectors: dict[str, tuple[object, Src]] = field(default_factory=dict)
    policies: list[tuple[object, Src]] = field(default_factory=list)
    resources: list[tuple[object, Src]] = field(default_factory=list)
    overrides: Overrides = field(default_factory=Overrides)
    source_of: dict[str, int] = field(default_factory=dict)
    """Each file read (as displayed) -> the index of its source."""

    def origin(self, src: Src | None) -> int | None:
        return None if src is None else self.source_of.get(src.file)


def _files(root: Path) -> list[Path]:
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise PolicyError("no *.yaml or *.yml policy files in this folder", file=str(root))
        return files
    if root.is_file():
        return [root]
    raise PolicyError("no such policy file or folder", file=str(root))


def twice(first: Src, here: Src, later: bool) -> str:
    """The end of a "defined twice" error: both places, and what to do across sources."""
    hint = (
        "; a source cannot redefine what an earlier one defines: change it under 'overrides:', "
        "or turn it off there and add your own under a new name"
        if later
        else ""
    )
    return f"{first.file}:{first.line} and here{hint}"


def _add_named(
    out: Collected,
    into: dict[str, tuple[object, Src]],
    section: object,
    src: Src,
    what: str,
) -> None:
    names = src.expect(section, YMap, f"'{what}s'")
    for name, value in names.items():
        where = src.at(names.key_lines[name])
        if what != "list" and (not _NAME.fullmatch(name) or name in _KEYWORDS):
            raise where.error(
                f"{what} name {name!r} must match [A-Za-z0-9_.-]+ and not be and/or/not"
            )
        if name in into:
            first = into[name][1]
            later = out.origin(first) != out.origin(where)
            raise where.error(f"{what} {name!r} is defined twice: {twice(first, where, later)}")
        into[name] = (value, where)


def collect(sources: tuple[Path, ...]) -> tuple[Collected, str]:
    out = Collected()
    digest = hashlib.sha256()
    for index, root in enumerate(sources):
        digest.update(f"source {index}\0".encode())
        for path in _files(root):
            display = str(path)
            doc, raw = read_yaml(path, display)
            out.source_of.setdefault(display, index)
            digest.update(path.name.encode() + b"\0" + raw.encode("utf-8") + b"\0")
            if doc is None:
                continue
            top = Fields(doc, Src(display, 1), "a policy file", _TOP_KEYS)
            if top.has("lists"):
                _add_named(out, out.lists, top.map["lists"], top.at("lists"), "list")
            if top.has("detectors"):
                detectors = top.map["detectors"]
                _add_named(out, out.detectors, detectors, top.at("detectors"), "detector")
            if top.has("policies"):
                seq = top.need("policies", YSeq)
                out.policies.extend(
                    (item, top.src.at(line)) for item, line in zip(seq, seq.item_lines)
                )
            if top.has("resources"):
                out.resources.append((top.map["resources"], top.at("resources")))
            if top.has("overrides"):
                read_overrides(out.overrides, top.map["overrides"], top.at("overrides"), index)
    return out, digest.hexdigest()[:12]
