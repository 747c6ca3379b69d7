"""Live policy reload: the policy holder, the reloader, SIGHUP and the folder watcher.

Three triggers run the same :meth:`Reloader.reload`: ``SIGHUP`` (:func:`reload_on_sighup`), an
authenticated ``POST /-/reload`` on the admin listener (``guardrail.proxy.admin``), and, when
``watch_policies`` is on, :func:`watch`, which polls the modification times of the files of every
policy source (each source of a list, the bundled pack's too) every ``watch_interval`` seconds
(no extra dependency, works on every filesystem, containers' mounted ConfigMaps included).

Guarantees:

* a policy set that does not load is refused whole: the proxy keeps serving the last good set,
  the failure is logged as ``policy_reload_failed`` with the file, line and policy id, and counted
  in ``guardrail_policy_reloads_total{result="failure"}`` (and
  ``guardrail_policy_last_reload_successful`` drops to 0);
* a good set is installed with one assignment (:meth:`~guardrail.proxy.pipeline.PolicyHolder.swap`);
  a request reads ``PolicyHolder.current`` once when it starts and finishes under that set,
  whatever a reload does meanwhile;
* reloads never overlap (a lock serialises them), and loading runs in a worker thread so the
  event loop keeps serving while regexes compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from guardrail.errors import PolicyError
from guardrail.observe import metrics
from guardrail.observe.logs import get_logger, safe_stack
from guardrail.proxy.pipeline import PolicyEngine, PolicyHolder
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.sources import PolicySource, as_list, describe

__all__ = [
    "PolicyHolder",
    "ReloadResult",
    "Reloader",
    "Reloads",
    "fingerprint",
    "reload_on_sighup",
    "watch",
]

_log = get_logger("guardrail.proxy.reload")


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of one reload attempt, as the admin endpoint returns it."""

    ok: bool
    trigger: str
    digest: str
    policies: int
    changed: bool = False
    error: PolicyError | None = None
    error_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok" if self.ok else "refused",
            "trigger": self.trigger,
            "digest": self.digest,
            "policies": self.policies,
        }
        if self.ok:
            out["changed"] = self.changed
        elif self.error is not None:
            err = self.error
            out["error"] = {
                "file": err.file,
                "line": err.line,
                "policy_id": err.policy_id,
                "message": err.message,
            }
        else:
            out["error"] = {"type": self.error_type}
        return out


class Reloads(Protocol):
    """What the triggers (SIGHUP, ``POST /-/reload``, the watcher) need: the policy source to
    watch and a reload to run. :class:`Reloader` reloads this process;
    ``guardrail.cli.supervisor`` fans a reload out to every worker."""

    source: PolicySource

    async def areload(self, trigger: str) -> ReloadResult: ...


class Reloader:
    """Loads the policy source again and installs it in ``holder`` if, and only if, it loads.

    ``on_install`` runs just before each install (start-up excluded): the proxy passes
    :meth:`~guardrail.observe.record.Recorder.install`, which creates the new set's metric series
    and records the install time; ``installed`` runs just after it (``guardrail serve`` hands the
    previous set back to the garbage collector there); ``load`` replaces
    :func:`~guardrail.policy.load_policies` (tests).
    """

    def __init__(
        self,
        holder: PolicyHolder,
        source: PolicySource,
        *,
        on_install: Callable[[PolicySet], None] | None = None,
        installed: Callable[[], None] | None = None,
        load: Callable[[PolicySource], PolicySet] = load_policies,
    ) -> None:
        self.holder = holder
        self.source = source
        self._on_install = on_install
        self._installed = installed
        self._load = load
        self._lock = threading.Lock()

    def reload(self, trigger: str) -> ReloadResult:
        """Load and, if good, install. Never raises for a bad set: the result says what happened."""
        trigger = metrics.bounded(trigger, metrics.RELOAD_TRIGGERS, "admin")
        with self._lock:
            current = self.holder.current
            try:
                new = self._load(self.source)
            except PolicyError as exc:
                return self._refused(trigger, current, exc, None)
            except Exception as exc:  # noqa: BLE001 - a loader bug must not take the proxy down
                return self._refused(trigger, current, None, exc)
            if self._on_install is not None:
                self._on_install(new)
            self.holder.swap(new)
            if self._installed is not None:
                self._installed()
        metrics.RELOADS.labels(trigger, "success").inc()
        changed = new.digest != current.digest
        _log.info(
            "policy_reload",
            trigger=trigger,
            source=describe(self.source),
            policy_digest=new.digest,
            previous_digest=current.digest,
            policy_count=len(new.policies),
            changed=changed,
        )
        return ReloadResult(True, trigger, new.digest, _count(new), changed=changed)

    def _refused(
        self,
        trigger: str,
        current: PolicyEngine,
        error: PolicyError | None,
        bug: Exception | None,
    ) -> ReloadResult:
        metrics.RELOADS.labels(trigger, "failure").inc()
        metrics.LAST_RELOAD_OK.set(0)
        context: dict[str, Any] = {"trigger": trigger, "source": describe(self.source)}
        if error is not None:
            context.update(
                file=error.file, line=error.line, policy_id=error.policy_id, error=error.message
            )
        else:
            assert bug is not None
            context.update(error_type=type(bug).__name__, error_stack=safe_stack(bug))
        _log.error("policy_reload_failed", kept_digest=current.digest, **context)
        return ReloadResult(
            False,
            trigger,
            current.digest,
            _count(current),
            error=error,
            error_type=None if bug is None else type(bug).__name__,
        )

    async def areload(self, trigger: str) -> ReloadResult:
        """:meth:`reload` in a worker thread, so the event loop keeps serving meanwhile."""
        return await anyio.to_thread.run_sync(self.reload, trigger)


def _count(policies: PolicyEngine) -> int:
    return len(getattr(policies, "policies", ()))


# --------------------------------------------------------------------------- triggers


@contextlib.contextmanager
def reload_on_sighup(reloader: Reloads) -> Iterator[bool]:
    """While active, ``SIGHUP`` reloads the policies (in the running asyncio loop).

    Yields False where signals cannot be handled (not the main thread, no SIGHUP on this
    platform), True otherwise.
    """
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[ReloadResult]] = set()

    def on_signal() -> None:
        task = loop.create_task(reloader.areload("signal"))
        running.add(task)
        task.add_done_callback(running.discard)

    sighup = getattr(signal, "SIGHUP", None)
    try:
        if sighup is None:
            raise NotImplementedError
        loop.add_signal_handler(sighup, on_signal)
    except (NotImplementedError, RuntimeError, ValueError):
        yield False
        return
    try:
        yield True
    finally:
        loop.remove_signal_handler(sighup)


def fingerprint(source: PolicySource) -> tuple[tuple[str, int, int, int], ...]:
    """What :func:`watch` compares: path, mtime (ns), size and inode of each policy file of each
    source, in the loader's own selection (``*.yaml``/``*.yml`` directly in a folder, or the one
    file). A source that cannot be listed counts as empty: its return is a change too."""
    out = []
    for root in as_list(source):
        try:
            files = (
                sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml"))
                if root.is_dir()
                else [root]
            )
        except OSError:
            files = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


async def watch(
    reloader: Reloads,
    interval: float,
    *,
    sources: tuple[PolicySource, ...] = (),
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Poll the policy files every ``interval`` seconds; reload once a change has held still for
    one interval (an editor's or a deployment's several writes make one reload). A refused set is
    not retried until the files change again. Runs until cancelled. ``sources``: the routes' own
    policy sources, watched with the main one (a change to any reloads them all)."""

    def look() -> tuple[object, ...]:
        return tuple(fingerprint(source) for source in (reloader.source, *sources))

    seen = await anyio.to_thread.run_sync(look)
    pending: object = None
    while True:
        await sleep(interval)
        now = await anyio.to_thread.run_sync(look)
        if now == seen:
            pending = None
        elif now == pending:
            seen, pending = now, None
            await reloader.areload("watch")
        else:
            pending = now
