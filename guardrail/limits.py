"""Limits that keep one client from degrading the others.

Per request (the proxy's pipeline calls these; nothing here does I/O of its own):

* **Size**: a request body is read, or relayed, at most ``max_request_bytes`` long
  (:func:`read_body`, :func:`capped`). A ``Content-Length`` over the limit is refused before a
  byte of the body is read; a chunked body, or one whose ``Content-Length`` understates it, is
  refused as soon as the bytes read pass the limit. Either way :class:`RequestTooLarge` (413),
  and nothing of it reaches the upstream.
* **Share of the upstream pool** (:class:`Gate`): one client address may have at most
  ``max_upstream_per_client`` requests in flight (more: :class:`ClientBusy`, 429); streams, which
  hold a connection for as long as the model talks, may together hold at most
  :data:`STREAM_SHARE` of ``max_connections`` (more: :class:`StreamsBusy`, 503), so whole
  requests always find a connection.
* **The event loop**: parsing a request and evaluating a conversation are pure and take time
  that grows with their size; above :data:`~guardrail.inspect.OFFLOAD_BYTES` they run in a worker
  thread (:class:`Worker`), at most :data:`HEAVY_THREADS` at a time, so a burst of huge
  requests waits for a thread instead of taking every thread the process has.

Connection-level limits (header timeout, keep-alive, number of connections) live with the HTTP
server, in :mod:`guardrail.serverproto`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

import anyio
import anyio.to_thread

from guardrail.inspect import OFFLOAD_BYTES

__all__ = [
    "HEAVY_THREADS",
    "STREAM_SHARE",
    "ClientBusy",
    "Gate",
    "Refused",
    "RequestTooLarge",
    "StreamsBusy",
    "Ticket",
    "Worker",
    "capped",
    "declared_length",
    "read_body",
]

T = TypeVar("T")

STREAM_SHARE = 0.75
"""The most of the upstream pool (``max_connections``) streams may hold together."""
HEAVY_THREADS = 4
"""Worker threads that large requests' parsing and evaluation may use at once."""


class Refused(Exception):
    """A request a limit turned away; ``code`` is also its metric reason (``REFUSALS``)."""

    status = 503
    code = "refused"
    kind = "server_error"
    retry_after: int | None = None


class RequestTooLarge(Refused):
    status, code, kind = 413, "request_too_large", "invalid_request_error"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body larger than {limit} bytes (max_request_bytes).")


class ClientBusy(Refused):
    status, code, kind, retry_after = 429, "client_busy", "rate_limit_error", 1

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many requests in flight from this client (at most {limit}); retry later."
        )


class StreamsBusy(Refused):
    status, code, kind, retry_after = 503, "streams_busy", "server_error", 1

    def __init__(self, limit: int) -> None:
        super().__init__(f"All {limit} stream slots of the upstream pool are taken; retry later.")


# --------------------------------------------------------------------------- request size


def declared_length(headers: Iterable[tuple[bytes, bytes]], limit: int) -> int | None:
    """The request's ``Content-Length`` (None when absent or not a number); raises
    RequestTooLarge when it is over ``limit``."""
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            length = int(value)
            if length > limit:
                raise RequestTooLarge(limit)
            return length
    return None


async def capped(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks`` passed on as they come, raising RequestTooLarge once more than ``limit``
    bytes have come, before the chunk that passed the limit is passed on."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(limit)
        yield chunk


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body of ``chunks``, at most ``limit`` bytes (else RequestTooLarge)."""
    parts = [chunk async for chunk in capped(chunks, limit)]
    return parts[0] if len(parts) == 1 else b"".join(parts)


# --------------------------------------------------------------------------- the pool


class Ticket:
    """One request's place in the :class:`Gate`; :meth:`release` gives it back (once)."""

    def __init__(self, gate: Gate, peer: str) -> None:
        self._gate = gate
        self._peer = peer
        self._stream = False
        self._held = True

    def stream(self) -> None:
        """Take a stream slot too (raises StreamsBusy when streams hold their whole share)."""
        if not self._stream:
            self._gate.take_stream()
            self._stream = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.give_back(self._peer, self._stream)


class Gate:
    """Requests in flight per client address, and streams in flight, against their caps.

    The client address is the TCP peer's (``scope["client"]``): behind a load balancer every
    request comes from its address, so raise ``max_upstream_per_client`` there.
    """

    def __init__(self, per_client: int, pool: int) -> None:
        self.per_client = per_client
        self.max_streams = max(1, int(pool * STREAM_SHARE))
        self._in_flight: dict[str, int] = {}
        self.streams = 0

    def enter(self, peer: str) -> Ticket:
        """A ticket for one request of ``peer`` (raises ClientBusy when it has too many)."""
        held = self._in_flight.get(peer, 0)
        if held >= self.per_client:
            raise ClientBusy(self.per_client)
        self._in_flight[peer] = held + 1
        return Ticket(self, peer)

    def take_stream(self) -> None:
        if self.streams >= self.max_streams:
            raise StreamsBusy(self.max_streams)
        self.streams += 1

    def give_back(self, peer: str, stream: bool) -> None:
        left = self._in_flight.get(peer, 1) - 1
        if left > 0:
            self._in_flight[peer] = left
        else:
            self._in_flight.pop(peer, None)
        if stream:
            self.streams -= 1

    def held(self, peer: str) -> int:
        return self._in_flight.get(peer, 0)


# --------------------------------------------------------------------------- the event loop

class Worker:
    """Runs pure work off the event loop when its input is large (one per pipeline, so its
    thread limiter belongs to the event loop that serves the pipeline)."""

    def __init__(self, threads: int = HEAVY_THREADS) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, work: Callable[[], T], size: int) -> T:
        """``work()`` here when ``size`` (the bytes it reads) is small, else in a worker thread,
        at most ``threads`` at a time: pure work on a large input never holds the loop."""
        if size <= OFFLOAD_BYTES:
            return work()
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)
