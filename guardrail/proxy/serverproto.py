"""uvicorn's HTTP/1.1 protocols with the connection limits uvicorn lacks.

:func:`protocol_class` returns a subclass of uvicorn's httptools protocol (the one uvicorn picks
when httptools is installed; h11's otherwise) that adds, per listener:

* **Header timeout**: a connection must deliver a complete request head within
  ``header_timeout`` seconds of connecting, and within ``header_timeout`` of the first byte of
  every later head. A connection that sends nothing, or dribbles its head (slowloris), is
  closed then: with ``408`` and ``Connection: close`` when part of a head came, silently when
  nothing did; a head pipelined behind a response still being sent has the connection cut (the
  408 is never written into that response). uvicorn's own keep-alive timer still closes a
  connection idle after a response (``keepalive_timeout``). Counted as ``guardrail_refused_total{reason="header_timeout"}``.
* **Most connections**: a connection that would be number ``max_client_connections + 1`` on the
  listener is answered at once with ``503``, ``Retry-After: 1`` and an OpenAI-format error body
  (the API is not known before the request), and closed; counted as
  ``guardrail_refused_total{reason="connections_full"}``. The connections already open are not
  disturbed, and the file descriptors held stay bounded.
* **Request targets**: llhttp (httptools) parses an absolute-form target (``GET http://host/x``)
  into its path alone, so the app could not tell it from ``GET /x``. The scope's ``raw_path`` and
  ``path`` are set to the target as sent, which the proxy then refuses with its 400
  (``guardrail.proxy.upstream.check_path``); h11 already passes the target as sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from guardrail.observe import metrics

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

__all__ = ["protocol_class"]


def _response(status: bytes, payload: object, extra: bytes = b"") -> bytes:
    body = json.dumps(payload).encode("utf-8")
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
    head += b"content-length: " + str(len(body)).encode("ascii") + b"\r\n" + extra
    return head + b"connection: close\r\n\r\n" + body


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


_FULL = _response(
    b"503 Service Unavailable",
    _error("guardrail has all the client connections it allows; retry later.", "connections_full"),
    b"retry-after: 1\r\n",
)
_TIMEOUT = _response(
    b"408 Request Timeout",
    _error("The request head did not arrive in time (header_timeout).", "header_timeout"),
)


class _Limited:
    """The limits, over either uvicorn protocol (see the module docstring). Subclasses say
    whether a request head is partly received (:meth:`_in_head`)."""

    header_timeout: float = 10.0
    max_connections: int = 1024
    transport: asyncio.Transport
    connections: set[Any]
    loop: asyncio.AbstractEventLoop
    _head_timer: asyncio.TimerHandle | None = None
    _refused = False

    def _in_head(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            self._refused = True
            self.connections.discard(self)
            metrics.child(metrics.REFUSED, "connections_full").inc()
            transport.write(_FULL)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)  # type: ignore[misc]
        if self._in_head():
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not (self._in_head() or self._idle_fresh()):
            return
        metrics.child(metrics.REFUSED, "header_timeout").inc()
        if not self._between_responses():  # a response in progress: cut it, write nothing into it
            self.transport.abort()
            return
        if self._in_head():
            self.transport.write(_TIMEOUT)
        self.transport.close()

    def _idle_fresh(self) -> bool:
        """Connected, and no request has started on it yet."""
        return getattr(self, "cycle", None) is None

    def _between_responses(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is None or bool(cycle.response_complete)


class _HttpTools(_Limited, HttpToolsProtocol):  # type: ignore[misc]
    _head_started = False

    def _in_head(self) -> bool:
        return self._head_started

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_started = False
        target: bytes = self.url
        super().on_headers_complete()
        if not target.startswith(b"/") and self.scope.get("raw_path") is not None:
            as_sent = target.split(b"?", 1)[0]  # absolute-form or '*': refused by the app
            self.scope["raw_path"] = as_sent
            self.scope["path"] = as_sent.decode("latin-1")


class _H11(_Limited, H11Protocol):  # type: ignore[misc]
    def _in_head(self) -> bool:
        import h11

        data, _ = self.conn.trailing_data
        return self.conn.their_state is h11.IDLE and bool(data)


def protocol_class(
    *, header_timeout: float, max_connections: int, http: str = "auto"
) -> type[asyncio.Protocol]:
    """The HTTP protocol class for one listener: ``http`` is ``auto`` (httptools when installed),
    ``httptools`` or ``h11``."""
    base: type[asyncio.Protocol] = _H11
    if http != "h11" and HttpToolsProtocol is not None:
        base = _HttpTools
    attrs = {"header_timeout": header_timeout, "max_connections": max_connections}
    return type(f"Guardrail{base.__name__.lstrip('_')}", (base,), attrs)
