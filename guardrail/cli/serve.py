"""Run the guardrail proxy in front of an OpenAI-compatible API.

Settings come from built-in defaults, then the --config file, then GUARDRAIL_* environment
variables, then these flags. The settings and the policy set are loaded and checked before
anything listens: a bad value or a malformed policy stops start-up with a one-line error naming
the key or the file and line (exit status 2). With --demo, a scripted demo upstream is served on
127.0.0.1 in the same process and the proxy points at it.

A second listener, the admin listener (--admin-host, default the proxy's host; --admin-port,
default 9787), serves /metrics, POST /-/reload, /dashboard, /-/stats, /-/healthy and /-/ready;
set GUARDRAIL_ADMIN_TOKEN to require a bearer token there. SIGHUP reloads the policies, and so
does a change to the policy files with --watch-policies; a set that does not load is refused and
the last good one keeps serving.

With --workers N (N > 1) this process becomes a supervisor of N proxy worker processes on the
same port, with one admin listener for all of them (``guardrail.cli.supervisor``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import signal
import socket
import sys
from collections.abc import Callable, Generator
from typing import Any
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from guardrail.version import __version__
from guardrail.proxy.admin import build_admin_app
from guardrail.proxy.app import build_app
from guardrail.demo import DEMO_MODEL, build_demo_app
from guardrail.errors import ConfigError
from guardrail.observe.logs import configure_logging, get_logger
from guardrail.config.recording import recorder_for
from guardrail.observe.record import Recorder
from guardrail.policy import PolicySet, load_policies
from guardrail.policy.sources import PolicySource
from guardrail.config.policysets import PolicySets
from guardrail.proxy.reload import Reloader, Reloads, fingerprint, reload_on_sighup, watch
from guardrail.proxy.serverproto import protocol_class
from guardrail.config.settings import Settings, load_settings
from guardrail.state import StateAccess, StateStore

__all__ = [
    "SWITCH_INTERVAL",
    "Prepared",
    "add_arguments",
    "loop_factory",
    "prepare",
    "run",
    "serve",
    "settle_memory",
    "unsettle_memory",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``guardrail serve``; each overrides its config key and environment variable."""
    add = parser.add_argument
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", help="port to listen on (default 8787; 0 picks a free port)")
    add("--upstream", metavar="URL", help="base URL of the OpenAI-compatible API")
    add(
        "--policies",
        metavar="PATH",
        action="append",
        help="policy folder, YAML file or 'default' (the bundled pack); repeat it (or separate "
        "with commas) to apply several in order (default: default)",
    )
    add("--config", metavar="FILE", help="YAML config file (see README for the keys)")
    add("--locale", help="default locale for referral resources (default en-US)")
    add(
        "--demo",
        action="store_true",
        default=None,
        help="serve the built-in demo upstream and use it",
    )
    add("--demo-port", metavar="PORT", help="port of the demo upstream (default: port + 1)")
    add("--admin-host", metavar="HOST", help="address of the admin listener (default: --host)")
    add("--admin-port", metavar="PORT", help="port of the admin listener: metrics, reload (9787)")
    add(
        "--watch-policies",
        action="store_true",
        default=None,
        help="reload the policies when their files change",
    )
    add("--audit-sink", choices=["stdout", "file", "off"], help="where audit events go (stdout)")
    add("--audit-path", metavar="FILE", help="audit file of the file sink (rotated by size)")
    add(
        "--workers",
        metavar="N",
        help="proxy processes on the one port (default 1; see guardrail.cli.supervisor)",
    )
    add("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    add(
        "--log-format",
        choices=["auto", "json", "console"],
        help="default auto (JSON unless a terminal)",
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Prepared:
    """Everything ``guardrail serve`` loads and checks before it serves: the settings (with the
    ports actually bound), the policy sets, the recorder and the listening sockets."""

    settings: Settings
    policies: PolicySet
    route_policies: dict[PolicySource, PolicySet]
    recorder: Recorder
    sockets: tuple[socket.socket, socket.socket, socket.socket | None]


def run(args: argparse.Namespace) -> int:
    """Load and check everything, bind the sockets, then serve in this process until interrupted
    (``guardrail.cli.supervisor.run`` decides between this and several workers)."""
    return serve(prepare(args))


def serve(prepared: Prepared) -> int:
    """Serve what :func:`prepare` readied, in this one process, until SIGTERM/SIGINT."""
    settings = prepared.settings
    sys.setswitchinterval(SWITCH_INTERVAL)
    _raise_file_limit(2 * settings.max_client_connections + settings.max_connections + 64)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(
            _serve(
                settings,
                prepared.policies,
                prepared.route_policies,
                prepared.recorder,
                prepared.sockets,
            )
        )
    return 0


def prepare(args: argparse.Namespace) -> Prepared:
    """Resolve the settings, load the policy sets, open the audit sink, bind every listener:
    each failure is a :class:`~guardrail.errors.ConfigError` or policy error before anything
    serves."""
    cli = {
        "host": args.host,
        "port": args.port,
        "upstream": args.upstream,
        "policies": ",".join(args.policies) if args.policies else None,
        "locale": args.locale,
        "demo": args.demo,
        "demo_port": args.demo_port,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "admin_host": args.admin_host,
        "admin_port": args.admin_port,
        "workers": args.workers,
        "watch_policies": args.watch_policies,
        "audit.sink": args.audit_sink,
        "audit.path": args.audit_path,
    }
    settings = load_settings(cli=cli, config=args.config)
    configure_logging(settings.log_level, settings.log_format)
    policies = load_policies(settings.policies)
    route_policies = {
        route.policies: load_policies(route.policies)
        for route in settings.routes
        if route.policies is not None
    }
    recorder = _recorder(settings)
    proxy_sock = _bind(settings.host, settings.port, "port")
    admin_sock = _bind(settings.admin_host, settings.admin_port, "admin_port")
    settings = replace(settings, admin_port=admin_sock.getsockname()[1])
    demo_sock = _bind("127.0.0.1", settings.demo_port, "demo_port") if settings.demo else None
    if demo_sock is not None:
        settings = settings.with_demo_port(demo_sock.getsockname()[1])
    sockets = (proxy_sock, admin_sock, demo_sock)
    return Prepared(settings, policies, route_policies, recorder, sockets)


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


def _raise_file_limit(needed: int) -> None:
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


def _bind(host: str, port: int, key: str) -> socket.socket:
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
    """A uvicorn server whose signals are handled by :func:`_stop_on_signals` for all servers."""

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
def _stop_on_signals(stop: Callable[[], None]) -> Generator[None, None, None]:
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


def _server(
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


async def _serve(
    settings: Settings,
    policies: PolicySet,
    route_policies: dict[PolicySource, PolicySet],
    recorder: Recorder,
    listening: tuple[socket.socket, socket.socket, socket.socket | None],
) -> None:
    proxy_sock, admin_sock, demo_sock = listening
    port = proxy_sock.getsockname()[1]
    app = build_app(settings, policies, recorder=recorder, route_policies=route_policies)
    proxy = _server(app, settings.host, port, settings)
    reloader = _reloader(app, settings, recorder)
    servers: list[uvicorn.Server] = [proxy]
    drain = Drain(proxy, servers)
    # the proxy's own store, so an erase reaches the state the requests use
    store: StateStore = app.state.state_store
    admin = build_admin_app(
        app.state.policies,
        reloader,
        token=settings.admin_token,
        ready=lambda: bool(proxy.started),
        draining=lambda: drain.draining,
        state=StateAccess(store, settings.state),
    )
    servers.append(_server(admin, settings.admin_host, settings.admin_port, settings))
    sockets = [proxy_sock, admin_sock]
    if demo_sock is not None:
        servers.append(_server(build_demo_app(), "127.0.0.1", settings.demo_port, demo=True))
        sockets.append(demo_sock)
    with _stop_on_signals(drain), reload_on_sighup(reloader):
        watcher = _watcher(reloader, app.state.policy_sets, settings)
        await _run(servers, sockets, watcher, lambda: _announce(settings, policies, port))


def _reloader(app: Any, settings: Settings, recorder: Recorder) -> Reloader:
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


def _watcher(reloader: Reloader, sets: PolicySets, settings: Settings) -> Any:
    """The policy files' watcher (None when ``watch_policies`` is off): every source's files."""
    if not settings.watch_policies:
        return None
    if sets.sources:  # routes with their own sets: watch every source
        return watch_all(reloader, sets.sources, settings.watch_interval)
    return watch(reloader, settings.watch_interval)


async def _run(
    servers: list[uvicorn.Server],
    sockets: list[socket.socket],
    watcher: Any,
    announce: Callable[[], None],
) -> None:
    """Serve every listener; announce once all listen; when one stops, stop them all."""
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, sockets)]
    if watcher is not None:
        tasks.append(asyncio.create_task(watcher))
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.02)
    else:
        settle_memory()
        announce()
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:  # one stopped (signal or failure): stop the others too
        server.should_exit = True
    for task in tasks[len(servers) :]:  # the policy watcher
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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


async def watch_all(reloader: Reloads, sources: tuple[PolicySource, ...], interval: float) -> None:
    """Like :func:`guardrail.proxy.reload.watch`, over the main policy source and the routes' own:
    a change to any of them, once it has held still for one interval, reloads them all."""

    def seen() -> tuple[object, ...]:
        return tuple(fingerprint(path) for path in (reloader.source, *sources))

    last = await asyncio.to_thread(seen)
    pending: object = None
    while True:
        await asyncio.sleep(interval)
        now = await asyncio.to_thread(seen)
        if now == last:
            pending = None
        elif now == pending:
            last, pending = now, None
            await reloader.areload("watch")
        else:
            pending = now


def _announce(settings: Settings, policies: PolicySet, port: int) -> None:
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    get_logger("guardrail.serve").info(
        "serving",
        version=__version__,
        listen=f"{host}:{port}",
        upstream=settings.upstream,
        routes=[f"{r.prefix} -> {r.upstream}" for r in settings.routes],
        policies=policies.source,
        policy_count=len(policies.policies),
        policy_digest=policies.digest,
        demo=settings.demo,
        admin=_hostport(settings.admin_host, settings.admin_port),
        admin_token=settings.admin_token is not None,
        watch_policies=settings.watch_policies,
        audit=settings.audit.sink,
    )
    if settings.admin_token is None and not _loopback(settings.admin_host):
        get_logger("guardrail.serve").warning(
            "admin_listener_open",
            admin=_hostport(settings.admin_host, settings.admin_port),
            hint="anyone reaching this address can reload policies; set GUARDRAIL_ADMIN_TOKEN",
        )
    if settings.demo:
        admin_host = settings.admin_host
        admin_host = "127.0.0.1" if admin_host in ("0.0.0.0", "::") else admin_host
        print(
            demo_banner(
                f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}",
                settings.upstream or "",
                f"http://{_hostport(admin_host, settings.admin_port)}",
            ),
            flush=True,
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _recorder(settings: Settings) -> Recorder:
    """The recorder; a file audit sink's folder is created when missing (a fresh host), and a
    path that still cannot be opened is a ConfigError naming where the value came from."""
    path = settings.audit.path if settings.audit.sink == "file" else None
    try:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return recorder_for(settings)
    except OSError as exc:
        source = settings.sources.get("audit.path", "audit.path")
        where = f"{source}: audit.path: cannot open {path}"
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None


def demo_banner(proxy_url: str, upstream_url: str, admin_url: str | None = None) -> str:
    """The ready message of ``guardrail serve --demo``: what runs where, and how to try it."""
    watch = f"\nWatch the policy hits live: {admin_url}/dashboard (metrics: {admin_url}/metrics)\n"
    prompt = "You are the only one I can talk to."
    return f"""
guardrail {__version__} is guarding {proxy_url} -> demo upstream {upstream_url}

Try it with curl:
  curl -s {proxy_url}/v1/chat/completions \\
    -H 'content-type: application/json' \\
    -d '{{"model": "{DEMO_MODEL}", "messages": [{{"role": "user", "content": "{prompt}"}}]}}'

Choose the upstream's reply yourself: add -H 'x-demo-reply: <a script name or any text>'.
The demo speaks /v1/chat/completions, /v1/responses, /v1/messages and /api/chat.

Or with the openai Python package:
  from openai import OpenAI
  client = OpenAI(base_url="{proxy_url}/v1", api_key="demo")
  reply = client.chat.completions.create(
      model="{DEMO_MODEL}", messages=[{{"role": "user", "content": "{prompt}"}}])
  print(reply.choices[0].message.content)
  print(reply.model_extra["guardrail"])
{watch if admin_url else ""}
Ports taken? `--port 9000` moves the proxy, the demo upstream (port + 1) and the admin listener
(port + 1000) together; `--demo-port` and `--admin-port` set those two apart.

This is a DEMO: the upstream is guardrail's own scripted stand-in, not a language model. Some of
its canned replies are deliberately poor so you can watch the policies rewrite them. Other
prompts to try: "I'm so overwhelmed I can't cope", "Was I right to quit?". Ctrl+C stops it.
""".strip("\n")
