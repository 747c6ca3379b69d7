"""Live reload: a good set is swapped in atomically, a bad one refused with file/line/policy id."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from guardrail.observe.record import Recorder
from guardrail.policy import Conversation, PolicySet, load_policies
from guardrail.proxy.reload import PolicyHolder, Reloader, fingerprint, reload_on_sighup, watch

from tests.kit.metrics import value
from tests.kit.serve import BROKEN_POLICY, SENTINEL, policy_copy


def make(tmp_path: Path) -> tuple[Path, PolicyHolder, Reloader, list[PolicySet]]:
    folder = policy_copy(tmp_path)
    holder = PolicyHolder(load_policies(folder))
    installed: list[PolicySet] = []
    recorder = Recorder([("/", "openai.chat")])

    def install(policies: PolicySet) -> None:
        recorder.install(policies)
        installed.append(policies)

    return folder, holder, Reloader(holder, folder, on_install=install), installed


def add_policy(folder: Path, name: str = "extra.yaml") -> None:
    text = (folder / "ops.yaml").read_text().replace("ops.block", "ops.block2")
    # a second copy of a policy needs its own detectors: reuse the existing ones by name only
    policies = text[text.index("policies:") :]
    (folder / name).write_text(
        policies.replace("ops.crisis", "ops.crisis2")
        .replace("ops.dependency", "ops.dependency2")
        .replace("ops.agree_shadow", "ops.agree_shadow2")
    )


def test_good_reload_swaps_the_set_and_updates_metrics(tmp_path: Path) -> None:
    folder, holder, reloader, installed = make(tmp_path)
    before = value("guardrail_policy_reloads_total", trigger="admin", result="success")
    old = holder.current
    add_policy(folder)
    with capture_logs() as logs:
        result = reloader.reload("admin")
    assert result.ok and result.changed and result.policies == 8
    assert holder.current is not old and installed == [holder.current]
    assert value("guardrail_policy_reloads_total", trigger="admin", result="success") == before + 1
    assert value("guardrail_policy_last_reload_successful") == 1
    assert abs(value("guardrail_policy_last_reload_success_timestamp_seconds") - time.time()) < 5
    [event] = [e for e in logs if e["event"] == "policy_reload"]
    assert event["policy_digest"] == result.digest and event["previous_digest"] == old.digest


def test_bad_set_is_refused_and_the_last_good_set_keeps_serving(tmp_path: Path) -> None:
    folder, holder, reloader, installed = make(tmp_path)
    good = holder.current
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    before = value("guardrail_policy_reloads_total", trigger="signal", result="failure")
    with capture_logs() as logs:
        result = reloader.reload("signal")
    assert not result.ok and holder.current is good and installed == []
    assert value("guardrail_policy_reloads_total", trigger="signal", result="failure") == before + 1
    assert value("guardrail_policy_last_reload_successful") == 0
    [event] = [e for e in logs if e["event"] == "policy_reload_failed"]
    assert event["file"].endswith("zz_broken.yaml")
    assert event["line"] == 7 and event["policy_id"] == "ops.broken"
    assert "reply.nowhere" in event["error"] and event["kept_digest"] == good.digest
    assert SENTINEL not in repr(logs)
    document = result.to_dict()
    assert document["status"] == "refused" and document["error"]["policy_id"] == "ops.broken"
    assert SENTINEL not in repr(document)


def test_a_loader_bug_is_refused_too(tmp_path: Path) -> None:
    folder, holder, _, _ = make(tmp_path)

    def explode(path: Path) -> PolicySet:
        raise RuntimeError(SENTINEL)

    reloader = Reloader(holder, folder, load=explode)
    with capture_logs() as logs:
        result = reloader.reload("watch")
    assert not result.ok and result.to_dict()["error"] == {"type": "RuntimeError"}
    assert SENTINEL not in repr(logs)


def test_a_request_in_flight_keeps_the_set_it_started_with(tmp_path: Path) -> None:
    folder, holder, reloader, _ = make(tmp_path)
    taken = holder.current  # what a request does once, at its start
    (folder / "ops.yaml").write_text(
        (folder / "ops.yaml").read_text().replace("always be here for you", "never leave you")
    )
    assert reloader.reload("admin").ok
    conv = Conversation.of(("user", "hi"))
    reply = "I will always be here for you. Take care."
    assert [h.policy for h in taken.evaluate(conv, reply).hits] == ["ops.dependency"]
    assert holder.current.evaluate(conv, reply).hits == ()


@pytest.mark.slow
@pytest.mark.anyio
async def test_watch_reloads_after_a_change_holds_still(tmp_path: Path) -> None:
    folder, holder, reloader, installed = make(tmp_path)
    before = fingerprint(folder)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch, reloader, 0.05)
        await anyio.sleep(0.1)
        add_policy(folder)
        with anyio.fail_after(5):
            while not installed:
                await anyio.sleep(0.02)
        assert len(holder.current.policies) == 8
        (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
        failures = value("guardrail_policy_reloads_total", trigger="watch", result="failure")
        with anyio.fail_after(5):
            while (
                value("guardrail_policy_reloads_total", trigger="watch", result="failure")
                == failures
            ):
                await anyio.sleep(0.02)
        await anyio.sleep(0.3)  # unchanged files: the refused set is not retried
        assert (
            value("guardrail_policy_reloads_total", trigger="watch", result="failure")
            == failures + 1
        )
        tasks.cancel_scope.cancel()
    assert fingerprint(folder) != before and len(installed) == 1


@pytest.mark.anyio
async def test_sighup_reloads(tmp_path: Path) -> None:
    folder, holder, reloader, installed = make(tmp_path)
    add_policy(folder)
    with reload_on_sighup(reloader) as active:
        assert active
        os.kill(os.getpid(), signal.SIGHUP)
        with anyio.fail_after(5):
            while not installed:
                await anyio.sleep(0.02)
    assert len(holder.current.policies) == 8


def test_installed_runs_after_the_swap_and_only_for_a_good_set(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    holder = PolicyHolder(load_policies(folder))
    seen: list[str] = []
    reloader = Reloader(holder, folder, installed=lambda: seen.append(holder.current.digest))
    add_policy(folder)
    result = reloader.reload("admin")
    assert result.ok and seen == [result.digest]  # called once the new set is in place
    (folder / "zz_broken.yaml").write_text(BROKEN_POLICY)
    assert not reloader.reload("admin").ok and len(seen) == 1


def test_serve_freezes_start_up_objects_and_a_reload_hands_them_back() -> None:
    import gc

    from guardrail.cli.process import settle_memory, unsettle_memory

    try:
        settle_memory()
        assert gc.get_freeze_count() > 0
        unsettle_memory()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
