"""Policy regexes cannot stall the proxy (issue 11, defect 5 and must-be-true 4).

Every ``regex:`` entry runs under a CPU-time bound of the ``regex`` module
(``guardrail.policy.boundedregex``): a pattern that backtracks catastrophically is refused at
load (file, line, detector, policy id) when a text built from it blows the bound, and one that
slips past that probe still cannot run past the bound at request time: the detector fails and
each policy reading it follows its ``on_error``. With stdlib ``re`` each of these tests hangs.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.errors import PolicyError
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.policy.boundedregex import BoundedPattern, RegexTimeout, budget
from guardrail.policy.detectors import Leaf

from tests.kit.metrics import parse
from tests.kit.paths import DEFAULT_PACK
from tests.kit.serve import guardrail_serve, policy_copy
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream
from tests.kit.wire import chat_request

GENEROUS = 2.0
"""Seconds a whole evaluation with a hostile text may take here (the bound itself is about
30 ms for these texts; the rest is slack for a loaded machine)."""

# (pattern, a text on which stdlib re runs for hours or more)
CLASSICS = [
    (r"(a+)+$", "a" * 5000 + "!"),
    (r"(a*)*$", "a" * 5000 + "!"),
    (r"(a|aa)+$", "a" * 5000 + "!"),
    (r"(a|a?)+$", "a" * 5000 + "!"),
    (r"(\w+\s?)+$", "z" * 5000 + "!"),
    (r"^(([a-z])+.)+[A-Z]([a-z])+$", "aa" * 2500 + "!"),
    (r"(.*a){12}", ("b" * 400 + "a") * 11),
]
IDS = [p for p, _ in CLASSICS]


def pack(folder: Path, pattern: str, *, on_error: str = "open") -> Path:
    """A pack whose policy ``p.regex`` reads a last_user detector made of ``pattern``."""
    folder.mkdir(parents=True, exist_ok=True)
    quoted = "'" + pattern.replace("'", "''") + "'"
    (folder / "pack.yaml").write_text(
        textwrap.dedent(
            f"""\
            detectors:
              user.hostile:
                scope: last_user
                regex:
                  - {quoted}
            policies:
              - id: p.regex
                category: referral
                description: reads the hostile detector
                severity: high
                on_error: {on_error}
                condition: user.hostile
                actions:
                  - block: {{text: "withheld"}}
            resources:
              default_locale: en-US
              locales:
                en-US: {{crisis_line: "988", source: "https://988lifeline.org/"}}
            """
        ),
        encoding="utf-8",
    )
    return folder


def slipped(pattern: str, *, on_error: str, tmp_path: Path) -> PolicySet:
    """The pack of ``pack`` with ``pattern`` in its detector as if it had passed the load probe
    (assembled from a loaded pack with a harmless regex; the matcher is the real one)."""
    loaded = load_policies(pack(tmp_path / on_error, "harmless", on_error=on_error))
    hostile = (BoundedPattern(pattern, re.IGNORECASE),)
    leaves = [
        dataclasses.replace(leaf, patterns=hostile, prefilters=(None,))
        if leaf.name == "user.hostile"
        else leaf
        for leaf in loaded.detectors.values()
        if isinstance(leaf, Leaf)
    ]
    return PolicySet(
        policies=loaded.policies, leaves=leaves, composites=[], resources=loaded.resources
    )


@pytest.mark.parametrize(("pattern", "hostile"), CLASSICS, ids=IDS)
def test_classic_catastrophic_regex_is_refused_at_load(
    tmp_path: Path, pattern: str, hostile: str
) -> None:
    """A pack author (or an attacker with write access to the pack) ships a regex that
    backtracks catastrophically: the load fails naming file, line, detector and policy."""
    folder = pack(tmp_path, pattern)
    with pytest.raises(PolicyError) as info:
        load_policies(folder)
    err = info.value
    assert err.file == str(folder / "pack.yaml")
    assert err.line == 5  # the regex entry itself
    assert err.policy_id == "p.regex"
    assert "detector 'user.hostile'" in err.message
    assert "backtracks catastrophically" in err.message
    assert str(err).startswith(f"{folder / 'pack.yaml'}:5: policy 'p.regex': ")


@pytest.mark.parametrize("on_error", ["open", "closed"])
@pytest.mark.parametrize(("pattern", "hostile"), CLASSICS, ids=IDS)
def test_classic_regex_that_slips_through_runs_bounded(
    tmp_path: Path, pattern: str, hostile: str, on_error: str
) -> None:
    """The same regexes, had one slipped past the load probe, fed the text that makes them
    explode: the evaluation ends within the bound and the fault is the policy's on_error
    (open: the reply passes, the hit says why; closed: the reply is blocked)."""
    ps = slipped(pattern, on_error=on_error, tmp_path=tmp_path)
    start = time.perf_counter()
    verdict = ps.evaluate(Conversation.of(("user", hostile)), "A calm reply.")
    assert time.perf_counter() - start < GENEROUS
    [hit] = verdict.hits
    assert hit.policy == "p.regex" and hit.error == "detector 'user.hostile' raised RegexTimeout"
    if on_error == "open":
        assert verdict.reply == "A calm reply." and not verdict.blocked
    else:
        assert verdict.blocked and verdict.reply == "withheld"


def test_bounded_pattern_matches_like_re_and_stops_at_its_budget() -> None:
    """The bound changes nothing for an ordinary pattern and text, and is linear in the text:
    a hostile text gets a budget proportional to its length, then RegexTimeout."""
    pattern = r"\bwant(?:s|ed)? to (?:die|disappear)\b"
    text = "I wanted to disappear. Some days I want to die. " * 50
    bounded = BoundedPattern(pattern, re.IGNORECASE)
    expected = [m.span() for m in re.finditer(pattern, text, re.IGNORECASE)]
    assert [m.span() for m in bounded.finditer(text)] == expected
    assert budget(10_000) - budget(0) == pytest.approx(10 * (budget(1_000) - budget(0)))
    hostile = BoundedPattern(r"(a+)+$")
    start = time.process_time()
    with pytest.raises(RegexTimeout):
        list(hostile.finditer("a" * 5000 + "!"))
    assert time.process_time() - start < budget(5001) + 0.05


def test_phrase_with_a_spaced_hyphen_cannot_stall(tmp_path: Path) -> None:
    """Phrases are escaped literals, but a phrase such as "well - being" puts three whitespace
    repeats side by side in the phrase trie; a user message with a long run of spaces after
    "well" then took minutes under re. Such a trie runs under the bound."""
    (tmp_path / "pack.yaml").write_text(
        pack(tmp_path / "base", "x")
        .joinpath("pack.yaml")
        .read_text()
        .replace("regex:\n      - 'x'", "phrases: ['well - being']")
    )
    ps = load_policies(tmp_path / "pack.yaml")
    leaf = ps.detectors["user.hostile"]
    assert isinstance(leaf, Leaf) and isinstance(leaf.patterns[0], BoundedPattern)
    start = time.perf_counter()
    verdict = ps.evaluate(Conversation.of(("user", "well" + " " * 20_000 + "x")), "Okay.")
    assert time.perf_counter() - start < GENEROUS
    assert [h.error for h in verdict.hits] in ([], ["detector 'user.hostile' raised RegexTimeout"])
    hit = ps.evaluate(Conversation.of(("user", "my well  -  being")), "Okay.")
    assert [h.policy for h in hit.hits] == ["p.regex"]


def test_default_pack_regexes_all_run_under_the_bound() -> None:
    """Every ``regex:`` entry of the shipped pack is compiled with the bound (none slips back
    to unbounded re), and the pack itself passes the load probe."""
    ps = load_policies(DEFAULT_PACK)
    leaves = [d for d in ps.detectors.values() if isinstance(d, Leaf)]
    bounded = [p for leaf in leaves for p in leaf.patterns if isinstance(p, BoundedPattern)]
    unbounded = [p for leaf in leaves for p in leaf.patterns if not isinstance(p, BoundedPattern)]
    assert len(bounded) > 500
    assert all(p.flags & re.IGNORECASE == 0 for p in unbounded)  # only phrase tries stay on re


# --------------------------------------------------------------------------- through the proxy


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ThreadedServer(mock_upstream) as server:
        yield server.url


def _metric(admin: str, token: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{admin}/metrics", headers={"authorization": f"Bearer {token}"}).text
    samples = parse(text).get(name, [])
    return sum(v for found, v in samples if all(found.get(k) == x for k, x in labels.items()))


@pytest.mark.slow
@pytest.mark.subprocess
def test_slipped_regex_cannot_stall_another_client(tmp_path: Path, upstream: str) -> None:
    """A hostile regex that the load probe cannot see through (its explosive part sits behind
    a lookbehind) and a user message built to trigger it: under re the proxy froze for every
    client. Now the request answers within the bound, fail open (reply intact, hit error in the
    annotation, counted in guardrail_policy_errors_total), and a second client is served."""
    pattern = r"(?<=#)(a+)+$"
    folder = pack(tmp_path / "policies", pattern)
    token = "regex-admin-token"
    env = {"GUARDRAIL_ADMIN_TOKEN": token}
    with guardrail_serve(tmp_path, upstream, folder, env=env) as served:
        url = f"{served.proxy}/v1/chat/completions"
        results: dict[str, Any] = {}

        def hostile() -> None:
            # under max_user_text_chars (16,384), so the detectors read all of it
            body = chat_request("#" + "a" * 5_000 + "! reply: Here to help.")
            results["hostile"] = httpx.post(url, json=body, timeout=30)

        thread = threading.Thread(target=hostile)
        start = time.perf_counter()
        thread.start()
        time.sleep(0.05)
        other = httpx.post(url, json=chat_request("reply: Hello."), timeout=30)
        other_done = time.perf_counter() - start
        thread.join(30)
        assert other.status_code == 200 and other.json()["guardrail"]["hits"] == []
        assert other_done < GENEROUS
        response = results["hostile"]
        assert response.status_code == 200
        body = response.json()
        assert body["choices"][0]["message"]["content"] == "Here to help."
        [hit] = body["guardrail"]["hits"]
        assert hit["policy"] == "p.regex"
        assert hit["error"] == "detector 'user.hostile' raised RegexTimeout"
        errors = _metric(served.admin, token, "guardrail_policy_errors_total", policy="p.regex")
        assert errors == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_reload_with_a_catastrophic_regex_is_refused_and_the_last_good_set_serves(
    tmp_path: Path, upstream: str
) -> None:
    """An operator edits the live pack and adds ``(a+)+$``: POST /-/reload is refused with the
    file, line and policy id, and the proxy keeps serving the last good policies."""
    folder = policy_copy(tmp_path)
    token = "regex-admin-token"
    env = {"GUARDRAIL_ADMIN_TOKEN": token}
    with guardrail_serve(tmp_path, upstream, folder, env=env) as served:
        auth = {"authorization": f"Bearer {token}"}
        added = pack(tmp_path / "hostile", r"(a+)+$").joinpath("pack.yaml").read_text()
        added = added[: added.index("resources:")]
        (folder / "zz_hostile.yaml").write_text(added)
        refused = httpx.post(f"{served.admin}/-/reload", headers=auth, timeout=30)
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["file"].endswith("zz_hostile.yaml") and error["line"] == 5
        assert error["policy_id"] == "p.regex"
        assert "backtracks catastrophically" in error["message"]
        url = f"{served.proxy}/v1/chat/completions"
        crisis = httpx.post(url, json=chat_request("I want to end it all. reply: Okay."), timeout=30)
        hits = [h["policy"] for h in crisis.json()["guardrail"]["hits"]]
        assert hits == ["ops.crisis"]  # the last good set, without p.regex
        hostile = httpx.post(url, json=chat_request("a" * 5000 + "! reply: Fine."), timeout=30)
        assert hostile.status_code == 200 and hostile.json()["guardrail"]["hits"] == []
