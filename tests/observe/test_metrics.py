"""The metric catalogue: Prometheus naming, bounded labels, series at start, multiprocess."""

from __future__ import annotations

import pytest
import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from guardrail.observe import metrics as m
from guardrail.observe.logs import Exchange
from guardrail.observe.record import HoldbackClock, Recorder, outcome_of, upstream_error_of
from guardrail.policy import load_policies
from guardrail.proxy.regenerate import OUTCOMES as REGENERATE_OUTCOMES

from tests.kit.metrics import exposition, parse, value
from tests.kit.paths import OPS_POLICIES
from tests.kit.serve import SENTINEL


FORBIDDEN_LABELS = {
    "user",
    "conversation",
    "conversation_id",
    "model",
    "path",
    "url",
    "request_id",
    "message",
    "text",
    "client",
}


def own_families() -> list[object]:
    return [f for f in m.REGISTRY.collect() if f.name.startswith("guardrail_")]


@pytest.mark.slow
def test_every_metric_follows_the_prometheus_conventions() -> None:
    m.init_route("/", "openai.chat")
    families = list(text_string_to_metric_families(exposition()))
    ours = [f for f in families if f.name.startswith("guardrail_")]
    assert len(ours) >= 20
    for family in families:
        assert family.name.startswith(("guardrail_", "process_", "python_")), family.name
    for family in ours:
        assert family.documentation.strip(), family.name
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert names <= {family.name + "_total"}, family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
        for sample in family.samples:
            assert not set(sample.labels) & FORBIDDEN_LABELS, (family.name, sample.labels)
            assert not sample.name.endswith("_created"), sample.name


@pytest.mark.slow
def test_known_series_exist_at_zero_before_any_traffic() -> None:
    ps = load_policies(OPS_POLICIES)
    recorder = Recorder([("/ops-start/", "openai.chat")])
    recorder.install(ps)
    samples = parse(exposition())
    requests = {
        (lab["route"], lab["api"], lab["outcome"]) for lab, _ in samples["guardrail_requests_total"]
    }
    for outcome in m.OUTCOMES:
        if outcome != "passthrough":
            assert ("/ops-start/", "openai.chat", outcome) in requests
    assert ("/ops-start/", "passthrough", "passthrough") in requests
    hits = {(lab["policy"], lab["mode"]) for lab, _ in samples["guardrail_policy_hits_total"]}
    assert {("ops.crisis", "enforce"), ("ops.agree_shadow", "shadow")} <= hits
    crisis = {
        (lab["route"], lab["locale"])
        for lab, _ in samples["guardrail_crisis_resources_added_total"]
    }
    assert {("/ops-start/", "en-US"), ("/ops-start/", "en-GB"), ("/ops-start/", "intl")} <= crisis
    assert value("guardrail_policies_loaded", mode="enforce") == 3
    assert value("guardrail_policies_loaded", mode="shadow") == 1
    reasons = {lab["reason"] for lab, _ in samples["guardrail_not_inspected_total"]}
    assert set(m.NOT_INSPECTED) <= reasons
    assert (
        value(
            "guardrail_build_info",
            version=__import__("guardrail").__version__,
            python=__import__("platform").python_version(),
        )
        == 1
    )


def test_client_supplied_values_never_become_label_values() -> None:
    recorder = Recorder([("/", "openai.chat")])
    ex = Exchange(SENTINEL, "POST", f"/v1/{SENTINEL}/chat/completions", route=SENTINEL)
    ex.api, ex.model, ex.locale = SENTINEL, SENTINEL, SENTINEL
    ex.inspected, ex.reason, ex.upstream_status = False, SENTINEL, 200
    recorder.started(ex.route)
    recorder.finished(ex)
    text = exposition()
    assert SENTINEL not in text
    assert value("guardrail_not_inspected_total", route="other", api="other", reason="other") >= 1


def test_outcome_and_upstream_error_mapping() -> None:
    def ex(**fields: object) -> Exchange:
        out = Exchange("r", "POST", "/v1/chat/completions")
        for k, v in fields.items():
            setattr(out, k, v)
        return out

    assert outcome_of(ex(api="passthrough", upstream_status=200)) == "passthrough"
    assert outcome_of(ex(api="openai.chat", inspected=True)) == "unchanged"
    assert outcome_of(ex(api="openai.chat", inspected=True, changed=True)) == "rewritten"
    assert (
        outcome_of(ex(api="openai.chat", inspected=True, changed=True, blocked=True)) == "blocked"
    )
    assert outcome_of(ex(api="openai.chat", inspected=False, reason="stream")) == "not_inspected"
    assert outcome_of(ex(error="upstream_timeout")) == "upstream_error"
    assert outcome_of(ex(error="unsafe_target")) == "rejected"
    assert outcome_of(ex(error="internal_KeyError")) == "error"
    assert upstream_error_of(ex(error="upstream_unavailable")) == "unavailable"
    assert upstream_error_of(ex(upstream_status=503)) == "status_5xx"
    assert upstream_error_of(ex(upstream_status=429)) == "status_4xx"
    assert upstream_error_of(ex(upstream_status=200)) is None


def test_bounded_maps_unknown_values_to_other() -> None:
    assert m.bounded("stream", m.NOT_INSPECTED) == "stream"
    assert m.bounded("made-up", m.NOT_INSPECTED) == "other"
    assert m.bounded(None, m.APIS) == "other"


_WORKER = """
from guardrail.observe import metrics as m
m.init_route("/", "openai.chat")
m.REQUESTS.labels("/", "openai.chat", "unchanged").inc({n})
m.OVERHEAD_SECONDS.labels("/", "openai.chat").observe(0.002)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_multiprocess_mode_merges_every_workers_values(tmp_path: Path) -> None:
    env = {**os.environ, m.MULTIPROC_ENV: str(tmp_path)}
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", _WORKER.format(n=n)], env=env, check=True)
    scrape = (
        "from guardrail.observe import metrics as m\n"
        "import sys; sys.stdout.write(m.render(None)[0].decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, capture_output=True, text=True
    ).stdout
    samples = parse(out)
    unchanged = [
        v
        for lab, v in samples["guardrail_requests_total"]
        if lab == {"route": "/", "api": "openai.chat", "outcome": "unchanged"}
    ]
    assert unchanged == [7.0]
    counts = [v for lab, v in samples["guardrail_overhead_seconds_count"] if lab["route"] == "/"]
    assert counts == [2.0]


def test_holdback_clock_times_the_oldest_waiting_chunk() -> None:
    seen: list[float] = []
    clock = HoldbackClock(seen.append)
    clock.released()  # nothing waited
    clock.arrived()
    time.sleep(0.02)
    clock.arrived()  # a later chunk does not restart the wait
    clock.released()
    clock.arrived()
    clock.released()
    assert len(seen) == 2 and seen[0] >= 0.02 and seen[1] < 0.02
    ex = Exchange("r", "POST", "/v1/chat/completions")
    ex.api = "openai.chat"
    before = value("guardrail_stream_holdback_seconds_count", route="/", api="openai.chat")
    timed = Recorder([("/", "openai.chat")]).holdback_clock(ex)
    timed.arrived()
    timed.released()
    after = value("guardrail_stream_holdback_seconds_count", route="/", api="openai.chat")
    assert after == before + 1


@pytest.mark.slow
def test_regenerations_are_counted_by_outcome_from_zero() -> None:
    assert m.REGENERATE_OUTCOMES == REGENERATE_OUTCOMES
    recorder = Recorder([("/ops-regen/", "anthropic.messages")])
    for outcome in REGENERATE_OUTCOMES:
        labels = {"route": "/ops-regen/", "api": "anthropic.messages", "outcome": outcome}
        assert m.REGISTRY.get_sample_value("guardrail_regenerations_total", labels) == 0
    for result in ("accepted", "timeout", None):  # None: nothing asked to regenerate
        ex = Exchange("r", "POST", "/ops-regen/v1/messages", route="/ops-regen/")
        ex.api, ex.inspected, ex.regenerate = "anthropic.messages", True, result
        recorder.started(ex.route)
        recorder.finished(ex)
    counted = {
        outcome: value(
            "guardrail_regenerations_total",
            route="/ops-regen/",
            api="anthropic.messages",
            outcome=outcome,
        )
        for outcome in REGENERATE_OUTCOMES
    }
    assert counted == {"accepted": 1, "rejected": 0, "timeout": 1, "upstream-error": 0}
