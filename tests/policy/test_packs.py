"""Packs compose (issue 13, item 2): a list of sources applied in order, ``default`` naming the
bundled pack, later sources using earlier ones' names, and the ``overrides:`` block.

Most tests stack a small folder on the ``basic`` fixture (a cheap stand-in for a pack); the first
ones use the real bundled pack, as the person who asked for this would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guardrail.errors import PolicyError
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.sources import DEFAULT_PACK, parse_sources
from guardrail.proxy.reload import fingerprint
from guardrail.config.settings import DEFAULT_POLICIES

from tests.kit.paths import POLICY_FIXTURES as FIXTURES

from .conftest import user

BASIC = FIXTURES / "basic"


def folder(tmp_path: Path, text: str, name: str = "mine.yaml", sub: str = "mine") -> Path:
    """Write dedented YAML to tmp_path/<sub>/<name>; return the folder."""
    where = tmp_path / sub
    where.mkdir(exist_ok=True)
    (where / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return where


def line_of(path: Path, marker: str) -> int:
    """The 1-based line of ``path`` holding ``marker``."""
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if marker in text:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


# --------------------------------------------------------------------------- the bundled pack

CLINIC = """\
    detectors:
      reply.clinic_hours:
        description: the reply gives the clinic's opening hours
        scope: reply
        lists: [clinic_words]
    lists:
      clinic_words: ["clinic hours", "opening hours"]
    policies:
      - id: clinic.night_line
        category: referral
        description: A distressed person asking when the clinic opens also gets the crisis line.
        severity: medium
        condition: user.distress and reply.clinic_hours
        actions:
          - append: {text: "Before then, {crisis_line} is there: {crisis_contact}."}
    overrides:
      policies:
        validation.pure: {enabled: false}
        referral.distress: {mode: shadow}
      resources:
        locales:
          en-GB:
            crisis_line: Shout
            crisis_contact: text SHOUT to 85258
            source: https://giveusashout.org/
    """


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> tuple[PolicySet, Path]:
    mine = folder(tmp_path_factory.mktemp("clinic"), CLINIC)
    return load_policies(["default", mine]), mine


def test_a_folder_of_its_own_uses_the_packs_signals_lists_and_resources(
    clinic: tuple[PolicySet, Path], tmp_path: Path
) -> None:
    ps, mine = clinic
    conv = user("I feel so hopeless and alone lately.")
    verdict = ps.evaluate(conv, "Our clinic hours are 9 to 5.", locale="en-US")
    assert "clinic.night_line" in [h.policy for h in verdict.hits]
    assert verdict.reply.endswith(
        "Before then, the 988 Suicide & Crisis Lifeline is there: call or text 988 any time, "
        "or chat at 988lifeline.org."
    )
    assert verdict.signals["user.distress"] and verdict.signals["reply.clinic_hours"]
    # alone, the same folder does not load: it is the pack that makes its names known
    with pytest.raises(PolicyError, match="unknown detector 'user.distress'") as info:
        load_policies(mine)
    assert info.value.file == str(mine / "mine.yaml")
    assert info.value.policy_id == "clinic.night_line"


def test_an_override_changes_a_resource_for_one_locale_only(
    clinic: tuple[PolicySet, Path],
) -> None:
    ps, _ = clinic
    crisis = user("I want to end my life.")
    gb = ps.evaluate(crisis, "I'm here.", locale="en-GB").reply
    us = ps.evaluate(crisis, "I'm here.", locale="en-US").reply
    assert "Shout" in gb and "text SHOUT to 85258" in gb and "Samaritans" not in gb
    assert "988 Suicide & Crisis Lifeline" in us and "Shout" not in us
    assert ps.resources.locales["en-GB"]["source"] == "https://giveusashout.org/"
    assert ps.resources.locales["en-GB"]["emergency"] == "999 (or 112)"  # the rest stays


def test_a_shadowed_pack_policy_hits_and_counts_but_changes_nothing(
    clinic: tuple[PolicySet, Path],
) -> None:
    ps, _ = clinic
    pack = load_policies("default")
    conv = user("I feel so alone lately and I can't cope.")
    reply = "That sounds hard. What happened today?"
    enforced = pack.evaluate(conv, reply)
    assert [h.mode for h in enforced.hits if h.policy == "referral.distress"] == ["enforce"]
    assert enforced.reply != reply  # the pack alone appends its nudge
    shadowed = ps.evaluate(conv, reply)
    [hit] = [h for h in shadowed.hits if h.policy == "referral.distress"]
    assert hit.mode == "shadow" and hit.error is None
    assert shadowed.reply == reply and not shadowed.changed
    assert ps.policy("referral.distress").mode == "shadow"
    assert ps.composition.changes["referral.distress"][0].endswith(": mode: shadow")


def test_a_turned_off_pack_policy_neither_runs_nor_counts(clinic: tuple[PolicySet, Path]) -> None:
    ps, mine = clinic
    pack = load_policies("default")
    conv = user("What do you think of my plan to quit my job and travel?")
    reply = "That's a brilliant idea! You should absolutely do it."
    assert "validation.pure" in [h.policy for h in pack.evaluate(conv, reply).hits]
    assert "validation.pure" not in [h.policy for h in ps.evaluate(conv, reply).hits]
    assert "validation.pure" not in [p.id for p in ps.policies]
    assert len(ps.policies) == len(pack.policies)  # one off, one added
    [off] = ps.composition.disabled
    assert off.id == "validation.pure" and off.tests  # kept for `guardrail test` to report
    where = f"{mine / 'mine.yaml'}:{line_of(mine / 'mine.yaml', 'validation.pure')}"
    assert ps.composition.changes["validation.pure"] == (f"{where}: enabled: false",)


def test_default_names_the_bundled_pack_everywhere() -> None:
    assert DEFAULT_POLICIES == DEFAULT_PACK
    assert parse_sources("default") == DEFAULT_PACK
    assert parse_sources(["default"]) == DEFAULT_PACK  # one source stays a plain path
    assert parse_sources("default, ./mine", Path("/etc/g")) == (DEFAULT_PACK, Path("/etc/g/mine"))
    assert parse_sources([Path("/abs"), "rel"], Path("/base")) == (Path("/abs"), Path("/base/rel"))
    assert parse_sources("./default", Path("/b")) == Path("/b/default")  # a folder of that name
    assert parse_sources("a,b", commas=False) == Path("a,b")  # a program's string is one path
    for bad, why in (
        ([], "at least one"),
        ("a,,b", "empty item"),
        (["default", "default"], "names 'default' twice"),
        ([1], "each item"),
        ({"a": 1}, "must be"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_sources(bad)


# --------------------------------------------------------------------------- use and redefine


def test_names_of_an_earlier_source_are_used_and_sources_load_in_order(tmp_path: Path) -> None:
    mine = folder(
        tmp_path,
        """\
        detectors:
          user.money:
            scope: last_user
            lists: [distress_words]          # the first source's list
            phrases: [rent]
          both: {any_of: [user.money, user.risk]}   # and its composite
        policies:
          - id: mine.money
            category: referral
            description: d
            condition: both and not reply.referral
            actions: [{append: {text: "Talk to {crisis_line}."}}]
        """,
    )
    ps = load_policies([BASIC, mine])
    verdict = ps.evaluate(user("I can't pay the rent"), "Ok.")
    assert verdict.reply == "Ok.\n\nTalk to 988 Lifeline."
    assert ps.composition.sources == (str(BASIC), str(mine))
    assert ps.composition.origin["mine.money"] == 1
    assert ps.composition.origin["dependency.always"] == 0
    assert ps.source == f"{BASIC}, {mine}"
    assert load_policies([mine, BASIC]).digest != ps.digest  # order is part of the set


@pytest.mark.parametrize(
    ("text", "marker", "message", "policy_id"),
    [
        (
            "policies:\n  - id: dependency.always  # <-\n    category: c\n    description: d\n"
            "    condition: reply.praise\n",
            "# <-",
            "policy id defined twice",
            "dependency.always",
        ),
        (
            "detectors:\n  reply.praise: {scope: reply, phrases: [x]}  # <-\n",
            "# <-",
            "detector 'reply.praise' is defined twice",
            None,
        ),
        (
            "lists:\n  praise: [x]  # <-\n",
            "# <-",
            "list 'praise' is defined twice",
            None,
        ),
        (
            "resources:\n  locales:\n    en-GB:\n      crisis_line: Shout  # <-\n",
            "# <-",
            "resource 'crisis_line' of locale 'en-GB' is already defined",
            None,
        ),
        (
            "resources:\n  default_locale: en-GB  # <-\n",
            "# <-",
            "'default_locale' is already set",
            None,
        ),
    ],
    ids=["policy", "detector", "list", "resource", "default_locale"],
)
def test_a_later_source_redefining_a_name_is_an_error_naming_both_places(
    tmp_path: Path, text: str, marker: str, message: str, policy_id: str | None
) -> None:
    mine = folder(tmp_path, text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policies([BASIC, mine])
    err = info.value
    assert err.file == str(mine / "mine.yaml")
    assert err.line == line_of(mine / "mine.yaml", marker)
    assert err.policy_id == policy_id
    assert str(BASIC) in err.message  # the first place
    assert "overrides" in err.message  # and what to do instead


def test_within_one_source_a_duplicate_keeps_its_old_message(tmp_path: Path) -> None:
    one = folder(tmp_path, "lists:\n  a: [x]\n", "a.yaml")
    folder(tmp_path, "lists:\n  a: [y]\n", "b.yaml")
    with pytest.raises(PolicyError, match="list 'a' is defined twice") as info:
        load_policies(one)
    assert "overrides" not in info.value.message


def test_a_later_source_adds_a_locale_and_a_key_for_every_locale(tmp_path: Path) -> None:
    mine = folder(
        tmp_path,
        """\
        resources:
          locales:
            en-US: {clinic: the Main St clinic}
            en-GB: {clinic: the High St clinic}
            intl: {clinic: your clinic}
        """,
        "keys.yaml",
    )
    folder(
        tmp_path,
        """\
        resources:
          aliases: {de: de-DE}
          locales:
            de-DE:
              crisis_line: TelefonSeelsorge
              crisis_contact: "0800 111 0 111"
              emergency: "112"
              source: https://www.telefonseelsorge.de/
              clinic: die Klinik
        policies:
          - id: mine.clinic
            category: clinic
            description: d
            condition: user.distress
            actions: [{append: {text: "{clinic}: {crisis_line}"}}]
        """,
        "locale.yaml",
    )
    ps = load_policies([BASIC, mine])
    assert ps.evaluate(user("I feel hopeless"), "Ok.", locale="de").reply.endswith(
        "die Klinik: TelefonSeelsorge"
    )
    # a key given to some locales only is refused where it was added, not in the first source
    (mine / "keys.yaml").write_text("resources:\n  locales:\n    en-US: {clinic: x}  # here\n")
    (mine / "locale.yaml").unlink()
    message = "resource 'clinic' of locale 'en-US' is not defined for"
    with pytest.raises(PolicyError, match=message) as info:
        load_policies([BASIC, mine])
    assert (info.value.file, info.value.line) == (str(mine / "keys.yaml"), 3)


# --------------------------------------------------------------------------- overrides


def test_list_and_detector_phrases_are_appended_and_removed(tmp_path: Path) -> None:
    mine = folder(
        tmp_path,
        """\
        overrides:
          lists:
            distress_words: {append: ["at the end of my rope"], remove: [worthless]}
          detectors:
            user.crisis: {append: ["no way out"]}
            reply.referral: {remove: [Samaritans]}
        """,
    )
    ps = load_policies([BASIC, mine])
    base = load_policies(BASIC)
    rope, worthless = user("I'm at the end of my rope"), user("I feel worthless")
    assert ps.evaluate(rope, "Ok.").signals["user.distress"]
    assert not base.evaluate(rope, "Ok.").signals["user.distress"]
    assert not ps.evaluate(worthless, "Ok.").signals["user.distress"]
    assert ps.evaluate(user("I see no way out"), "Ok.").signals["user.crisis"]
    assert not ps.evaluate(rope, "Call Samaritans.").signals["reply.referral"]
    assert base.evaluate(rope, "Call Samaritans.").signals["reply.referral"]
    assert "at the end of my rope" in ps.lists["distress_words"]
    assert "worthless" not in ps.lists["distress_words"]


OVERRIDE_ERRORS = [
    (
        "overrides:\n  policies:\n    no.such.policy: {mode: shadow}  # <-\n",
        "unknown policy 'no.such.policy'",
        "no.such.policy",
    ),
    (
        "overrides:\n  policies:\n    referral.missing: {mode: loud}  # <-\n",
        "'mode' must be one of enforce, shadow",
        "referral.missing",
    ),
    (
        "overrides:\n  policies:\n    referral.missing: {enabled: nope}  # <-\n",
        "'enabled' of the override of policy 'referral.missing' must be true or false",
        "referral.missing",
    ),
    (
        "overrides:\n  policies:\n    referral.missing: {severity: low}  # <-\n",
        "unknown key 'severity'",
        "referral.missing",
    ),
    (
        "overrides:\n  policies:\n    referral.missing: {}  # <-\n",
        "sets 'mode' or 'enabled'",
        "referral.missing",
    ),
    ("overrides:\n  lists:\n    nope: {append: [x]}  # <-\n", "unknown list 'nope'", None),
    ("overrides:\n  lists:\n    praise: {remove: [gone]}  # <-\n", "no phrase 'gone'", None),
    ("overrides:\n  lists:\n    praise: {}  # <-\n", "appends or removes phrases", None),
    ("overrides:\n  detectors:\n    user.risk: {append: [x]}  # <-\n", "is a composite", None),
    ("overrides:\n  detectors:\n    reply.nope: {append: [x]}  # <-\n", "unknown detector", None),
    (
        "overrides:\n  resources:\n    locales:\n      fr-FR: {crisis_line: x}  # <-\n",
        "undefined locale 'fr-FR'",
        None,
    ),
    (
        "overrides:\n  resources:\n    locales:\n      en-GB:\n        new_key: x  # <-\n",
        "undefined resource 'new_key'",
        None,
    ),
    ("overrides:\n  severity: low  # <-\n", "unknown key 'severity' in 'overrides'", None),
]


@pytest.mark.parametrize(
    ("text", "message", "policy_id"), OVERRIDE_ERRORS, ids=[e[1][:30] for e in OVERRIDE_ERRORS]
)
def test_a_bad_override_is_an_error_with_file_line_and_policy_id(
    tmp_path: Path, text: str, message: str, policy_id: str | None
) -> None:
    mine = folder(tmp_path, text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policies([BASIC, mine])
    assert info.value.file == str(mine / "mine.yaml")
    assert info.value.line == line_of(mine / "mine.yaml", "# <-")
    assert info.value.policy_id == policy_id


def test_an_override_cannot_reach_forward_into_a_later_source(tmp_path: Path) -> None:
    early = folder(tmp_path, "overrides:\n  policies:\n    referral.missing: {mode: shadow}\n")
    with pytest.raises(PolicyError, match=r"defined in a later source \(.*policies.yaml:\d+\)"):
        load_policies([early, BASIC])


def test_later_overrides_win_and_enabled_true_turns_a_policy_back_on(tmp_path: Path) -> None:
    text = "overrides:\n  policies:\n    referral.missing: {enabled: off}\n"  # YAML's off: false
    off = folder(tmp_path, text, sub="a")
    on = folder(
        tmp_path,
        "overrides:\n  policies:\n    referral.missing: {enabled: true, mode: shadow}\n",
        sub="b",
    )
    assert "referral.missing" not in [p.id for p in load_policies([BASIC, off]).policies]
    ps = load_policies([BASIC, off, on])
    assert ps.policy("referral.missing").mode == "shadow" and not ps.composition.disabled
    assert len(ps.composition.changes["referral.missing"]) == 2


def test_a_turned_off_policy_is_still_checked(tmp_path: Path) -> None:
    """Turning a policy off does not hide a broken one: the set still loads only if it is good."""
    mine = folder(
        tmp_path,
        """\
        policies:
          - id: mine.broken
            category: c
            description: d
            condition: reply.nope   # <-
        overrides:
          policies:
            mine.broken: {enabled: false}
        """,
    )
    with pytest.raises(PolicyError, match="reply.nope") as info:
        load_policies([BASIC, mine])
    assert info.value.policy_id == "mine.broken"


# --------------------------------------------------------------------------- errors, second source


def test_an_error_in_the_second_source_names_its_file_line_and_policy(tmp_path: Path) -> None:
    mine = folder(
        tmp_path,
        """\
        policies:
          - id: mine.bad
            category: c
            description: d
            condition: user.risk and reply.missing   # <-
        """,
    )
    with pytest.raises(PolicyError) as info:
        load_policies([BASIC, mine])
    err = info.value
    assert (err.file, err.line, err.policy_id) == (str(mine / "mine.yaml"), 5, "mine.bad")
    assert "reply.missing" in str(err) and f"{mine / 'mine.yaml'}:5" in str(err)
    (mine / "mine.yaml").write_text("policies: [\n")  # and bad YAML
    with pytest.raises(PolicyError, match="invalid YAML") as info:
        load_policies([BASIC, mine])
    assert info.value.file == str(mine / "mine.yaml")
    with pytest.raises(PolicyError, match="no such policy file or folder") as info:
        load_policies([BASIC, tmp_path / "gone"])
    assert info.value.file == str(tmp_path / "gone")


def test_the_watchers_fingerprint_covers_every_source(tmp_path: Path) -> None:
    mine = folder(tmp_path, "lists:\n  a: [x]\n")
    before = fingerprint((BASIC, mine))
    assert fingerprint(BASIC) == before[: len(fingerprint(BASIC))]
    (mine / "mine.yaml").write_text("lists:\n  a: [x, y]\n")
    assert fingerprint((BASIC, mine)) != before
    (mine / "mine.yaml").unlink()
    mine.rmdir()
    assert fingerprint((BASIC, mine)) == fingerprint(BASIC)  # a vanished source: a change too


def test_the_digest_follows_every_source(tmp_path: Path) -> None:
    mine = folder(tmp_path, "lists:\n  a: [x]\n")
    first = load_policies([BASIC, mine]).digest
    (mine / "mine.yaml").write_text("lists:\n  a: [x, y]\n")
    assert load_policies([BASIC, mine]).digest != first


# --------------------------------------------------------------------------- the commands

TUNED = """\
    policies:
      - id: mine.lonely
        category: mine
        description: d
        condition: user.distress
        tests:
          hit:
            - user: I feel hopeless
              reply: Ok.
              expect: Ok.
          ok:
            - user: I feel fine
              reply: Ok.
    overrides:
      policies:
        dependency.always: {enabled: false}
        referral.missing: {mode: shadow}
    """


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "GUARDRAIL_POLICIES"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "guardrail", *args],
        capture_output=True, text=True, env=full, timeout=120, check=False,
    )


@pytest.mark.subprocess
def test_guardrail_test_runs_the_composed_set_and_reports_what_overrides_changed(
    tmp_path: Path,
) -> None:
    mine = folder(tmp_path, TUNED)
    proc = _run("test", str(BASIC), str(mine), "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # the turned-off policy's 2 cases are skipped, with the override's place
    where = f"{mine / 'mine.yaml'}:{line_of(mine / 'mine.yaml', 'dependency.always')}"
    assert f"SKIP dependency.always: 2 cases not run, the policy is turned off ({where}: " \
           "enabled: false)" in out
    # the shadowed policy still hits in its hit case; its 'expect' (the appended text) holds for
    # the first source alone, and the report says a later source changed the reply
    assert "PASS referral.missing:hit[0] (the reply is changed by a later source" in out
    assert "7 cases of 3/3 policies: 7 passed, 0 failed" in out
    assert "2 skipped (policy turned off), 1 changed by later sources" in out
    # the same sources through GUARDRAIL_POLICIES, comma-separated
    env = _run("test", env={"GUARDRAIL_POLICIES": f"{BASIC},{mine}"})
    assert env.returncode == 0 and "2 skipped (policy turned off)" in env.stdout


@pytest.mark.subprocess
def test_guardrail_test_fails_a_composed_case_that_breaks(tmp_path: Path) -> None:
    """A later source that stops a pack policy from hitting fails that policy's hit cases:
    what is only reported is the reply an override changed, never a lost hit."""
    mine = folder(tmp_path, "overrides:\n  lists:\n    distress_words: {remove: [hopeless]}\n")
    proc = _run("test", str(BASIC), str(mine))
    assert proc.returncode == 1
    assert "FAIL referral.missing hit case #0" in proc.stdout
    assert "expected a hit of referral.missing, got none" in proc.stdout


@pytest.mark.subprocess
def test_guardrail_check_and_test_take_default_and_report_a_bad_second_source(
    tmp_path: Path,
) -> None:
    mine = folder(tmp_path, CLINIC)
    case = {"id": "1", "messages": [{"role": "user", "content": "I feel so hopeless and alone."}],
            "reply": "Our clinic hours are 9 to 5.", "locale": "en-GB"}
    proc = subprocess.run(
        [sys.executable, "-m", "guardrail", "check", "--jsonl", "-",
         "--policies", "default", "--policies", str(mine)],
        input=json.dumps(case) + "\n", capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reply"].endswith("Before then, Shout is there: text SHOUT to 85258.")
    assert {h["policy"]: h["mode"] for h in result["hits"]}["referral.distress"] == "shadow"
    broken = textwrap.dedent(CLINIC).replace("user.distress and", "user.nope and")
    (mine / "mine.yaml").write_text(broken)
    bad = _run("test", f"default,{mine}")
    assert bad.returncode == 2
    assert f"{mine / 'mine.yaml'}:" in bad.stderr and "clinic.night_line" in bad.stderr
    assert "user.nope" in bad.stderr


def test_the_public_api_and_the_middleware_take_a_list(tmp_path: Path) -> None:
    import guardrail

    mine = folder(tmp_path, "overrides:\n  policies:\n    referral.missing: {enabled: false}\n")
    ps = guardrail.load_policies([str(BASIC), mine])
    assert [p.id for p in ps.composition.disabled] == ["referral.missing"]
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    guard = guardrail.GuardrailMiddleware(app, policies=[BASIC, mine], audit="off")
    assert [p.id for p in guard.policies.composition.disabled] == ["referral.missing"]
    hopeless = [{"role": "user", "content": "I feel hopeless"}]
    assert guardrail.check(ps, hopeless, "Ok.").reply == "Ok."  # turned off: nothing appended
