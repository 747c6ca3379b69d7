"""The package's import graph: no cycles anywhere, and layers that only point one way.

Every import counts, wherever it is written: at the top of a module, inside a function (a lazy
import), or under ``TYPE_CHECKING``. A cycle hidden in a function is still a cycle a reader has
to untangle, and a type-only import still says which layer knows about which.

The layers, lowest first (a module may import its own layer and the ones below it)::

    errors, version                      nothing of guardrail
    policy/                              the pure engine
    formats/                             wire formats: bytes <-> chat requests, replies, stream events
    guard/, library                      guarding text, streams, whole replies; the request flow
    observe/                             logs, metrics, audit, the recorder, the dashboard
    config/                              settings, routes, the policy sets in service
    demo/, proxy/, middleware/           the adapters that do I/O
    cli/, guardrail (the package root)   entry points
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import guardrail

ROOT = Path(guardrail.__file__).parent

LAYERS = {
    "errors": 0,
    "version": 0,
    "policy": 1,
    "formats": 2,
    "guard": 3,
    "library": 3,
    "state": 4,
    "judge": 5,  # endpoints are read with the config value parsers; the runner is an I/O client
    "observe": 4,
    "config": 5,
    "demo": 6,
    "proxy": 6,
    "middleware": 6,
    "cli": 7,
    "__main__": 7,
    "": 8,  # guardrail/__init__.py: the public API, imports what it re-exports
}
ADAPTERS = {"demo", "proxy", "middleware"}
"""The adapters share a layer but never import each other: each stands on the flow alone."""
KNOWN_CYCLES: list[set[str]] = []
"""Cycles tolerated for now, each with why and when it goes (none: keep it so)."""


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every guardrail module ``path`` imports, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "guardrail":
                    yield _nearest(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "guardrail":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else _nearest(base, known)), node.lineno


def _nearest(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, dict[str, int]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges[name] = {}
        for target, line in imports(path, name, known):
            if target != name:
                edges[name].setdefault(target, line)
    return edges


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, LAYERS[top]


def test_every_module_has_a_layer() -> None:
    unknown = sorted({m for m in modules() if layer_of_safe(m) is None})
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"


def layer_of_safe(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "")


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 and set(component) not in KNOWN_CYCLES:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + _explain(c, edges) for c in cycles
    )


def _explain(component: list[str], edges: dict[str, dict[str, int]]) -> str:
    inside = set(component)
    return "; ".join(
        f"{a}:{line} imports {b}"
        for a in component
        for b, line in sorted(edges[a].items())
        if b in inside
    )


def test_layers_point_one_way() -> None:
    upward = []
    for module, targets in graph().items():
        top, mine = layer_of(module)
        for target, line in sorted(targets.items()):
            other, theirs = layer_of(target)
            sideways = top != other and {top, other} <= ADAPTERS
            if theirs > mine or sideways:
                upward.append(f"{module}:{line} ({top or 'root'}) imports {target} ({other or 'root'})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


STDLIB_NAMES = {"inspect", "types", "json", "io", "http", "logging", "signal", "select",
                "queue", "string", "typing", "abc", "ast", "code", "copy", "random", "time",
                "token", "platform", "secrets", "statistics", "stat", "glob", "site", "test"}


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_is_named_after_a_stdlib_module(module: str) -> None:
    import sys

    leaf = module.rpartition(".")[2]
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | STDLIB_NAMES
    assert leaf not in stdlib or module == "guardrail", f"{module} shadows the stdlib {leaf!r}"
