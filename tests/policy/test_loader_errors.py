"""Every malformed policy set fails at load with file, line and policy id (loader.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from guardrail.errors import PolicyError
from guardrail.policy import load_policies

HEAD = """\
lists:
  words: [alpha, beta]
detectors:
  reply.word: {scope: reply, lists: [words]}
  user.word: {scope: last_user, phrases: [gamma]}
resources:
  default_locale: en-US
  locales:
    en-US: {crisis_line: "988", source: "https://988lifeline.org/"}
"""

POLICY = """\
policies:
  - id: p.one
    category: validation
    description: a policy
    severity: low
    condition: reply.word
"""

# Each case: (name, YAML to add after HEAD, message fragment, policy id or None).
# The expected line is the one marked "# <-".
CASES = [
    ("bad syntax", "policies: [\n  - id: p.one # <-\n   oops: : :\n", "invalid YAML", None),
    ("unknown top key", "polices: []  # <-\n", "unknown key 'polices'", None),
    (
        "unknown policy key",
        POLICY + "    acton: [annotate]  # <-\n",
        "unknown key 'acton'",
        "p.one",
    ),
    (
        "wrong type",
        POLICY.replace("severity: low", "severity: [low]  # <-"),
        "'severity' of a policy must be a string",
        "p.one",
    ),
    (
        "bad severity",
        POLICY.replace("severity: low", "severity: urgent  # <-"),
        "must be one of low, medium, high, critical",
        "p.one",
    ),
    (
        "missing description",
        POLICY.replace("    description: a policy\n", "").replace(
            "  - id: p.one", "  - id: p.one  # <-"
        ),
        "lacks required key 'description'",
        "p.one",
    ),
    (
        "bad regex",
        "detectors:\n  reply.re:\n    scope: reply\n    regex:\n      - '(unclosed'  # <-\n",
        "bad regex",
        None,
    ),
    (
        "catastrophic regex",
        "detectors:\n  reply.re:\n    scope: reply\n    regex:\n      - '(a+)+$'  # <-\n"
        + POLICY.replace("condition: reply.word", "condition: reply.word or reply.re"),
        "detector 'reply.re' (read by 'p.one'): regex '(a+)+$' backtracks catastrophically",
        "p.one",
    ),
    (
        "unknown list",
        "detectors:\n  reply.l:\n    scope: reply\n    lists: [nope]  # <-\n",
        "unknown list 'nope'",
        None,
    ),
    (
        "missing detector",
        POLICY.replace("condition: reply.word", "condition: reply.word and reply.foo  # <-"),
        "unknown detector 'reply.foo' in condition",
        "p.one",
    ),
    (
        "condition syntax",
        POLICY.replace("condition: reply.word", "condition: reply.word and  # <-"),
        "ends too early",
        "p.one",
    ),
    (
        "unknown resource key",
        POLICY + "    actions:\n      - append: {text: 'call {hotline}'}  # <-\n",
        "unknown resource key {hotline}",
        "p.one",
    ),
    (
        "action without text",
        POLICY + "    actions:\n      - append: {}  # <-\n",
        "needs a 'text'",
        "p.one",
    ),
    ("bare remove", POLICY + "    actions:\n      - remove  # <-\n", "'remove: sentence'", "p.one"),
    (
        "unknown action",
        POLICY + "    actions:\n      - shout: {text: hi}  # <-\n",
        "unknown action 'shout'",
        "p.one",
    ),
    (
        "sentence action without locator",
        POLICY.replace("condition: reply.word", "condition: user.word")
        + "    actions:  # <-\n      - remove: sentence\n",
        "condition names none",
        "p.one",
    ),
    (
        "cycle",
        "detectors:\n  c.a: {any_of: [c.b]}  # <-\n  c.b: {all_of: [c.a]}\n",
        "cycle: c.a -> c.b -> c.a",
        None,
    ),
    (
        "composite with scope",
        "detectors:\n  c.a:\n    any_of: [user.word]\n    scope: reply  # <-\n",
        "cannot be combined with any_of/all_of",
        None,
    ),
    (
        "turns on reply scope",
        "detectors:\n  reply.t:\n    scope: reply\n    turns: 2  # <-\n    phrases: [x]\n",
        "'turns' applies only",
        None,
    ),
    (
        "boolean phrase",
        "detectors:\n  reply.b:\n    scope: reply\n    phrases:\n      - no  # <-\n",
        "quote it",
        None,
    ),
    (
        "duplicate key",
        "detectors:\n  reply.x: {scope: reply, phrases: [a]}\n"
        + "  reply.x: {scope: reply, phrases: [b]}  # <-\n",
        "duplicate key 'reply.x'",
        None,
    ),
    (
        "bad test case",
        POLICY + "    tests:\n      hit:\n        - reply: hi\n          usr: x  # <-\n",
        "unknown key 'usr'",
        "p.one",
    ),
    (
        "duplicate policy id",
        POLICY + "  - id: p.one  # <-\n    category: c\n    description: d\n"
        "    severity: low\n    condition: reply.word\n",
        "policy id defined twice",
        "p.one",
    ),
    (
        "two composite modes",
        "detectors:\n  c.a:\n    any_of: [user.word]\n    none_of: [reply.word]  # <-\n",
        "pick one",
        None,
    ),
    (
        "at_least too high",
        "detectors:\n  c.a:\n    any_of: [user.word, reply.word]\n    at_least: 3  # <-\n",
        "'at_least' must be between 1 and the number of parts (2)",
        None,
    ),
    (
        "at_least without any_of",
        "detectors:\n  c.a:\n    all_of: [user.word]\n    at_least: 1  # <-\n",
        "'at_least' goes with any_of only",
        None,
    ),
    (
        "first_sentences on a context scope",
        "detectors:\n  user.f:\n    scope: last_user\n    first_sentences: 2  # <-\n    phrases: [x]\n",
        "'first_sentences' applies only to scope reply or sentence",
        None,
    ),
    (
        "unless reads the conversation",
        POLICY + "    actions:\n      - append: {text: hi, unless: user.word}  # <-\n",
        "'unless' may read only reply detectors, not user.word",
        "p.one",
    ),
    (
        "unless holds for an empty reply",
        POLICY + "    actions:\n      - append: {text: hi, unless: not reply.word}  # <-\n",
        "must not hold for an empty reply",
        "p.one",
    ),
    (
        "unless on a replace",
        POLICY + "    actions:\n      - replace: {text: hi, unless: reply.word}  # <-\n",
        "unknown key 'unless'",
        "p.one",
    ),
    (
        "regenerate without instruction",
        POLICY + "    actions: [annotate]\n    regenerate: {fallback: annotate}  # <-\n",
        "lacks required key 'instruction'",
        "p.one",
    ),
    (
        "regenerate with an undeclared fallback",
        POLICY + "    actions: [annotate]\n    regenerate:\n      instruction: reflect first\n"
        "      fallback: block  # <-\n",
        "fallback 'block' is not one of this policy's actions (annotate)",
        "p.one",
    ),
    (
        "regenerate with an unknown resource key",
        POLICY + "    regenerate:\n      instruction: 'give {hotline} first'  # <-\n",
        "unknown resource key {hotline}",
        "p.one",
    ),
]


def _compose(body: str) -> str:
    """HEAD plus ``body``; extra detectors go into HEAD's own detectors section."""
    if body.startswith("detectors:\n"):
        return HEAD.replace("resources:\n", body[len("detectors:\n") :] + "resources:\n", 1)
    return HEAD + body


def _marked_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if "# <-" in line:
            return number
    raise AssertionError("no marker")


@pytest.mark.parametrize(
    ("name", "body", "fragment", "policy_id"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_policy_names_file_line_and_id(
    tmp_path: Path, name: str, body: str, fragment: str, policy_id: str | None
) -> None:
    text = _compose(body)
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    err = info.value
    assert fragment in str(err), str(err)
    assert err.file == str(path)
    assert err.line == _marked_line(text), str(err)
    assert err.policy_id == policy_id
    rendered = str(err)
    assert rendered.startswith(f"{path}:{err.line}: ")
    if policy_id:
        assert f"policy '{policy_id}': " in rendered


def test_duplicate_names_across_files_name_both(write: Callable[..., Path]) -> None:
    write("detectors:\n  reply.x: {scope: reply, phrases: [a]}\n", "a.yaml")
    folder = write("lists: {}\ndetectors:\n  reply.x: {scope: reply, phrases: [b]}\n", "b.yaml")
    with pytest.raises(PolicyError) as info:
        load_policies(folder)
    assert info.value.file == str(folder / "b.yaml")
    assert info.value.line == 3
    assert f"{folder / 'a.yaml'}:2" in str(info.value)


def test_duplicate_policy_ids_across_files(write: Callable[..., Path]) -> None:
    policy = textwrap.dedent("""\
        detectors:
          reply.{n}: {{scope: reply, phrases: [a]}}
        policies:
          - id: same.id
            category: c
            description: d
            severity: low
            condition: reply.{n}
        """)
    write(policy.format(n="a"), "a.yaml")
    folder = write(policy.format(n="b"), "b.yaml")
    with pytest.raises(PolicyError) as info:
        load_policies(folder)
    assert info.value.policy_id == "same.id"
    assert info.value.file == str(folder / "b.yaml")
    assert info.value.line == 4


def test_locales_must_share_keys(write: Callable[..., Path]) -> None:
    folder = write("""\
        resources:
          default_locale: en-US
          locales:
            en-US: {crisis_line: a, emergency: "911", source: x}
            en-GB: {crisis_line: b, source: y}
        """)
    with pytest.raises(PolicyError, match="different keys than 'en-US': emergency") as info:
        load_policies(folder)
    assert info.value.line == 5


def test_locale_must_cite_source(write: Callable[..., Path]) -> None:
    folder = write("""\
        resources:
          default_locale: en-US
          locales:
            en-US: {crisis_line: a}
        """)
    with pytest.raises(PolicyError, match="must cite a 'source'"):
        load_policies(folder)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policies(tmp_path / "nope")
    with pytest.raises(PolicyError, match=r"no \*.yaml"):
        load_policies(tmp_path)


def test_valid_head_loads(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(HEAD + POLICY, encoding="utf-8")
    ps = load_policies(tmp_path)
    assert [p.id for p in ps.policies] == ["p.one"]
    assert ps.locales == ("en-US",)
    assert len(ps.digest) == 12
