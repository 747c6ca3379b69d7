"""What every serving process shares: a single proxy, a worker, and the supervisor.

* the event loop (:func:`loop_factory`: uvloop where installed), the GIL switch interval
  (:data:`SWITCH_INTERVAL`) and the open-file limit (:func:`raise_file_limit`);
* listening sockets bound before anything is served (:func:`bind`: a busy port is a start-up
  error naming the key), and one uvicorn server per listener with the proxy's connection
  limits (:func:`server_for`);
* the drain on SIGTERM (:class:`Drain`) and the signal handlers that call it
  (:func:`stop_on_signals`);
* the garbage collector kept off long-lived objects (:func:`settle_memory`,
  :func:`unsettle_memory`);
* the policy reloader of one process and its file watcher (:func:`reloader_for`,
  :func:`watcher_for`).

``guardrail.cli.serve`` (one process), ``guardrail.cli.worker`` and ``guardrail.cli.supervisor``
are built from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from guardrail.config.policysets import PolicySets
from guardrail.config.settings import Settings
from guardrail.errors import ConfigError
from guardrail.observe.logs import get_logger
from guardrail.observe.record import Recorder
from guardrail.proxy.reload import Reloader, watch
from guardrail.proxy.serverproto import protocol_class

__all__ = [
    "SWITCH_INTERVAL",
    "Drain",
    "bind",
    "loop_factory",
    "raise_file_limit",
    "reloader_for",
    "server_for",
    "settle_memory",
    "stop_on_signals",
    "unsettle_memory",
    "watcher_for",
]


SWITCH_INTERVAL = 0.001
"""Seconds a worker thread may hold the GIL while the event loop waits for it (CPython's
default is 0.005). Large requests are parsed and evaluated in worker threads
(``guardrail.proxy.limits.Worker``); every time the loop wakes up it needs the GIL back, and a small
request's few wake-ups each waited up to the whole interval. Measured in bench/README.md
("One large request"): with a 16 MB conversation in flight, small requests' p50 halved."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency except on Windows), else asyncio's.

    Measured in bench/README.md: with httptools (which uvicorn picks by itself once installed),
    15-33% more requests per second at 16 clients. uvicorn's own ``loop="auto"`` does not apply
    here because the servers run inside this process's own loop.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def raise_file_limit(needed: int) -> None:
    """Raise the soft limit on open files towards ``needed`` (client connections on both
    listeners, upstream connections, files), as far as the hard limit allows: a common soft
    limit of 1024 would refuse connections long before ``max_client_connections``."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < cap:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))


def bind(host: str, port: int, key: str) -> socket.socket:
    """Listen on ``host:port`` now, so a busy port is a start-up error, not a log line later.

    The socket is made with ``proto=IPPROTO_TCP`` on purpose: asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on sockets whose ``proto`` says TCP, and accepted connections inherit
    the listener's. With ``socket.create_server`` (proto 0) every response's body segment waited
    for the client's delayed ACK, about 40 ms on Linux (measured in bench/README.md).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by :func:`stop_on_signals` for all servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Drain:
    """SIGTERM or SIGINT, the first time: the proxy listener stops accepting, readiness answers
    503 (``draining``) while requests and streams in flight finish, for at most
    ``drain_timeout`` (then they are cut); once the proxy is done the other listeners stop and
    the process exits 0. A second signal stops everything at once."""

    def __init__(self, proxy: uvicorn.Server, servers: list[uvicorn.Server]) -> None:
        self.proxy, self.servers = proxy, servers
        self.draining = False

    def __call__(self) -> None:
        if self.draining:  # the second signal: now
            for server in self.servers:
                server.force_exit = server.should_exit = True
            return
        self.draining = True
        timeout = self.proxy.config.timeout_graceful_shutdown
        get_logger("guardrail.serve").info("draining", drain_timeout=timeout)
        self.proxy.should_exit = True


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Generator[None, None, None]:
    """SIGINT/SIGTERM call ``stop`` (see :class:`Drain`)."""

    loop = asyncio.get_running_loop()
    handled = [sig for sig in (signal.SIGINT, signal.SIGTERM) if hasattr(signal, sig.name)]
    try:
        for sig in handled:
            loop.add_signal_handler(sig, stop)
    except (NotImplementedError, RuntimeError):  # no signal support here (not the main thread)
        handled = []
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def server_for(
    app: ASGIApp, host: str, port: int, settings: Settings | None = None, demo: bool = False
) -> uvicorn.Server:
    """A uvicorn server for one listener; with ``settings``, its connection limits
    (``guardrail.proxy.serverproto``: header timeout, most connections, keep-alive timeout)."""
    limits: dict[str, object] = {}
    if settings is not None:
        limits["http"] = protocol_class(
            header_timeout=settings.header_timeout,
            max_connections=settings.max_client_connections,
        )
        limits["timeout_keep_alive"] = settings.keepalive_timeout
        limits["timeout_graceful_shutdown"] = settings.drain_timeout
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our logging set-up renders uvicorn's records too
        access_log=False,  # the proxy writes its own canonical line per request
        server_header=False,  # the proxy passes the upstream's Server and Date headers through
        date_header=demo,  # the demo upstream behaves like any upstream
        proxy_headers=False,
        lifespan="on",
        **limits,  # type: ignore[arg-type]
    )
    return _Server(config)


def reloader_for(app: Any, settings: Settings, recorder: Recorder) -> Reloader:
    """This process's reloader: every route's set with the main one, metric series installed,
    the memory settled again a while after each install."""
    sets: PolicySets = app.state.policy_sets
    loop = asyncio.get_running_loop()

    def installed() -> None:  # in the reload's worker thread
        unsettle_memory()
        loop.call_soon_threadsafe(loop.call_later, _RESETTLE_SECONDS, settle_memory)

    return Reloader(
        app.state.policies,
        settings.policies,
        on_install=sets.installer(recorder.install),
        installed=installed,
        load=sets.load,
    )


def watcher_for(reloader: Reloader, sets: PolicySets, settings: Settings) -> Any:
    """The policy files' watcher (None when ``watch_policies`` is off): every source's files."""
    if not settings.watch_policies:
        return None
    return watch(reloader, settings.watch_interval, sources=sets.sources)


def settle_memory() -> None:
    """Move everything alive now (the compiled policy sets, the apps, the imported modules) out
    of the cyclic garbage collector's sight (``gc.freeze``): its collections then walk only what
    requests create, so their pauses, which every request in flight waits out, stay short.
    Measured in bench/README.md: p99 at 16 clients 26.8 -> 10.1 ms. Reference counting still
    frees frozen objects; only cycles among them wait for :func:`unsettle_memory`."""
    gc.collect()
    gc.freeze()


def unsettle_memory() -> None:
    """Give frozen objects back to the collector: after a reload, so the previous policy set can
    be freed. :func:`settle_memory` runs again :data:`_RESETTLE_SECONDS` later, when requests
    that started under the previous set have (almost always) finished; a set still held then
    stays frozen until the next reload hands it back."""
    gc.unfreeze()


_RESETTLE_SECONDS = 60.0
