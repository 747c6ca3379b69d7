"""Reading policy YAML with line numbers, and typed access that fails with file:line.

``read_yaml`` parses one file with the safe loader; every mapping becomes a ``YMap`` and every
sequence a ``YSeq``, both remembering the line they start on and the line of each key or item.
Duplicate keys are errors (plain YAML silently keeps the last one). ``Fields`` reads a mapping's
keys with type checks and rejects keys it does not know, so a typo never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from guardrail.errors import PolicyError

__all__ = ["Fields", "Src", "YMap", "YSeq", "read_yaml"]

T = TypeVar("T")


class YMap(dict[str, Any]):
    """A YAML mapping with ``line`` and ``key_lines``."""

    line: int = 0
    key_lines: dict[str, int]


class YSeq(list[Any]):
    """A YAML sequence with ``line`` and ``item_lines``."""

    line: int = 0
    item_lines: list[int]


class _Problem(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    pass


def _mapping(loader: Any, node: yaml.MappingNode) -> YMap:
    out = YMap()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _Problem(f"keys must be strings, not {key!r}", line)
        if key in out:
            raise _Problem(f"duplicate key {key!r}", line)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _sequence(loader: Any, node: yaml.SequenceNode) -> YSeq:
    out = YSeq(loader.construct_object(item, deep=True) for item in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [item.start_mark.line + 1 for item in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)


def read_yaml(path: Path, display: str) -> tuple[object, str]:
    """Parse ``path``; return (document, raw text). Errors name ``display`` and the line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy file: {exc}", file=display) from None
    try:
        return yaml.load(raw, Loader=_Loader), raw
    except _Problem as exc:
        raise PolicyError(str(exc), file=display, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        raise PolicyError(f"invalid YAML: {problem}", file=display, line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", file=display) from None


def _type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        YMap: "a mapping",
        YSeq: "a list",
    }.get(type(value), type(value).__name__)


_BOOL_HINT = " (quote it: YAML reads yes/no/on/off/true/false as booleans)"


@dataclass(frozen=True, slots=True)
class Src:
    """Where something was read: file, line and (when known) the policy id."""

    file: str
    line: int | None = None
    policy: str | None = None

    def at(self, line: int | None) -> Src:
        return Src(self.file, line if line is not None else self.line, self.policy)

    def error(self, message: str) -> PolicyError:
        return PolicyError(message, file=self.file, line=self.line, policy_id=self.policy)

    def expect(self, value: object, kind: type[T], what: str) -> T:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        want = {
            str: "a string",
            int: "a whole number",
            bool: "true or false",
            YMap: "a mapping",
            YSeq: "a list",
        }.get(kind, kind.__name__)
        hint = ""
        if kind is str and isinstance(value, bool):
            hint = _BOOL_HINT
        elif kind is str and isinstance(value, (int, float)):
            hint = " (quote it: YAML reads an unquoted 988 as a number)"
        raise self.error(f"{what} must be {want}, not {_type_name(value)}{hint}")

    def strings(self, value: object, what: str) -> list[tuple[str, Src]]:
        """A list of strings (or one string), each with its own line."""
        if isinstance(value, str):
            return [(value, self)]
        seq = self.expect(value, YSeq, what)
        return [
            (self.at(line).expect(item, str, f"each item of {what}"), self.at(line))
            for item, line in zip(seq, seq.item_lines)
        ]


class Fields:
    """Typed, line-aware access to one YAML mapping; unknown keys are rejected on creation."""

    def __init__(self, value: object, src: Src, what: str, allowed: tuple[str, ...]) -> None:
        self.map = src.expect(value, YMap, what)
        self.src = src.at(self.map.line)
        self.what = what
        for key in self.map:
            if key not in allowed:
                raise self.src.at(self.map.key_lines[key]).error(
                    f"unknown key {key!r} in {what} (expected one of: {', '.join(allowed)})"
                )

    def has(self, key: str) -> bool:
        return key in self.map

    def at(self, key: str) -> Src:
        return self.src.at(self.map.key_lines.get(key))

    def get(self, key: str, kind: type[T], default: T) -> T:
        if key not in self.map:
            return default
        return self.at(key).expect(self.map[key], kind, f"{key!r} of {self.what}")

    def need(self, key: str, kind: type[T]) -> T:
        if key not in self.map:
            raise self.src.error(f"{self.what} lacks required key {key!r}")
        return self.at(key).expect(self.map[key], kind, f"{key!r} of {self.what}")

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.at(key).error(f"{key!r} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def each(self, fn: Callable[[str, object, Src], T]) -> list[T]:
        return [fn(key, value, self.at(key)) for key, value in self.map.items()]
