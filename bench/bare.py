"""The bare pass-through: the yardstick guardrail's request path is measured against (issue 12).

    python -m bench.bare --upstream URL --port N

What any proxy in guardrail's shape must do before a single policy runs, and nothing more: a
Starlette app with one catch-all route, served by uvicorn with httptools on uvloop from a
listener made like ``guardrail serve``'s (``TCP_NODELAY`` on accepted connections), and
``gc.freeze`` after start-up as ``guardrail serve`` does. Per request it:

* reads the body and, when it is JSON, parses and re-serialises it (``guardrail.formats.jsontext``,
  the functions guardrail uses);
* forwards it with the same upstream client (``guardrail.proxy.upstream.build_client``: aiohttp's
  pool behind the httpx seam), to the target URL guardrail would use, with the same header rule
  (hop-by-hop headers dropped);
* parses and re-serialises a JSON reply and returns it with a fresh ``Content-Length``; an event
  stream is decoded event by event (``guardrail.formats.sse``) and every JSON ``data`` is parsed
  and re-serialised as it passes.

No policies, limits, metrics, audit or log line: the difference between this target and
``guardrail`` in one benchmark run is what guardrail's own work costs. ``bench.run`` starts it
as the ``bare`` target and reports guardrail's throughput and added latency as ratios of it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from guardrail.cli.process import loop_factory
from guardrail.config.loading import load_settings
from guardrail.config.settings import Settings
from guardrail.formats import jsontext
from guardrail.formats.sse import SSEDecoder, SSEEvent, encode_event
from guardrail.proxy.upstream import (
    build_client,
    request_headers,
    response_headers,
    send,
    target_url,
)

__all__ = ["build_bare_app", "main", "reserialised", "reserialised_event"]

_STALE = frozenset({b"content-length", b"content-encoding", b"etag"})
_LENGTH = (b"content-length",)


def reserialised(body: bytes) -> bytes:
    """``body`` parsed and written again when it is JSON; other bytes unchanged."""
    try:
        value = jsontext.loads(body)
    except ValueError:
        return body
    return jsontext.dumps(value)


def reserialised_event(event: SSEEvent) -> bytes:
    """One event stream block: a JSON ``data`` parsed and written again, anything else as sent."""
    if event.data is None or not event.data.startswith(("{", "[")):
        return event.raw
    try:
        value = json.loads(event.data)
    except ValueError:
        return event.raw
    return encode_event(SSEEvent(data=jsontext.dumps_text(value), event=event.event, raw=b""))


def build_bare_app(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """The bare pass-through as an ASGI app (``transport`` replaces the upstream's, for tests)."""
    client = build_client(settings, transport)
    base = httpx.URL(settings.upstream or "")

    async def forward(request: Request) -> Response:
        scope = request.scope
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = target_url(base, raw_path, scope["query_string"])
        body = reserialised(await request.body())
        headers = request_headers(scope["headers"], drop=_LENGTH)  # httpx sets the new length
        upstream = await send(client, request.method, url, headers, body or None)
        back = response_headers(upstream.headers.raw)
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            plain = _plain(back, drop=_STALE)
            return StreamingResponse(_events(upstream), upstream.status_code, headers=plain)
        try:
            raw = await upstream.aread()
        finally:
            await upstream.aclose()
        out = reserialised(raw)
        stale = _STALE if out is not raw else frozenset(_LENGTH)  # bytes not JSON: as they came
        fresh = [*_drop(back, stale), (b"content-length", str(len(out)).encode("ascii"))]
        response = Response(out, status_code=upstream.status_code)
        response.raw_headers = fresh
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[Route("/{path:path}", forward, methods=["GET", "POST"])], lifespan=lifespan
    )


async def _events(upstream: httpx.Response) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    try:
        async for chunk in upstream.aiter_raw():
            out = b"".join(reserialised_event(e) for e in decoder.feed(chunk))
            if out:
                yield out
        rest = b"".join(e.raw for e in decoder.flush())
        if rest:
            yield rest
    finally:
        await upstream.aclose()


Headers = list[tuple[bytes, bytes]]


def _drop(headers: Headers, names: frozenset[bytes]) -> Headers:
    return [(n, v) for n, v in headers if n not in names]


def _plain(headers: Headers, drop: frozenset[bytes]) -> dict[str, str]:
    return {n.decode("latin-1"): v.decode("latin-1") for n, v in _drop(headers, drop)}


async def _serve(app: Starlette, port: int) -> None:
    from bench.proxy_variant import listen

    sock = listen(port, "tcp")  # proto=IPPROTO_TCP, like guardrail serve's listener
    config = uvicorn.Config(
        app,
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    gc.collect()
    gc.freeze()  # as guardrail serve's settle_memory
    await task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = load_settings(cli={"upstream": args.upstream})
    app = build_bare_app(settings)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(app, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
