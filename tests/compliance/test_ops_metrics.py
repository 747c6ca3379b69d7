"""The containment and state store metrics (issue 14, item 9): names, bounded labels, series at
zero from the start, and the helpers the request flow calls."""

from __future__ import annotations

import pytest

from guardrail.errors import StateUnavailable
from guardrail.observe import metrics as m
from guardrail.state.config import StateConfig
from guardrail.state.identity import Identity
from guardrail.state.link import StateLink
from guardrail.state.memory import MemoryStore
from guardrail.state.model import UserState
from tests.kit.metrics import exposition, parse, value

from .conftest import Run


@pytest.mark.subprocess
def test_a_running_proxy_exports_the_containment_series_at_zero_and_no_store_gauge(
    served: Run,
) -> None:
    actions = {lab["action"]: v for lab, v in served.metrics["guardrail_containment_actions_total"]}
    assert set(actions) == set(m.CONTAINMENT_ACTIONS)
    # the traffic named no user: every state-based policy was skipped, and counted, and nothing
    # that needs state was done
    assert actions.pop("state_skipped") > 0
    assert actions == dict.fromkeys(set(m.CONTAINMENT_ACTIONS) - {"state_skipped"}, 0.0)
    for name in ("guardrail_state_operations_total", "guardrail_state_errors_total"):
        assert {lab["operation"] for lab, _ in served.metrics[name]} == set(m.STATE_OPERATIONS)
    # no store reported: no gauge at 0 that would page someone about a store nobody runs
    assert "guardrail_state_store_up" not in served.metrics


def actions(action: str) -> float:
    return value("guardrail_containment_actions_total", action=action)


def test_records_count_as_containment_actions_once_each() -> None:
    before = {a: actions(a) for a in m.CONTAINMENT_ACTIONS}
    m.note_records(["disclosure", "break_reminder", "disclosure", "referral", "crisis_referral"])
    m.note_records(frozenset({"wind_down"}))
    m.note_containment("referral_paced")
    m.note_containment("state_skipped", 3)
    after = {a: actions(a) for a in m.CONTAINMENT_ACTIONS}
    assert {a: after[a] - before[a] for a in after} == {
        "disclosure": 1,
        "break_reminder": 1,
        "wind_down": 1,
        "referral_paced": 1,
        "referral_repointed": 0,
        "state_skipped": 3,
    }
    with pytest.raises(ValueError, match="unknown containment action"):
        m.note_containment("user-42")


def test_state_calls_errors_and_the_up_gauge() -> None:
    calls = value("guardrail_state_operations_total", operation="load")
    errors = value("guardrail_state_errors_total", operation="load")
    m.note_state("load", ok=True)
    m.note_state("load", ok=False)
    assert value("guardrail_state_operations_total", operation="load") == calls + 2
    assert value("guardrail_state_errors_total", operation="load") == errors + 1
    m.state_store_up("redis", False)
    assert value("guardrail_state_store_up", backend="redis") == 0
    m.state_store_up("redis", True)
    assert value("guardrail_state_store_up", backend="redis") == 1
    for bad in (lambda: m.note_state("drop_table", True), lambda: m.state_store_up("x", True)):
        with pytest.raises(ValueError):
            bad()
    samples = parse(exposition())
    assert ({"backend": "redis"}, 1.0) in samples["guardrail_state_store_up"]


class _Flaky(MemoryStore):
    """A memory store whose calls fail while ``down`` (as a stopped Redis fails the link)."""

    down = True

    async def load(self, identity: Identity, now: float) -> UserState:
        if self.down:
            raise StateUnavailable("state store unreachable", cause="connection")
        return await super().load(identity, now)


@pytest.mark.anyio
async def test_the_state_link_reports_the_store_down_and_back_up() -> None:
    """What the GuardrailStateStoreDown alert reads: the link's failed load sets the gauge to 0
    and counts the error; the next answered load sets it back to 1."""
    config = StateConfig(backend="redis")  # the label only: the store itself is in memory
    store = _Flaky(config)
    link = StateLink(store, config)
    who = Identity(user="u" * 32)
    m.state_store_up("redis", True)  # so the 0 below can only come from the link
    calls, errors = (
        value("guardrail_state_operations_total", operation="load"),
        value("guardrail_state_errors_total", operation="load"),
    )
    facts = await link.facts(who, 1_000_000.0, frozenset({"session.minutes"}))
    assert "session.minutes" not in facts and link.degraded
    assert value("guardrail_state_store_up", backend="redis") == 0
    assert value("guardrail_state_errors_total", operation="load") == errors + 1
    store.down = False
    facts = await link.facts(who, 1_000_060.0, frozenset({"session.minutes"}))
    assert "session.minutes" in facts and not link.degraded
    assert value("guardrail_state_store_up", backend="redis") == 1
    assert value("guardrail_state_operations_total", operation="load") == calls + 2
