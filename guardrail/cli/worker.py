"""One worker of ``guardrail serve --workers N``: the proxy app on a listening socket it was handed.

The supervisor (``guardrail.cli.supervisor``) spawns each worker as a fresh interpreter
(multiprocessing's ``spawn``, never ``fork``), so ``PROMETHEUS_MULTIPROC_DIR`` is in the
environment before prometheus-client is first imported and every value the worker records is
shared with the supervisor's ``/metrics``. The worker gets the settings the supervisor resolved,
the proxy's listening socket (bound once, by the supervisor) and one end of a pipe, its control
channel. What a worker guarantees:

* it loads its policy sets before it accepts a connection, and says ``ready`` on the channel (with
  its policy digest) only once its proxy listener serves; a set that does not load ends the
  worker with status 2 and the error (file, line, policy id) in the log;
* ``reload`` on the channel runs the same :class:`~guardrail.proxy.reload.Reloader` as a
  single process (a refused set keeps the last good one) and answers with its result; ``erase``
  erases a user from this worker's own state store;
* SIGTERM drains like a single process (:class:`~guardrail.cli.process.Drain`): no new
  connection, requests and streams in flight get ``drain_timeout``, then exit 0. More SIGTERMs
  change nothing (a service manager such as systemd may signal the whole group while the
  supervisor forwards its own): only ``stop-now`` on the channel, the supervisor's answer to a
  second signal, cuts what is left. SIGINT and SIGHUP are ignored: a terminal's Ctrl+C or
  hang-up reaches the whole process group, and only the supervisor decides (it forwards
  SIGTERM, and fans reloads out itself);
* the supervisor gone (the channel closed without a word), the worker drains and exits rather
  than serve on unsupervised;
* every log line it writes carries ``worker`` (its slot, 0 to N-1) and ``pid``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

from guardrail.cli.process import (
    SWITCH_INTERVAL,
    Drain,
    loop_factory,
    raise_file_limit,
    reloader_for,
    server_for,
    settle_memory,
)
from guardrail.config.recording import recorder_for
from guardrail.config.settings import Settings
from guardrail.errors import GuardrailError, PolicyError, StateUnavailable
from guardrail.observe.logs import bind_process, configure_logging, get_logger
from guardrail.observe.record import Recorder
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.sources import PolicySource
from guardrail.proxy.app import build_app
from guardrail.proxy.reload import Reloader
from guardrail.state import StateAccess

__all__ = ["START_FAILED", "main"]

START_FAILED = 2
"""Exit status of a worker whose settings or policies did not load."""

_log = get_logger("guardrail.worker")


def main(index: int, settings: Settings, sock: socket.socket, channel: Connection) -> None:
    """The worker process's entry point (multiprocessing's target)."""
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    bind_process(worker=index, pid=os.getpid())
    try:
        policies = load_policies(settings.policies)
        route_policies = {
            route.policies: load_policies(route.policies)
            for route in settings.routes
            if route.policies is not None
        }
        recorder = recorder_for(settings)
    except PolicyError as exc:
        _log.error(
            "worker_start_failed",
            file=exc.file,
            line=exc.line,
            policy_id=exc.policy_id,
            error=exc.message,
        )
        sys.exit(START_FAILED)
    except (GuardrailError, OSError) as exc:
        _log.error("worker_start_failed", error=str(exc))
        sys.exit(START_FAILED)
    sys.setswitchinterval(SWITCH_INTERVAL)
    raise_file_limit(2 * settings.max_client_connections + settings.max_connections + 64)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_work(settings, policies, route_policies, recorder, sock, channel))


async def _work(
    settings: Settings,
    policies: PolicySet,
    route_policies: dict[PolicySource, PolicySet],
    recorder: Recorder,
    sock: socket.socket,
    channel: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    app = build_app(settings, policies, recorder=recorder, route_policies=route_policies)
    proxy = server_for(app, settings.host, sock.getsockname()[1], settings)
    reloader = reloader_for(app, settings, recorder)
    access = StateAccess(app.state.state_store, settings.state)
    control = _Control(channel, reloader, access, Drain(proxy, [proxy]), loop)
    loop.add_signal_handler(signal.SIGTERM, control.drain_once)
    serving = asyncio.create_task(proxy.serve(sockets=[sock]))
    while not proxy.started and not serving.done():
        await asyncio.sleep(0.02)
    if proxy.started:
        settle_memory()
        loop.add_reader(channel.fileno(), control.on_message)
        _send(channel, ("ready", policies.digest))
        _log.info("worker_ready", policy_digest=policies.digest)
    await serving
    control.close()


class _Control:
    """The worker's end of its pipe to the supervisor: reloads and erases run here and are
    answered; a "stop-now", or the supervisor gone, drains the worker."""

    def __init__(
        self,
        channel: Connection,
        reloader: Reloader,
        access: StateAccess,
        drain: Drain,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.channel, self.reloader, self.access = channel, reloader, access
        self.drain, self.loop = drain, loop
        self.running: set[asyncio.Task[None]] = set()

    async def answer(self, op: str, ident: int, arg: str) -> None:
        payload: dict[str, Any]
        if op == "reload":
            result = await self.reloader.areload(arg)
            payload = {"ok": result.ok, **result.to_dict()}
        elif op == "erase":
            try:
                payload = {"ok": True, "erased": await self.access.erase(arg)}
            except StateUnavailable as exc:
                payload = {"ok": False, "cause": exc.cause}
            _log.info("user_state_erase", **payload)  # never the user
        else:
            payload = {"ok": False, "cause": f"unknown operation {op!r}"}
        _send(self.channel, ("done", ident, payload))

    def drain_once(self) -> None:  # SIGTERM may come twice: from a service manager and from
        if not self.drain.draining:  # the supervisor; only the supervisor's "stop-now" cuts
            self.drain()

    def on_message(self) -> None:
        try:
            op, ident, arg = self.channel.recv()
        except (EOFError, OSError):  # the supervisor is gone: finish what runs, then stop
            self.loop.remove_reader(self.channel.fileno())
            _log.warning("supervisor_gone")
            self.drain_once()
            return
        if op == "stop-now":  # the supervisor's second SIGTERM/SIGINT
            self.drain_once()
            self.drain()
            return
        task = self.loop.create_task(self.answer(op, ident, arg))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def close(self) -> None:
        if not self.channel.closed:
            self.loop.remove_reader(self.channel.fileno())
        for task in self.running:
            task.cancel()


def _send(channel: Connection, message: tuple[object, ...]) -> None:
    try:
        channel.send(message)
    except (OSError, ValueError):  # the supervisor is gone; on_message drains
        pass
