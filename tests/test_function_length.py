"""No function in ``guardrail/`` runs over ``MAX_LINES`` lines (issue 12, item 8).

A long function is several steps without names: split it into the steps, each a function
whose name says what it does. Counted from the ``def`` line to the last line of the body,
docstring and comments included; nested functions and methods count on their own (and within
the function around them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import guardrail

ROOT = Path(guardrail.__file__).parent
MAX_LINES = 60
ALLOWED: set[tuple[str, str]] = set()
"""(file under guardrail/, function name) still over the limit, each with when it goes."""


def long_functions(root: Path, limit: int) -> list[tuple[str, str, int, int]]:
    """(file, function name, first line, length) of every function over ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    where = path.relative_to(root).as_posix()
                    found.append((where, node.name, node.lineno, length))
    return found


def test_no_function_is_over_the_limit() -> None:
    over = [f for f in long_functions(ROOT, MAX_LINES) if (f[0], f[1]) not in ALLOWED]
    listed = "\n".join(
        f"guardrail/{file}:{line} {name}: {length} lines" for file, name, line, length in over
    )
    assert not over, f"functions over {MAX_LINES} lines (split them into named steps):\n{listed}"


def test_the_allow_list_holds_only_functions_still_over_the_limit() -> None:
    """An entry whose function was split (or renamed) goes, so the list only shrinks."""
    still = {(file, name) for file, name, _, _ in long_functions(ROOT, MAX_LINES)}
    assert not ALLOWED - still, f"split already, remove from ALLOWED: {sorted(ALLOWED - still)}"


def test_the_measure_finds_a_long_function(tmp_path: Path) -> None:
    """The walk sees methods, nested and async functions, and counts their whole body."""
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "mod.py").write_text(
        "class A:\n"
        "    async def long(self) -> None:\n"
        f"{body}\n"
        "    def short(self) -> None:\n"
        "        pass\n",
        encoding="utf-8",
    )
    assert long_functions(tmp_path, MAX_LINES) == [("mod.py", "long", 2, MAX_LINES + 1)]
    assert long_functions(tmp_path, MAX_LINES + 1) == []
