"""Policy conditions: boolean expressions over detector signals.

Two spellings compile to the same tree, once, at load time:

* a string: ``reply.permanence and not (reply.negated or user.joking)``; ``not`` binds tighter
  than ``and``, which binds tighter than ``or``;
* a structure: ``{all: [a, {not: b}]}``, ``{any: [...]}``, ``{not: x}``; a string inside a
  structure may itself be an expression.

``parse_condition`` raises ``ValueError`` with a readable message (the loader adds file, line and
policy id); names are checked against the known detectors here, so a condition can never name a
detector that does not exist. Evaluating a tree is a handful of dict lookups; ``compile_condition``
turns it, once at load, into one Python function that reads the same names in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

__all__ = [
    "All",
    "Any",
    "Condition",
    "Name",
    "Not",
    "Resolvers",
    "compile_condition",
    "compile_expression",
    "parse_condition",
    "resolve",
]

Signals = Mapping[str, bool]
Resolvers = tuple[tuple[str, Callable[[Signals], bool]], ...]
"""Composite detectors in dependency order, each with its value as one function."""


class Condition:
    """Base of the condition tree."""

    __slots__ = ()

    def evaluate(self, signals: Signals) -> bool:
        raise NotImplementedError

    def names(self) -> frozenset[str]:
        """Every detector name the condition reads."""
        raise NotImplementedError

    def supporting(self, signals: Signals) -> frozenset[str]:
        """The true names that make a true condition true (for evidence): a name read under
        ``not`` never supports it, since what holds there is an absence."""
        raise NotImplementedError

    def python(self) -> str:
        """The condition as a Python expression over a mapping ``s`` (see ``compile_condition``)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Name(Condition):
    name: str

    def evaluate(self, signals: Signals) -> bool:
        return signals[self.name]

    def names(self) -> frozenset[str]:
        return frozenset((self.name,))

    def supporting(self, signals: Signals) -> frozenset[str]:
        return frozenset((self.name,)) if signals.get(self.name) else frozenset()

    def python(self) -> str:
        return f"s[{self.name!r}]"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Not(Condition):
    item: Condition

    def evaluate(self, signals: Signals) -> bool:
        return not self.item.evaluate(signals)

    def names(self) -> frozenset[str]:
        return self.item.names()

    def supporting(self, signals: Signals) -> frozenset[str]:
        return frozenset()

    def python(self) -> str:
        return f"(not {self.item.python()})"

    def __str__(self) -> str:
        return f"not {_wrap(self.item)}"


@dataclass(frozen=True, slots=True)
class All(Condition):
    items: tuple[Condition, ...]

    def evaluate(self, signals: Signals) -> bool:
        return all(item.evaluate(signals) for item in self.items)

    def names(self) -> frozenset[str]:
        return frozenset().union(*(item.names() for item in self.items))

    def supporting(self, signals: Signals) -> frozenset[str]:
        return frozenset().union(*(item.supporting(signals) for item in self.items))

    def python(self) -> str:
        return "(" + " and ".join(item.python() for item in self.items) + ")"

    def __str__(self) -> str:
        return " and ".join(_wrap(item) for item in self.items)


@dataclass(frozen=True, slots=True)
class Any(Condition):
    items: tuple[Condition, ...]

    def evaluate(self, signals: Signals) -> bool:
        return any(item.evaluate(signals) for item in self.items)

    def names(self) -> frozenset[str]:
        return frozenset().union(*(item.names() for item in self.items))

    def supporting(self, signals: Signals) -> frozenset[str]:
        return frozenset().union(
            *(item.supporting(signals) for item in self.items if item.evaluate(signals))
        )

    def python(self) -> str:
        return "(" + " or ".join(item.python() for item in self.items) + ")"

    def __str__(self) -> str:
        return " or ".join(_wrap(item) for item in self.items)


def compile_expression(
    expression: str, fallback: Callable[[Signals], bool]
) -> Callable[[Signals], bool]:
    """``lambda s: <expression>`` as a function, or ``fallback`` if Python cannot compile it
    (nesting deeper than its parser allows)."""
    try:
        fn: Callable[[Signals], bool] = eval(f"lambda s: {expression}", {"__builtins__": {}})
    except (SyntaxError, RecursionError, MemoryError):  # pragma: no cover -- absurd nesting
        return fallback
    return fn


def compile_condition(cond: Condition) -> Callable[[Signals], bool]:
    """``cond.evaluate`` as one Python function, built once at load.

    Same value, and the same names read in the same order with the same short-circuits, so a
    missing name (a failed detector) raises the same ``KeyError`` at the same point. Signal
    values are booleans, so ``and``/``or`` give booleans, as ``all``/``any`` do.
    """
    return compile_expression(cond.python(), cond.evaluate)


def resolve(values: Signals, resolvers: Resolvers) -> dict[str, bool]:
    """``values`` plus the value of each composite of ``resolvers``, in order; a composite over
    a failed detector (a missing value, so a ``KeyError``) stays absent."""
    out = dict(values)
    for name, value in resolvers:
        try:
            out[name] = value(out)
        except KeyError:
            pass
    return out


def _wrap(cond: Condition) -> str:
    return str(cond) if isinstance(cond, (Name, Not)) else f"({cond})"


_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9_.\-]+)|(\S))")
_KEYWORDS = frozenset({"and", "or", "not"})


def _tokenise(text: str) -> list[str]:
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        if m.group(4) is not None:
            raise ValueError(f"unexpected character {m.group(4)!r} in condition {text!r}")
        tokens.append(m.group(1) or m.group(2) or m.group(3))
    return tokens


class _Parser:
    """Recursive descent: or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*;
    unary := 'not' unary | '(' or_expr ')' | NAME."""

    def __init__(self, text: str, check: Callable[[str], None]) -> None:
        self.text = text
        self.tokens = _tokenise(text)
        self.pos = 0
        self.check = check

    def parse(self) -> Condition:
        if not self.tokens:
            raise ValueError("empty condition")
        cond = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.pos]!r} in condition {self.text!r}")
        return cond

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Condition:
        items = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else Any(tuple(items))

    def _and(self) -> Condition:
        items = [self._unary()]
        while self._peek() == "and":
            self.pos += 1
            items.append(self._unary())
        return items[0] if len(items) == 1 else All(tuple(items))

    def _unary(self) -> Condition:
        tok = self._peek()
        if tok is None:
            raise ValueError(f"condition {self.text!r} ends too early")
        self.pos += 1
        if tok == "not":
            return Not(self._unary())
        if tok == "(":
            cond = self._or()
            if self._peek() != ")":
                raise ValueError(f"missing ')' in condition {self.text!r}")
            self.pos += 1
            return cond
        if tok == ")" or tok in _KEYWORDS:
            raise ValueError(f"unexpected {tok!r} in condition {self.text!r}")
        self.check(tok)
        return Name(tok)


def parse_condition(value: object, known: Container[str]) -> Condition:
    """Compile a condition (string or structure); every name must be in ``known``."""

    def check(name: str) -> None:
        if name not in known:
            raise ValueError(f"unknown detector {name!r} in condition")

    if isinstance(value, str):
        return _Parser(value, check).parse()
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError("a structured condition is a mapping with one key: all, any or not")
        ((key, inner),) = value.items()
        if key == "not":
            return Not(parse_condition(inner, known))
        if key in ("all", "any"):
            if not isinstance(inner, list) or not inner:
                raise ValueError(f"'{key}' takes a non-empty list of conditions")
            items = tuple(parse_condition(item, known) for item in inner)
            return All(items) if key == "all" else Any(items)
        raise ValueError(f"unknown condition key {key!r} (expected all, any or not)")
    raise ValueError(
        f"a condition is a string or a mapping, not {type(value).__name__}"
        + (" (quote it: YAML reads yes/no/on/off as booleans)" if isinstance(value, bool) else "")
    )
