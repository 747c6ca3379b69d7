"""Condition expressions, string and structured (conditions.py)."""

from __future__ import annotations

import itertools

import pytest

from guardrail.policy.conditions import (
    All,
    Any,
    Name,
    Not,
    compile_condition,
    compile_expression,
    parse_condition,
)
from guardrail.policy.detectors import Composite

KNOWN = {"a", "b", "c", "user.x-y_z"}


def _truth(cond: object) -> list[bool]:
    tree = parse_condition(cond, KNOWN)
    return [
        tree.evaluate({"a": a, "b": b, "c": c, "user.x-y_z": False})
        for a, b, c in itertools.product((False, True), repeat=3)
    ]


def _expected(fn: object) -> list[bool]:
    assert callable(fn)
    return [bool(fn(a, b, c)) for a, b, c in itertools.product((False, True), repeat=3)]


@pytest.mark.parametrize(
    ("text", "fn"),
    [
        ("a and b or c", lambda a, b, c: (a and b) or c),
        ("a or b and c", lambda a, b, c: a or (b and c)),
        ("not a and b", lambda a, b, c: (not a) and b),
        ("not (a and b)", lambda a, b, c: not (a and b)),
        ("(a or b) and not c", lambda a, b, c: (a or b) and not c),
        ("not not a", lambda a, b, c: a),
        ("a and (b or (c and not a))", lambda a, b, c: a and (b or (c and not a))),
    ],
)
def test_string_precedence(text: str, fn: object) -> None:
    assert _truth(text) == _expected(fn)


def test_structured_forms_match_strings() -> None:
    structured = {"all": [{"any": ["a", "b"]}, {"not": "c"}]}
    assert _truth(structured) == _truth("(a or b) and not c")
    assert _truth({"any": ["a and b", "c"]}) == _truth("a and b or c")


def test_tree_shape_and_names() -> None:
    tree = parse_condition("a and not (b or user.x-y_z)", KNOWN)
    assert tree == All((Name("a"), Not(Any((Name("b"), Name("user.x-y_z"))))))
    assert tree.names() == {"a", "b", "user.x-y_z"}
    assert str(tree) == "a and not (b or user.x-y_z)"


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ("a and", "ends too early"),
        ("a b", "unexpected 'b'"),
        ("(a or b", "missing ')'"),
        ("a or )", "unexpected ')'"),
        ("a && b", "unexpected character '&'"),
        ("", "empty condition"),
        ("nope", "unknown detector 'nope'"),
        ({"all": []}, "non-empty list"),
        ({"some": ["a"]}, "unknown condition key 'some'"),
        ({"all": ["a"], "any": ["b"]}, "one key"),
        (True, "quote it"),
        ({"not": "zzz"}, "unknown detector 'zzz'"),
    ],
)
def test_errors(cond: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_condition(cond, KNOWN)


_EXPRESSIONS = [
    "a",
    "not a",
    "a and b",
    "a or b and not c",
    "not (a or b) and (c or not user.x-y_z)",
    "a and b and c or user.x-y_z",
    "(a or b) and (c or user.x-y_z) and not (a and user.x-y_z)",
]


@pytest.mark.parametrize("text", _EXPRESSIONS)
def test_compiled_conditions_read_what_evaluate_reads(text: str) -> None:
    """Same value, and a missing name (a failed detector) raises at the same point."""
    cond = parse_condition(text, KNOWN)
    compiled = compile_condition(cond)
    names = sorted(KNOWN)
    for values in itertools.product((True, False, None), repeat=len(names)):
        signals = {n: v for n, v in zip(names, values) if v is not None}
        try:
            expected: object = cond.evaluate(signals)
        except KeyError as exc:
            expected = ("KeyError", exc.args)
        try:
            got: object = compiled(signals)
        except KeyError as exc:
            got = ("KeyError", exc.args)
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("mode", "at_least"), [("any", 1), ("any", 2), ("any", 3), ("all", 1), ("none", 1)]
)
def test_compiled_composites_give_their_value(mode: str, at_least: int) -> None:
    composite = Composite("c", ("p", "q", "r"), mode, at_least=at_least)
    compiled = compile_expression(composite.python(), composite.value)
    for values in itertools.product((True, False, None), repeat=3):
        signals = {n: v for n, v in zip("pqr", values) if v is not None}
        try:
            expected: object = composite.value(signals)
        except KeyError:
            expected = KeyError
        try:
            got: object = compiled(signals)
        except KeyError:
            got = KeyError
        assert got == expected and type(got) is type(expected)
