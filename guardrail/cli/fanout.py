"""Fanning one admin action out to every worker of ``guardrail serve --workers N``.

The supervisor (``guardrail.cli.supervisor``) sends an operation down each worker's control pipe
and collects one answer per worker slot (:data:`Answer`); this module turns those answers into
what the admin listener and the reload triggers expect:

* :class:`FanOutReloader` is the ``Reloads`` of ``POST /-/reload``, SIGHUP and the watcher: every
  worker runs its own reload (a refused set keeps that worker's last good one); the result is ok
  only when every worker installed the new set, and lists each worker's own answer; the
  supervisor's copy of the set (read by ``/-/stats``) follows only then;
* :class:`FanOutState` is the ``Erases`` of ``DELETE /-/state/users/{user}`` with the ``memory``
  backend: every worker erases from its own store, and a worker that cannot answer makes it fail
  (an erasure must not be reported done while a copy may remain).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from guardrail.config.policysets import PolicyHolder
from guardrail.policy.sources import PolicySource
from guardrail.errors import StateUnavailable
from guardrail.observe import metrics
from guardrail.observe.logs import get_logger
from guardrail.policy import load_policies
from guardrail.proxy.reload import ReloadResult

__all__ = ["Answer", "Calls", "FanOutReloader", "FanOutResult", "FanOutState"]

Answer = tuple[int, int | None, dict[str, Any]]
"""One worker's answer: its slot, its pid (None when none runs there), and what it said (``ok``
False when it died, was not running or did not answer in time)."""

_log = get_logger("guardrail.supervisor")


class Calls(Protocol):
    """What fans an operation out: the supervisor."""

    async def call(self, op: str, arg: str) -> list[Answer]: ...


@dataclass(frozen=True)
class FanOutResult(ReloadResult):
    """A reload as every worker answered it; ``workers`` holds each one's own result."""

    workers: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.ok:
            refused = next((w for w in self.workers if w.get("status") != "ok"), {})
            out["error"] = refused.get("error", {"type": "worker-unreachable"})
        out["workers"] = list(self.workers)
        return out


class FanOutReloader:
    """A reload of every worker (the ``Reloads`` the triggers and the admin listener use)."""

    def __init__(self, supervisor: Calls, holder: PolicyHolder, source: PolicySource) -> None:
        self.supervisor = supervisor
        self.holder = holder
        self.source = source
        self._lock = asyncio.Lock()

    async def areload(self, trigger: str) -> ReloadResult:
        trigger = metrics.bounded(trigger, metrics.RELOAD_TRIGGERS, "admin")
        async with self._lock:
            answers = await self.supervisor.call("reload", trigger)
            workers = tuple(
                {
                    "worker": index,
                    "pid": pid,
                    **{k: v for k, v in answer.items() if k != "ok"},
                }
                for index, pid, answer in answers
            )
            ok = bool(answers) and all(answer["ok"] for _, _, answer in answers)
            if ok:  # the supervisor's copy, read by /-/stats: the set the workers installed
                await self._follow()
        current = self.holder.current
        digest = current.digest
        changed = any(answer.get("changed") for _, _, answer in answers)
        count = len(getattr(current, "policies", ()))
        (_log.info if ok else _log.error)(
            "policy_reload_fanned_out",
            trigger=trigger,
            ok=ok,
            workers=[{k: w.get(k) for k in ("worker", "pid", "status", "digest")} for w in workers],
        )
        return FanOutResult(ok, trigger, digest, count, changed=changed, workers=workers)

    async def _follow(self) -> None:
        try:
            new = await anyio.to_thread.run_sync(load_policies, self.source)
        except Exception as exc:  # noqa: BLE001 - the files changed again since; workers serve
            _log.warning("supervisor_policy_copy_stale", error_type=type(exc).__name__)
            return
        self.holder.swap(new)


class FanOutState:
    """``DELETE /-/state/users/{user}`` with the ``memory`` backend: every worker erases the user
    from its own store; True when any held them. A worker that cannot answer makes it 503 (an
    erasure must not be reported done while a copy may remain)."""

    def __init__(self, supervisor: Calls) -> None:
        self.supervisor = supervisor

    async def erase(self, raw_user: str) -> bool:
        answers = await self.supervisor.call("erase", raw_user)
        failed = [answer for _, _, answer in answers if not answer["ok"]]
        if failed or not answers:
            cause = str(failed[0].get("cause", "worker")) if failed else "worker"
            raise StateUnavailable("a worker did not erase", cause=cause)
        return any(answer.get("erased") for _, _, answer in answers)
