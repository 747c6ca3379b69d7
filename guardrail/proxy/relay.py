"""The ASGI response of a guarded stream: upstream bytes through a StreamGuard to the client.

:class:`GuardedStream` runs when the pipeline has an upstream stream reply (2xx, the API's stream
media type) and a :class:`~guardrail.guard.stream.StreamGuard` for it. What it guarantees:

* the response starts at once, with the upstream's status and headers, except the ones that
  described the upstream's bytes (``content-length``, ``content-encoding``, ``etag``,
  ``content-md5``, ``digest``); ``x-accel-buffering: no`` asks buffering proxies in front to pass
  each chunk on; ``x-guardrail-inspected: true`` and ``x-guardrail-holdback: <mode>`` say how it
  is guarded (hits and actions ride in the stream's own annotation event);
* bytes go to the client as soon as the guard releases them, never buffered whole;
* an upstream that breaks off, stalls past ``stall_timeout`` or ends without its terminator
  gives the client a clean end of stream (the guard's synthesised terminator), never a dropped
  connection; the fault is in the report;
* a client that disconnects cancels the upstream request at once (the pump closes the upstream
  response, shielded from the cancellation);
* ``finish()``, when given, runs once the pump has ended (not when the client left first), and
  the bytes it returns are the last of the stream (``guardrail.proxy.regenerate_stream``: a held
  reply, or the reply that replaced it);
* ``on_end(report)`` runs exactly once when the stream is over, however it ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from guardrail.observe.record import HoldbackClock
from guardrail.guard.inspection import STALE_HEADERS  # re-exported: its old home
from guardrail.guard.stream import StreamGuard, StreamReport
from guardrail.proxy.respond import Record, client_headers, watch_disconnect
from guardrail.proxy.upstream import Headers

__all__ = ["STALE_HEADERS", "GuardedStream"]

class GuardedStream:
    """ASGI response pumping ``response`` through ``guard`` (see the module docstring)."""

    def __init__(
        self,
        response: httpx.Response,
        guard: StreamGuard,
        record: Record,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
        stall_timeout: float | None = None,
        clock: HoldbackClock | None = None,
        finish: Callable[[], Awaitable[bytes]] | None = None,
        on_end: Callable[[StreamReport], None] | None = None,
    ) -> None:
        extra = [*extra, (b"x-accel-buffering", b"no")]
        headers = client_headers(response.headers.raw, record.request_id, extra)
        self.headers: Headers = [(n, v) for n, v in headers if n not in STALE_HEADERS]
        self.response = response
        self.guard = guard
        self.record = record
        self.stall_timeout = stall_timeout
        self.clock = clock
        self.finish = finish
        self.on_end = on_end
        self.complete = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch_disconnect, receive, group.cancel_scope, self)
                await self._relay(send)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.response.aclose()
            if self.on_end is not None:
                self.on_end(self.guard.report)

    async def _upstream(self) -> AsyncIterator[bytes]:
        """The upstream body, decoded (a Content-Encoding is undone), timing each arrival."""
        async for chunk in self.response.aiter_bytes():
            if self.clock is not None:
                self.clock.arrived()
            yield chunk

    async def _relay(self, send: Send) -> None:
        self.record.status = self.response.status_code
        start = {"type": "http.response.start", "status": self.response.status_code}
        await send({**start, "headers": self.headers})
        pump = self.guard.pump(
            self._upstream(), stall_timeout=self.stall_timeout, aclose=self.response.aclose
        )
        async with aclosing(pump) as out:
            async for data in out:
                await self._send(send, data)
        if self.finish is not None:
            await self._send(send, await self.finish())
        self.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, data: bytes) -> None:
        if not data:
            return
        if self.clock is not None:
            self.clock.released()
        await send({"type": "http.response.body", "body": data, "more_body": True})
