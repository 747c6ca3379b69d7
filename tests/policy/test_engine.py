"""Evaluation: actions, their order, variants, shadow mode, errors, locales (engine.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.policy.conditions import Name

from tests.kit.paths import POLICY_FIXTURES


from .conftest import user


def test_unchanged_reply_is_returned_exactly(actions: PolicySet) -> None:
    reply = "  Nothing to see.\n\nReally nothing!  "
    v = actions.evaluate(user("fine"), reply)
    assert v.reply == reply and not v.changed and not v.blocked
    assert v.hits == () and v.strongest_action == "none"


def test_remove_beats_replace_and_most_severe_replace_wins(actions: PolicySet) -> None:
    v = actions.evaluate(user("fine"), "One badword. Two worseword. Three.")
    assert v.reply == "[high] Three."
    assert [h.policy for h in v.hits] == ["s.replace.high", "s.remove", "s.replace.low"]
    assert v.strongest_action == "remove"


def test_remove_wins_before_any_replacement_was_placed(actions: PolicySet) -> None:
    v = actions.evaluate(user("fine"), "Two worseword. One badword.")
    assert v.reply == "[high]"


def test_replacement_text_is_placed_once(actions: PolicySet) -> None:
    v = actions.evaluate(user("fine"), "A badword.\nB badword. C fine.")
    assert v.reply == "[high]\nC fine."


def test_prepend_and_append_order(actions: PolicySet) -> None:
    v = actions.evaluate(user("I am sad"), "Hi there.\n")
    assert v.reply == "P-crit\n\nHi there.\n\nA-high\n\nA-low"
    assert [h.policy for h in v.hits] == ["e.prepend.crit", "e.append.high", "e.append.low"]
    assert v.strongest_action == "prepend" and v.changed


def test_most_severe_block_wins_and_stops(actions: PolicySet) -> None:
    v = actions.evaluate(user("I am sad"), "A stopword. A badword.")
    assert v.reply == "BLOCK-high" and v.blocked and v.strongest_action == "block"
    v = actions.evaluate(user("fine"), "A stopword.")
    assert v.reply == "BLOCK-medium"


def test_shadow_mode_records_and_changes_nothing(actions: PolicySet) -> None:
    v = actions.evaluate(user("fine"), "hello there")
    (hit,) = v.hits
    assert (hit.policy, hit.mode, hit.action) == ("z.shadow", "shadow", "append")
    assert v.reply == "hello there" and not v.changed and v.strongest_action == "none"


def test_internal_detectors_are_not_published(actions: PolicySet) -> None:
    v = actions.evaluate(user("fine"), "fragile")
    assert "reply.fragile" not in v.signals and "reply.hello" in v.signals


class _Raising(dict[str, bool]):
    """Signals whose ``name`` raises when read."""

    def __init__(self, signals: Mapping[str, bool], name: str) -> None:
        super().__init__(signals)
        self.name = name

    def __getitem__(self, key: str) -> bool:
        if key == self.name:
            raise RuntimeError("boom with user text that must not leak")
        return super().__getitem__(key)


def _break(monkeypatch: pytest.MonkeyPatch, name: str, *sets: PolicySet) -> None:
    """Make reading ``name`` in a condition raise: in condition trees (``unless``) and in the
    conditions the given policy sets compiled at load."""
    original = Name.evaluate

    def failing(self: Name, signals: object) -> bool:
        if self.name == name:
            raise RuntimeError("boom with user text that must not leak")
        return original(self, signals)  # type: ignore[arg-type]

    monkeypatch.setattr(Name, "evaluate", failing)

    def raising(fn: Callable[[Mapping[str, bool]], bool]) -> Callable[[Mapping[str, bool]], bool]:
        return lambda signals: fn(_Raising(signals, name))

    for ps in sets:
        for pid, fn in list(ps.conditions.items()):
            monkeypatch.setitem(ps.conditions, pid, raising(fn))


def test_on_error_open_keeps_the_reply(actions: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    _break(monkeypatch, "reply.fragile", actions)
    v = actions.evaluate(user("fine"), "fragile hello")
    by = {h.policy: h for h in v.hits}
    assert by["f.open"].error and "must not leak" not in by["f.open"].error
    assert by["f.open"].action == "append"
    # f.closed fails closed: the reply is blocked with the generic safe text
    assert by["f.closed"].action == "block" and by["f.closed"].error
    assert v.blocked and v.reply != "fragile hello" and "support" in v.reply


def test_on_error_open_alone_changes_nothing(
    actions: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = PolicySet(
        policies=[p for p in actions.policies if p.id != "f.closed"],
        leaves=[d for d in actions.detectors.values() if hasattr(d, "scope")],  # type: ignore[misc]
        composites=[],
        resources=actions.resources,
    )
    _break(monkeypatch, "reply.fragile", ps)
    v = ps.evaluate(user("fine"), "fragile")
    assert v.reply == "fragile" and not v.changed
    assert [(h.policy, h.error is not None) for h in v.hits] == [("f.open", True)]


def test_variants_skip_text_said_before(basic: PolicySet) -> None:
    reply = "I will always be here."
    first = basic.evaluate(user("will you stay?"), reply).reply
    again = basic.evaluate(user("will you stay?"), reply).reply
    assert first == again  # deterministic
    conv = Conversation.of(("user", "will you stay?"), ("assistant", first), ("user", "really?"))
    second = basic.evaluate(conv, reply).reply
    assert second != first
    assert {first, second} == {"I'm glad to keep talking.", "I'm here for this conversation."}


def test_locales_and_aliases(basic: PolicySet) -> None:
    conv = user("I feel hopeless")
    assert basic.evaluate(conv, "Ok.").locale == "en-US"
    assert basic.evaluate(conv, "Ok.", locale="en-UK").reply.endswith("call 116 123 (Samaritans).")
    assert basic.evaluate(conv, "Ok.", locale="en-gb").locale == "en-GB"
    assert basic.evaluate(conv, "Ok.", locale="fr-FR").locale == "intl"
    assert basic.default_locale == "en-US" and basic.locales == ("en-US", "en-GB", "intl")


def test_to_dict_shape(basic: PolicySet) -> None:
    d = basic.evaluate(user("I feel hopeless"), "Ok.").to_dict()
    assert set(d) == {"hits", "signals"}
    assert d["hits"] == [
        {
            "policy": "referral.missing",
            "category": "referral",
            "severity": "critical",
            "action": "append",
            "mode": "enforce",
        }
    ]
    assert all(isinstance(v, bool) for v in d["signals"].values())


def test_needs_reply(basic: PolicySet) -> None:
    assert basic.policy("dependency.always").needs_reply
    assert basic.policy("referral.missing").needs_reply  # reads reply.referral
    assert basic.policy("dependency.always").locators == {"reply.always_here"}


@pytest.mark.parametrize(
    ("conv", "reply"),
    [
        (user("I am down"), "That's brilliant. Forever yours. Bye."),
        (user("hello"), "You are a genius! Forever yours."),
        (user("I feel low"), "Plain text."),
        (user("fine"), "Nothing at all."),
    ],
)
def test_file_order_does_not_change_verdicts(
    tmp_path: Path, conv: Conversation, reply: str
) -> None:
    src = POLICY_FIXTURES / "ordering"
    forward = load_policies(src)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(src / "a_validation.yaml", swapped / "z_validation.yaml")
    shutil.copy(src / "b_referral.yaml", swapped / "a_referral.yaml")
    backward = load_policies(swapped)
    one = forward.evaluate(conv, reply)
    two = backward.evaluate(conv, reply)
    assert one == two
    assert [p.id for p in forward.policies] == [p.id for p in backward.policies]


def test_ordering_fixture_details() -> None:
    ps = load_policies(POLICY_FIXTURES / "ordering")
    v = ps.evaluate(user("I am down"), "That's brilliant. Forever yours. Bye.")
    # equal severity: ids decide; dep.forever (d) beats val.flattery (v) for the replacement
    assert v.reply == "BLOCKED"
    v = ps.evaluate(user("hello"), "You are a genius! Forever yours.")
    assert v.reply == "P-dep\n\nFOREVER\n\nA-val"


def test_scan_rejects_feeding_after_finish(basic: PolicySet) -> None:
    scan = basic.start(user("hi"))
    scan.feed_sentence("Hello.")
    verdict = scan.finish()
    assert scan.finish() is verdict
    with pytest.raises(RuntimeError):
        scan.feed_sentence("more")


def test_policy_without_resources_cannot_use_templates(write: Callable[..., Path]) -> None:
    folder = write("""\
        detectors:
          r: {scope: reply, phrases: [x]}
        policies:
          - id: p
            category: c
            description: d
            severity: low
            condition: r
            actions: [{append: {text: "literal text"}}]
        """)
    ps = load_policies(folder)
    assert ps.evaluate(Conversation(), "x").reply == "x\n\nliteral text"
    assert ps.default_locale == "und"
