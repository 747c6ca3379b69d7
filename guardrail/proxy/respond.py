"""Responses to the client: a relayed upstream reply, a buffered one, and their headers.

* :class:`Relay` streams an upstream response to the client as it arrives (never buffered
  whole), stops reading the upstream as soon as the client leaves, and drops the connection
  (``RelayAborted``) when the upstream breaks mid-body, so a cut reply never looks complete;
* :class:`Buffered` sends a body already in memory (a rewritten reply, or the upstream's own
  bytes), with headers that describe those bytes;
* :func:`client_headers` is the header rule toward the client: hop-by-hop headers removed,
  guardrail's ``x-request-id``, and no ``x-guardrail-*`` header from the upstream (it cannot
  forge guardrail's annotation);
* :func:`watch_disconnect` cancels a response's work when its client leaves first.

The guarded stream (:mod:`guardrail.proxy.relay`) is built on the last two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from guardrail.errors import RelayAborted
from guardrail.proxy.upstream import Headers, response_headers

__all__ = ["Buffered", "Record", "Relay", "Responder", "client_headers", "watch_disconnect"]


class Record(Protocol):
    """The per-request record a responder reports into (``observe.logs.Exchange``)."""

    request_id: str
    status: int | None
    error: str | None


class Responder(Protocol):
    """A response being sent: its request record, and whether the response is complete."""

    record: Record
    complete: bool


async def watch_disconnect(
    receive: Receive, scope: anyio.CancelScope, responder: Responder
) -> None:
    """Cancel ``scope`` when the client leaves before ``responder`` completed its response, and
    note ``client_disconnected`` in its record (servers also report a disconnect once a
    response is complete: that one changes nothing)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not responder.complete:
        responder.record.error = responder.record.error or "client_disconnected"
        scope.cancel()


def client_headers(
    raw: Iterable[tuple[bytes, bytes]], request_id: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> Headers:
    """Upstream response headers as sent to the client.

    Hop-by-hop headers removed; ``x-request-id`` is guardrail's (the upstream's own id, when it
    differs, moves to ``x-upstream-request-id``); every ``x-guardrail-*`` header the upstream
    sent is dropped, on every path (inspected or not), so only guardrail's own annotation in
    ``extra`` reaches the client and an upstream cannot forge one.
    """
    ours = request_id.encode("latin-1")
    out: Headers = []
    for name, value in response_headers(raw):
        if name == b"x-request-id":
            if value != ours:
                out.append((b"x-upstream-request-id", value))
        elif not name.startswith(b"x-guardrail-"):
            out.append((name, value))
    return [*out, *extra, (b"x-request-id", ours)]


class Relay:
    """ASGI response relaying an upstream response as it arrives: never buffered whole.

    Sends the status and :func:`client_headers` at once, then ``prefix`` (chunks already read),
    then the rest of ``chunks`` one by one. Stops reading upstream (and closes it) as soon as the
    client disconnects. If the upstream breaks mid-body, raises RelayAborted so the server drops
    the connection. The upstream response is always closed.
    """

    def __init__(
        self,
        response: httpx.Response,
        chunks: AsyncIterator[bytes],
        record: Record,
        *,
        prefix: Iterable[bytes] = (),
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.response = response
        self.chunks = chunks
        self.record = record
        self.prefix = list(prefix)
        self.headers = client_headers(response.headers.raw, record.request_id, list(extra))
        self.complete = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        broken = False
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch_disconnect, receive, group.cancel_scope, self)
                broken = await self._relay(send)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.response.aclose()
        if broken:
            raise RelayAborted("upstream body ended early; connection dropped")

    async def _relay(self, send: Send) -> bool:
        self.record.status = self.response.status_code
        await send(
            {
                "type": "http.response.start",
                "status": self.response.status_code,
                "headers": self.headers,
            }
        )
        for chunk in self.prefix:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            self.record.error = f"upstream_body_{type(exc).__name__}"
            return True
        self.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return False


class Buffered:
    """ASGI response with a body already in memory: a rewritten reply, or the upstream's bytes.

    ``rewritten`` bodies lose the upstream's Content-Encoding, Content-Length, ETag and digests
    (they described other bytes) and get a fresh Content-Length.
    """

    _STALE = frozenset({b"content-length", b"content-encoding", b"etag", b"content-md5", b"digest"})

    def __init__(
        self,
        response: httpx.Response,
        body: bytes,
        record: Record,
        *,
        rewritten: bool,
        extra: Headers,
    ) -> None:
        headers = client_headers(response.headers.raw, record.request_id, list(extra))
        if rewritten or not any(name == b"content-length" for name, _ in headers):
            headers = [(n, v) for n, v in headers if not (rewritten and n in self._STALE)]
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        self.status = response.status_code
        self.headers = headers
        self.body = body
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.record.status = self.status
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
