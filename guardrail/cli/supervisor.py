"""``guardrail serve --workers N``: N proxy processes on one port, one admin listener for them all.

The supervisor is the process ``guardrail serve`` started. It has already loaded and checked the
settings and the policy sets and bound every listening socket (``guardrail.cli.serve``); then:

* **one port, bound once.** The proxy socket is bound here and handed to each worker
  (multiprocessing passes the descriptor to the child), so the kernel spreads connections over
  the workers accepting on it; no ``SO_REUSEPORT``, which is not everywhere and lets a stray
  process join the port;
* **fresh interpreters.** Workers are spawned, never forked (``guardrail.cli.worker``): nothing of
  the supervisor's state (threads, the event loop, metric values) is copied into them, and
  ``PROMETHEUS_MULTIPROC_DIR`` is set before they import prometheus-client. Unless it is set
  already, the supervisor makes a private temporary folder for it and removes it at exit;
* **one admin listener.** ``/metrics`` and ``/-/stats`` read every worker's values, summed
  (``guardrail.observe.metrics``); ``/-/ready`` is 200 only while every worker is up with its
  policies loaded, and 503 ``draining`` after SIGTERM; the demo upstream (``--demo``) runs here;
* **reloads reach every worker.** ``POST /-/reload``, SIGHUP to the supervisor and the policy
  watcher all fan out (``guardrail.cli.fanout``): every worker reloads (a refused set keeps its
  last good one, in each), and the answer is 200 only when every worker installed the new set,
  else 422 with the first refusal's file, line and policy id; ``workers`` lists each worker's
  result and digest. ``DELETE /-/state/users/{user}`` reaches every worker's store too;
* **a worker that dies is replaced** and the death logged (``worker_exited``, with its exit
  status); at most :data:`RESTARTS` replacements within :data:`RESTART_WINDOW` seconds
  (:class:`RestartBudget`), past which the supervisor stops everything and exits 1, as a crash
  loop is not going to heal (the kubelet or systemd can restart the whole);
* **SIGTERM or SIGINT drains.** The supervisor closes its copy of the proxy socket, readiness
  answers 503, and each worker gets SIGTERM and drains (no new connection, requests and
  streams in flight get ``drain_timeout``); once every worker has exited the admin listener
  stops and the supervisor exits 0. A second signal cuts what is left at once.

Per process, still: the ``memory`` state backend (each worker keeps its own users; use ``redis``
to share state, the supervisor warns at start), ``max_upstream_per_client`` and the upstream
connection pool (``max_connections``) are per worker. The audit file is shared safely
(``guardrail.observe.audit.RotatingFile``); set ``audit.key`` so conversation hashes agree. The
``stdout`` audit sink and the logs go to the one stdout and stderr every process inherited: on a
pipe (a container's log) the kernel keeps each write whole up to ``PIPE_BUF`` (4096 bytes on
Linux), which audit events and log lines stay under unless ``audit.excerpt`` adds long spans;
prefer the ``file`` sink with excerpts and several workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from guardrail.cli.process import loop_factory, server_for, stop_on_signals
from guardrail.cli.serve import announce, prepare, serve
from guardrail.cli.fanout import Answer, FanOutReloader, FanOutState
from guardrail.cli.worker import main as worker_main
from guardrail.config.policysets import PolicyHolder
from guardrail.config.settings import Settings
from guardrail.demo import build_demo_app
from guardrail.errors import ConfigError
from guardrail.observe import metrics
from guardrail.observe.logs import bind_process, get_logger
from guardrail.policy import PolicySet
from guardrail.proxy.admin import build_admin_app
from guardrail.proxy.reload import reload_on_sighup, watch
from guardrail.state import StateAccess, open_store

__all__ = [
    "RESTARTS",
    "RESTART_WINDOW",
    "RestartBudget",
    "Supervisor",
    "run",
]

RESTARTS = 5
RESTART_WINDOW = 60.0
"""At most :data:`RESTARTS` workers replaced within this many seconds."""
CALL_TIMEOUT = 120.0
"""Seconds a worker may take to answer a fanned-out reload or erase (a reload compiles a set)."""
_EXIT_MARGIN = 10.0
"""Seconds past ``drain_timeout`` a draining worker gets to exit before it is killed."""

_log = get_logger("guardrail.supervisor")


class RestartBudget:
    """Allows at most ``limit`` restarts within any ``window`` seconds of ``clock``."""

    def __init__(
        self,
        limit: int = RESTARTS,
        window: float = RESTART_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._times: list[float] = []

    def allow(self) -> bool:
        """True (and counted) if one more restart fits the budget now."""
        now = self.clock()
        self._times = [t for t in self._times if now - t < self.window]
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


@dataclass
class _Slot:
    """One worker position (0 to N-1) and the process filling it now."""

    index: int
    process: BaseProcess | None = None
    channel: Connection | None = None
    ready: bool = False
    digest: str | None = None
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    """Spawns, watches and replaces the workers; fans calls out to them; drains them."""

    def __init__(
        self,
        settings: Settings,
        proxy_sock: socket.socket,
        budget: RestartBudget | None = None,
        metrics_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.proxy_sock = proxy_sock
        self.budget = budget if budget is not None else RestartBudget()
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.draining = False
        self.status = 0
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()  # made inside the supervisor's running loop
        self._done: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------------ life cycle

    @property
    def ready(self) -> bool:
        return not self.draining and all(slot.ready for slot in self.slots)

    async def start(self) -> None:
        for slot in self.slots:
            await self._spawn(slot)

    async def wait(self) -> None:
        await self._done

    async def _spawn(self, slot: _Slot) -> None:
        if self.draining:  # the proxy socket is closed; nothing to replace any more
            return
        loop = self._loop
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=worker_main,
            args=(slot.index, self.settings, self.proxy_sock, theirs),
            name=f"guardrail-worker-{slot.index}",
        )
        await asyncio.to_thread(process.start)
        theirs.close()
        slot.process, slot.channel, slot.ready, slot.digest = process, ours, False, None
        loop.add_reader(ours.fileno(), self._on_message, slot, ours)
        loop.add_reader(process.sentinel, self._on_exit, slot, process)
        _log.info("worker_started", worker=slot.index, worker_pid=process.pid)
        if self.draining and process.pid is not None:  # SIGTERM came while it was starting
            os.kill(process.pid, signal.SIGTERM)

    def _on_message(self, slot: _Slot, channel: Connection) -> None:
        try:
            message = channel.recv()
        except (EOFError, OSError):
            self._loop.remove_reader(channel.fileno())
            return
        if message[0] == "ready":
            slot.ready, slot.digest = True, message[1]
            if self.ready:
                _log.info(
                    "workers_ready",
                    workers=len(self.slots),
                    pids=self.pids(),
                    metrics_dir=str(self.metrics_dir),
                )
        elif message[0] == "done":
            future = slot.pending.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(message[2])

    def _on_exit(self, slot: _Slot, process: BaseProcess) -> None:
        loop = self._loop
        loop.remove_reader(process.sentinel)
        process.join()
        pid = process.pid
        if slot.channel is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(slot.channel.fileno())
            slot.channel.close()
        for future in slot.pending.values():
            if not future.done():
                future.set_result({"ok": False, "status": "exited"})
        slot.pending.clear()
        slot.process, slot.channel, slot.ready = None, None, False
        if pid is not None:
            # its live gauges stop counting; its counters and histograms stay in the sums
            mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if self.draining:
            _log.info("worker_stopped", worker=slot.index, worker_pid=pid, status=process.exitcode)
            if all(s.process is None for s in self.slots):
                self._finish(0)
            return
        _log.error("worker_exited", worker=slot.index, worker_pid=pid, status=process.exitcode)
        if not self.budget.allow():
            _log.error(
                "worker_restart_limit",
                restarts=self.budget.limit,
                window_seconds=self.budget.window,
                hint="workers keep dying; stopping so the service manager can restart guardrail",
            )
            self.status = 1
            self.stop()
            return
        task = loop.create_task(self._spawn(slot))
        task.add_done_callback(self._spawned)

    def _spawned(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            _log.error("worker_spawn_failed", error_type=type(exc).__name__)
            self.status = 1
            self.stop()

    def stop(self) -> None:
        """SIGTERM/SIGINT: drain every worker, then finish; a second call cuts them off."""
        if self.draining:  # the second signal: cut what is left now
            for slot in self.slots:
                if slot.channel is not None:
                    with contextlib.suppress(OSError, ValueError):
                        slot.channel.send(("stop-now", 0, ""))
            return
        self.draining = True
        _log.info("draining", drain_timeout=self.settings.drain_timeout, workers=self.pids())
        self.proxy_sock.close()  # the workers hold the listener now; they close it as they drain
        self._signal_workers(signal.SIGTERM)
        self._loop.call_later(self.settings.drain_timeout + _EXIT_MARGIN, self._kill_left)
        if all(slot.process is None for slot in self.slots):
            self._finish(self.status)

    def _signal_workers(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, sig)

    def _kill_left(self) -> None:
        left = self.pids()
        if left:
            _log.error("workers_killed", workers=left, hint="they outlived drain_timeout")
            self._signal_workers(signal.SIGKILL)

    def _finish(self, status: int) -> None:
        self.status = self.status or status
        if not self._done.done():
            self._done.set_result(None)

    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid is not None]

    # ------------------------------------------------------------------ fan-out

    async def call(self, op: str, arg: str) -> list[Answer]:
        """Send ``op`` to every live worker; each one's answer (``ok`` False when it died or
        did not answer within :data:`CALL_TIMEOUT`)."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[_Slot, int | None, asyncio.Future[dict[str, Any]]]] = []
        for slot in self.slots:
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            if slot.channel is None:
                future.set_result({"ok": False, "status": "not-running"})
            else:
                ident = next(self._ids)
                slot.pending[ident] = future
                try:
                    slot.channel.send((op, ident, arg))
                except (OSError, ValueError):
                    slot.pending.pop(ident, None)
                    future.set_result({"ok": False, "status": "unreachable"})
            asked.append((slot, slot.pid, future))
        answers: list[Answer] = []
        for slot, pid, future in asked:
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), CALL_TIMEOUT)
            except TimeoutError:
                answer = {"ok": False, "status": "timeout"}
            answers.append((slot.index, pid, answer))
        return answers


@contextlib.contextmanager
def _metrics_folder(settings: Settings) -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the workers: the user's own if set, else a private
    temporary folder made now and removed at exit. A folder that cannot be made (a read-only
    root file system without a writable ``TMPDIR``) is a start-up error."""
    given = os.environ.get(metrics.MULTIPROC_ENV)
    if given:
        yield Path(given)
        return
    try:
        folder = tempfile.mkdtemp(prefix="guardrail-metrics-")
    except OSError as exc:
        source = settings.sources.get("workers", "workers")
        raise ConfigError(
            f"{source}: workers: {settings.workers} workers share their metrics through a "
            f"folder, and none could be made in {tempfile.gettempdir()} "
            f"({exc.strerror or exc}); mount a writable TMPDIR or set {metrics.MULTIPROC_ENV}"
        ) from None
    os.environ[metrics.MULTIPROC_ENV] = folder
    try:
        yield Path(folder)
    finally:
        os.environ.pop(metrics.MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """``guardrail serve``: load and check everything, bind the listeners, then serve in this one
    process (``workers`` 1, the default) or supervise ``workers`` workers until SIGTERM/SIGINT;
    the exit status."""
    prepared = prepare(args)
    settings = prepared.settings
    if settings.workers == 1:
        return serve(prepared)
    prepared.recorder.close()  # checked and opened; the workers write the audit trail
    bind_process(pid=os.getpid())
    if settings.state.backend == "memory":
        _log.warning(
            "state_per_worker",
            workers=settings.workers,
            hint="the memory state backend keeps each worker's users apart; "
            "set state.backend: redis to share per-user state across workers",
        )
    with _metrics_folder(settings) as folder, asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_supervise(settings, prepared.policies, prepared.sockets, folder))


async def _supervise(
    settings: Settings,
    policies: PolicySet,
    listening: tuple[socket.socket, socket.socket, socket.socket | None],
    metrics_dir: Path,
) -> int:
    proxy_sock, admin_sock, demo_sock = listening
    port = proxy_sock.getsockname()[1]
    supervisor = Supervisor(settings, proxy_sock, metrics_dir=metrics_dir)
    holder = PolicyHolder(policies)
    reloader = FanOutReloader(supervisor, holder, settings.policies)
    shared_store = None if settings.state.backend == "memory" else open_store(settings.state)
    admin = build_admin_app(
        holder,
        reloader,
        token=settings.admin_token,
        ready=lambda: supervisor.ready,
        draining=lambda: supervisor.draining,
        state=FanOutState(supervisor)
        if shared_store is None
        else StateAccess(shared_store, settings.state),
    )
    servers: list[uvicorn.Server] = [server_for(admin, settings.admin_host, settings.admin_port)]
    sockets = [admin_sock]
    if demo_sock is not None:
        servers.append(server_for(build_demo_app(), "127.0.0.1", settings.demo_port, demo=True))
        sockets.append(demo_sock)
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, sockets)]
    try:
        with stop_on_signals(supervisor.stop), reload_on_sighup(reloader):
            await supervisor.start()
            if settings.watch_policies:
                sources = tuple(r.policies for r in settings.routes if r.policies is not None)
                watcher = watch(reloader, settings.watch_interval, sources=sources)
                tasks.append(asyncio.create_task(watcher))
            while not supervisor.ready or not all(s.started for s in servers):
                if supervisor.draining or any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.02)
            else:
                announce(settings, policies, port)
            waiting = asyncio.create_task(supervisor.wait())
            await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # a listener failed: stop the workers too
                supervisor.status = 1
                supervisor.stop()
                await waiting
    finally:
        for server in servers:
            server.should_exit = True
        for task in tasks[len(servers) :]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if shared_store is not None:
            await shared_store.aclose()
    return supervisor.status
