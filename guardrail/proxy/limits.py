"""Limits that keep one client from degrading the others.

Per request (the proxy's pipeline calls these; nothing here does I/O of its own):

* **Size**: a request body is read, or relayed, at most ``max_request_bytes`` long
  (:func:`read_body`, :func:`capped`). A ``Content-Length`` over the limit is refused before a
  byte of the body is read; a chunked body, or one whose ``Content-Length`` understates it, is
  refused as soon as the bytes read pass the limit. Either way :class:`RequestTooLarge` (413),
  and nothing of it reaches the upstream.
* **Share of the upstream pool** (:class:`Gate`): one client address may have at most
  ``max_upstream_per_client`` requests in flight (more: :class:`ClientBusy`, 429). Streams, which
  hold a connection for as long as the model talks, may together hold at most :data:`SHARE` of
  ``max_connections`` (more: :class:`StreamsBusy`, 503), and so may all other requests together
  (more: :class:`RequestsBusy`, 503): each kind always finds a quarter of the pool the other
  cannot take.
* **The event loop**: parsing a request and evaluating a conversation are pure and take time
  that grows with their size; above :data:`~guardrail.guard.inspection.OFFLOAD_BYTES` they run in a worker
  thread (:class:`Worker`), at most :data:`HEAVY_THREADS` at a time, so a burst of huge
  requests waits for a thread instead of taking every thread the process has.

Connection-level limits (header timeout, keep-alive, number of connections) live with the HTTP
server, in :mod:`guardrail.proxy.serverproto`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable


from guardrail.errors import (  # re-exported: their old home
    ClientBusy,
    Refused,
    RequestsBusy,
    RequestTooLarge,
    StreamsBusy,
)
from guardrail.guard.offload import HEAVY_THREADS, Worker  # re-exported: their old home

__all__ = [
    "HEAVY_THREADS",
    "SHARE",
    "ClientBusy",
    "Gate",
    "Refused",
    "RequestTooLarge",
    "RequestsBusy",
    "StreamsBusy",
    "Ticket",
    "Worker",
    "capped",
    "declared_length",
    "read_body",
]


SHARE = 0.75
"""The most of the upstream pool (``max_connections``) that streams may hold together, and that
all other requests may hold together."""


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
    """One request's place in the :class:`Gate`: its client's share from the start, then a
    stream's or another request's share (:meth:`stream`, :meth:`other`) once the request says
    which it is; :meth:`release` gives everything back (once)."""

    def __init__(self, gate: Gate, peer: str) -> None:
        self._gate = gate
        self._peer = peer
        self._kind: str | None = None
        self._held = True

    def stream(self) -> None:
        """Take a stream's slot (raises StreamsBusy when streams hold their whole share)."""
        self._take("stream")

    def other(self) -> None:
        """Take a slot of the other requests (raises RequestsBusy when they hold their share)."""
        self._take("other")

    def _take(self, kind: str) -> None:
        if self._kind is None:
            self._gate.take(kind)
            self._kind = kind

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.give_back(self._peer, self._kind)


class Gate:
    """Requests in flight per client address, and streams and other requests in flight, each
    against its cap.

    The client address is the TCP peer's (``scope["client"]``): behind a load balancer every
    request comes from its address, so raise ``max_upstream_per_client`` there.
    """

    def __init__(self, per_client: int, pool: int) -> None:
        self.per_client = per_client
        self.share = max(1, int(pool * SHARE))
        self._in_flight: dict[str, int] = {}
        self.streams = 0
        self.others = 0

    def enter(self, peer: str) -> Ticket:
        """A ticket for one request of ``peer`` (raises ClientBusy when it has too many)."""
        held = self._in_flight.get(peer, 0)
        if held >= self.per_client:
            raise ClientBusy(self.per_client)
        self._in_flight[peer] = held + 1
        return Ticket(self, peer)

    def take(self, kind: str) -> None:
        if kind == "stream":
            if self.streams >= self.share:
                raise StreamsBusy(self.share)
            self.streams += 1
        else:
            if self.others >= self.share:
                raise RequestsBusy(self.share)
            self.others += 1

    def give_back(self, peer: str, kind: str | None) -> None:
        left = self._in_flight.get(peer, 1) - 1
        if left > 0:
            self._in_flight[peer] = left
        else:
            self._in_flight.pop(peer, None)
        if kind == "stream":
            self.streams -= 1
        elif kind == "other":
            self.others -= 1


# --------------------------------------------------------------------------- the event loop
