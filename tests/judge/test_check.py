"""``guardrail check`` asking semantic judges, so a team can measure a judge on its own labelled
cases: answers in each output line, facts (fail mode applied) given to the evaluation, outcome
counts on stderr, configuration errors before any case is read.

The engine's side (``judge:`` detectors, ``PolicySet.judges``, ``evaluate(..., facts=)``) is
built separately; :class:`WithJudges` stands in for a policy set that has judge detectors, and
records the facts it is given.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from guardrail import cli
from guardrail.cli import check
from guardrail.judge.endpoints import JudgeEndpoint
from guardrail.judge.offline import OfflineJudges
from guardrail.policy import Conversation, PolicySet, Verdict, load_policies

from .mockjudge import MockJudge, ServerThread, Spec, endpoint

ROOT = Path(__file__).resolve().parents[2]
PACK = load_policies(ROOT / "policies")
RUBRIC = "Does the person's last message express thoughts of ending their life?"
KEY = "sk-check-key-0123456789-NEVER-PRINT"
SYSTEM = "CONFIDENTIAL-SYSTEM-PROMPT"


def case(case_id: str, last: str, reply: str = "I hear you.") -> str:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "EARLIER-TURN hello"},
        {"role": "assistant", "content": "Hi, how are you?"},
        {"role": "user", "content": last},
    ]
    return json.dumps({"id": case_id, "messages": messages, "reply": reply})


CASES = "\n".join(
    [
        case("c1", "I think I will unalive myself tonight"),
        case("c2", "work was fine, just tired"),
        "{not json",
        case("c3", "everyone says I should unalive, lol, it's a meme"),
    ]
)


class WithJudges:
    """A policy set with judge detectors, as the engine will give one: ``judges`` and an
    ``evaluate`` that takes ``facts``, recorded here and otherwise the real pack's."""

    def __init__(self, ps: PolicySet, judges: tuple[Spec, ...]) -> None:
        self._ps = ps
        self.judges = judges
        self.facts: list[Mapping[str, Any]] = []

    def evaluate(
        self, conv: Conversation, reply: str, *, locale: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Verdict:
        self.facts.append(dict(facts or {}))
        return self._ps.evaluate(conv, reply, locale=locale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ps, name)


@pytest.fixture
def mock() -> Iterator[tuple[MockJudge, str]]:
    app = MockJudge()
    with ServerThread(app) as url:
        yield app, url


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_check_stream_adds_each_judges_answer_to_each_case(mock: tuple[MockJudge, str]) -> None:
    app, url = mock
    endpoints = {"keyword": endpoint(url, "keyword", api_key=KEY)}
    judges = [Spec("user.crisis.judge", RUBRIC, "last_user", "keyword")]
    out = io.StringIO()
    with OfflineJudges(endpoints, judges) as offline:
        count = check.check_stream(PACK, io.BytesIO(CASES.encode()), out, judges=offline)
        tally = dict(offline.tally)
    assert count == 4
    got = lines(out.getvalue())
    assert [r.get("judges") for r in got] == [
        {"user.crisis.judge": True},
        {"user.crisis.judge": False},
        None,
        {"user.crisis.judge": True},
    ]
    assert "error" in got[2] and "judges" not in got[2]
    assert sorted(s.shown for s in app.seen) == sorted(
        [
            "I think I will unalive myself tonight",
            "work was fine, just tired",
            "everyone says I should unalive, lol, it's a meme",
        ]
    )
    assert all(SYSTEM not in s.raw.decode() and "EARLIER-TURN" not in s.raw.decode()
               for s in app.seen)
    assert tally == {("user.crisis.judge", "yes"): 2, ("user.crisis.judge", "no"): 1}
    # without judges the output is what it always was
    plain = io.StringIO()
    check.check_stream(PACK, io.BytesIO(CASES.encode()), plain)
    assert all("judges" not in r for r in lines(plain.getvalue()))


def test_batches_fit_the_endpoints_slots(mock: tuple[MockJudge, str]) -> None:
    _, url = mock
    endpoints = {
        "a": JudgeEndpoint(name="a", url=url, model="yes", max_concurrency=10),
        "b": JudgeEndpoint(name="b", url=url, model="no", max_concurrency=3),
    }
    judges = [Spec("j1", RUBRIC, "last_user", "a"), Spec("j2", RUBRIC, "reply", "a"),
              Spec("j3", RUBRIC, "conversation", "b")]
    with OfflineJudges(endpoints, judges) as offline:
        assert offline.batch_size == 3  # b: 3 slots for one judge; a: 10 for two
    with OfflineJudges(endpoints, judges[:2]) as offline:
        assert offline.batch_size == 5


CONFIG = """\
judges:
  local:
    url: {url}/v1
    model: {model}
    api_key_env: CHECK_JUDGE_KEY
    timeout: {timeout}
    fail: {fail}
"""


def run_check(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    ps: WithJudges,
    config: str,
    *extra: str,
) -> tuple[int, list[dict[str, Any]], str]:
    (tmp_path / "cases.jsonl").write_text(CASES)
    (tmp_path / "guardrail.yaml").write_text(config)
    monkeypatch.setattr(check, "load_policies", lambda _: ps)
    monkeypatch.setenv("CHECK_JUDGE_KEY", KEY)
    monkeypatch.delenv("GUARDRAIL_CONFIG", raising=False)
    monkeypatch.delenv("GUARDRAIL_JUDGES", raising=False)
    status = cli.main(
        ["check", "--jsonl", str(tmp_path / "cases.jsonl"),
         "--config", str(tmp_path / "guardrail.yaml"), *extra]
    )
    out, err = capfd.readouterr()
    return status, lines(out), err


def test_the_command_asks_the_policy_sets_judges_and_feeds_their_facts(
    mock: tuple[MockJudge, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    app, url = mock
    ps = WithJudges(PACK, (Spec("user.crisis.judge", RUBRIC, "last_user", "local"),))
    config = CONFIG.format(url=url, model="keyword", timeout=5, fail="open")
    status, out, err = run_check(monkeypatch, capfd, tmp_path, ps, config)
    assert status == 0
    assert [r.get("judges") for r in out] == [
        {"user.crisis.judge": True}, {"user.crisis.judge": False}, None,
        {"user.crisis.judge": True},
    ]
    assert ps.facts == [
        {"judge.user.crisis.judge": True},
        {"judge.user.crisis.judge": False},
        {"judge.user.crisis.judge": True},
    ]
    assert "guardrail check: judge user.crisis.judge: 1 no, 2 yes" in err
    assert all(s.authorization == f"Bearer {KEY}" for s in app.seen)
    assert KEY not in err


def test_an_unanswered_judge_is_null_in_the_output_and_its_fail_mode_in_the_facts(
    mock: tuple[MockJudge, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, url = mock
    ps = WithJudges(PACK, (Spec("user.crisis.judge", RUBRIC, "last_user", "local"),))
    config = CONFIG.format(url=url, model="error", timeout=5, fail="closed")
    status, out, err = run_check(monkeypatch, capfd, tmp_path, ps, config)
    assert status == 0
    assert [r.get("judges") for r in out] == [
        {"user.crisis.judge": None}, {"user.crisis.judge": None}, None,
        {"user.crisis.judge": None},
    ]
    assert ps.facts == [{"judge.user.crisis.judge": True}] * 3
    assert "judge user.crisis.judge: 3 error" in err


def test_no_judges_asks_nothing(
    mock: tuple[MockJudge, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    app, url = mock
    ps = WithJudges(PACK, (Spec("user.crisis.judge", RUBRIC, "last_user", "local"),))
    config = CONFIG.format(url=url, model="yes", timeout=5, fail="open")
    status, out, _ = run_check(monkeypatch, capfd, tmp_path, ps, config, "--no-judges")
    assert status == 0 and app.seen == []
    assert all("judges" not in r for r in out)
    assert ps.facts == [{}, {}, {}]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("judges: {}\n", "judge 'user.crisis.judge': endpoint 'local' is not in the `judges:` "
                         "setting (none are configured)"),
        ("judges: {local: {url: 'http://j.test', model: m, api_key_env: UNSET_VAR_X}}\n",
         "judges.local.api_key_env: environment variable UNSET_VAR_X is not set"),
        ("judges: {local: {url: 'http://j.test', model: m, timeout: soon}}\n",
         "judges.local.timeout: must be a number of seconds"),
    ],
)
def test_configuration_errors_exit_2_before_any_case(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    config: str,
    message: str,
) -> None:
    ps = WithJudges(PACK, (Spec("user.crisis.judge", RUBRIC, "last_user", "local"),))
    status, out, err = run_check(monkeypatch, capfd, tmp_path, ps, config)
    assert status == 2 and out == [] and ps.facts == []
    assert message in err
