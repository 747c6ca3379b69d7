"""``guardrail serve --policies default --policies ./mine`` as a real process (issue 13, item 2):
the composed set serves, and SIGHUP and the watcher reload every source of the list, refusing a
bad second source with its file, line and policy id while the last good set keeps serving."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from guardrail.policy.sources import DEFAULT_PACK

from tests.kit.serve import Served, guardrail_serve
from tests.kit.servers import ThreadedServer
from tests.kit.upstreams import mock_upstream
from tests.kit.wire import chat_request
from .test_listeners import wait_for

pytestmark = [pytest.mark.subprocess]

MINE = """\
    detectors:
      reply.clinic_hours: {scope: reply, phrases: ["clinic hours"]}
    policies:
      - id: clinic.night_line
        category: clinic
        description: A distressed person asking when the clinic opens also gets the crisis line.
        condition: user.distress and reply.clinic_hours
        actions:
          - append: {text: "Before then, {crisis_line} is there."}
    overrides:
      policies:
        referral.distress: {enabled: false}
    """


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "clinic.yaml").write_text(textwrap.dedent(MINE))
    env = {"GUARDRAIL_WATCH_INTERVAL": "0.2"}
    with ThreadedServer(mock_upstream) as upstream, guardrail_serve(
        tmp_path, upstream.url, Path("default"), "--policies", str(mine), "--watch-policies",
        env=env,
    ) as proc:  # fmt: skip
        yield proc, mine / "clinic.yaml"


def test_a_served_list_reloads_every_source_and_refuses_a_bad_second_one(
    served: tuple[Served, Path],
) -> None:
    proc, mine = served
    ask = chat_request("I feel so hopeless and alone lately. reply: Our clinic hours are 9 to 5.")

    def answer() -> tuple[str, list[str]]:
        res = httpx.post(f"{proc.proxy}/v1/chat/completions", json=ask, timeout=10).json()
        hits = [h["policy"] for h in res["guardrail"]["hits"]]
        return res["choices"][0]["message"]["content"], hits

    text, hits = answer()
    assert text == (
        "Our clinic hours are 9 to 5.\n\nBefore then, the 988 Suicide & Crisis Lifeline is there."
    )
    assert hits == ["clinic.night_line"]  # referral.distress is turned off: it never runs
    [serving] = proc.events("serving")
    assert serving["policies"] == f"{DEFAULT_PACK}, {mine.parent}"
    # the second source breaks: SIGHUP is refused, naming its file, line and policy id
    mine.write_text(textwrap.dedent(MINE).replace("user.distress and", "user.distres and"))
    os.kill(proc.proc.pid, signal.SIGHUP)
    wait_for(lambda: any(e["trigger"] == "signal" for e in proc.events("policy_reload_failed")))
    [failed] = [e for e in proc.events("policy_reload_failed") if e["trigger"] == "signal"]
    assert failed["file"] == str(mine) and failed["policy_id"] == "clinic.night_line"
    assert mine.read_text().splitlines()[failed["line"] - 1].strip().startswith("condition:")
    assert answer()[0] == text  # the last good set still serves
    # a good change to the second source only: the watcher installs it
    mine.write_text(textwrap.dedent(MINE).replace("Before then", "Until we open"))
    wait_for(lambda: any(e["trigger"] == "watch" for e in proc.events("policy_reload")))
    assert answer()[0].endswith("Until we open, the 988 Suicide & Crisis Lifeline is there.")
