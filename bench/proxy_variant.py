"""guardrail's proxy with the knobs the benchmark compares: upstream transport and uvicorn options.

    python -m bench.proxy_variant --upstream URL --port N [--transport aiohttp|httpx|httpx-aiohttp]
        [--http auto|h11|httptools] [--loop auto|asyncio|uvloop] [--log-level info]
        [--access-log] [--workers N] [--policies PATH] [--bind tcp|create_server]
        [--set KEY=VALUE ...]

It builds the same app as ``guardrail serve`` (settings, policy set, ``build_app``), so the
transport goes through ``guardrail.proxy.upstream.build_client`` exactly as it would in production;
only the transport object and the uvicorn config differ. Transports: ``aiohttp``
(:mod:`guardrail.proxy.transport`, as shipped), ``httpx`` (httpx's own pool, shipped before the
benchmark chose aiohttp's), ``httpx-aiohttp`` (that package's transport, its session set up to
store no cookies, ignore proxy variables and add no headers). With ``--workers N`` the
listening socket is bound once and N processes serve it.

``--bind``: ``tcp`` (default) creates the listening socket with ``proto=IPPROTO_TCP``, so
asyncio sets ``TCP_NODELAY`` on every accepted connection; ``create_server`` binds with
``socket.create_server`` as ``guardrail serve`` does today, whose ``proto`` is 0, so asyncio
leaves Nagle's algorithm on and a body written after its headers waits for the client's
delayed ACK (about 40 ms on Linux loopback). See README.md, "The 40 ms stall".
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence

import httpx
import uvicorn

from guardrail.proxy.app import build_app
from guardrail.observe.logs import configure_logging
from guardrail.policy import load_policies
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings

__all__ = ["httpx_aiohttp_transport", "listen", "main", "transport_for"]


def transport_for(name: str, settings: Settings) -> httpx.AsyncBaseTransport | None:
    """The transport called ``name`` (None: the shipped one, built by ``build_client``)."""
    if name == "httpx-aiohttp":
        return httpx_aiohttp_transport(settings)
    if name == "httpx":
        return httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=min(64, settings.max_connections),
            )
        )
    return None


def httpx_aiohttp_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The ``httpx-aiohttp`` transport, set up to keep ``build_client``'s guarantees.

    The session is created lazily (inside the running loop). It stores no cookies (the client is
    shared by all users), ignores proxy environment variables, adds no User-Agent / Accept /
    Accept-Encoding / Content-Type of its own, and leaves bodies encoded as the upstream sent them.
    """
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=settings.max_connections, limit_per_host=0)
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    return AiohttpTransport(client=session)


def _config(app: object, args: argparse.Namespace) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=args.http,
        loop=args.loop,
        log_config=None,
        access_log=args.access_log,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        lifespan="on",
    )


def _serve(sock: socket.socket, args: argparse.Namespace) -> None:
    cli: dict[str, object] = dict(item.split("=", 1) for item in args.set)
    cli |= {"upstream": args.upstream, "policies": args.policies, "log_level": args.log_level}
    settings = load_settings(cli=cli)
    configure_logging(settings.log_level, "json")
    transport = transport_for(args.transport, settings)
    app = build_app(settings, load_policies(settings.policies), transport=transport)
    uvicorn.Server(_config(app, args)).run(sockets=[sock])  # runs the loop --loop asks for


def listen(port: int, bind: str) -> socket.socket:
    """The listening socket on 127.0.0.1:``port`` (see the module docstring for ``bind``)."""
    if bind == "create_server":
        return socket.create_server(("127.0.0.1", port), backlog=2048)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_variant")
    add = parser.add_argument
    add("--upstream", required=True)
    add("--port", type=int, required=True)
    add("--policies", default=None)
    add("--transport", choices=["httpx", "httpx-aiohttp", "aiohttp"], default="aiohttp")
    add("--http", choices=["auto", "h11", "httptools"], default="auto")
    add("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    add("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    add("--access-log", action="store_true", help="uvicorn's access log on (off by default)")
    add("--workers", type=int, default=1)
    add("--bind", choices=["tcp", "create_server"], default="tcp")
    add(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. holdback=none",
    )
    args = parser.parse_args(argv)
    sock = listen(args.port, args.bind)
    sock.set_inheritable(True)
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break
    _serve(sock, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
