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
import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn

from guardrail.cli.process import (
    SWITCH_INTERVAL,
    Drain,
    bind,
    loop_factory,
    raise_file_limit,
    reloader_for,
    server_for,
    settle_memory,
    stop_on_signals,
    watcher_for,
)
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
from guardrail.proxy.reload import reload_on_sighup
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings
from guardrail.state import StateAccess, StateStore

__all__ = [
    "Prepared",
    "add_arguments",
    "announce",
    "prepare",
    "run",
    "serve",
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
    raise_file_limit(2 * settings.max_client_connections + settings.max_connections + 64)
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
    proxy_sock = bind(settings.host, settings.port, "port")
    admin_sock = bind(settings.admin_host, settings.admin_port, "admin_port")
    settings = replace(settings, admin_port=admin_sock.getsockname()[1])
    demo_sock = bind("127.0.0.1", settings.demo_port, "demo_port") if settings.demo else None
    if demo_sock is not None:
        settings = settings.with_demo_port(demo_sock.getsockname()[1])
    sockets = (proxy_sock, admin_sock, demo_sock)
    return Prepared(settings, policies, route_policies, recorder, sockets)


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
    proxy = server_for(app, settings.host, port, settings)
    reloader = reloader_for(app, settings, recorder)
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
    servers.append(server_for(admin, settings.admin_host, settings.admin_port, settings))
    sockets = [proxy_sock, admin_sock]
    if demo_sock is not None:
        servers.append(server_for(build_demo_app(), "127.0.0.1", settings.demo_port, demo=True))
        sockets.append(demo_sock)
    with stop_on_signals(drain), reload_on_sighup(reloader):
        watcher = watcher_for(reloader, app.state.policy_sets, settings)
        await _run(servers, sockets, watcher, lambda: announce(settings, policies, port))


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


def announce(settings: Settings, policies: PolicySet, port: int) -> None:
    """Log the one start-up line: where the proxy listens, its upstreams and policies."""
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
