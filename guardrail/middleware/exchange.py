"""One guarded request inside :class:`~guardrail.middleware.GuardrailMiddleware`.

:class:`ChatExchange` is created per request to a chat route and holds everything that request
needs (starlette ``GZipResponder`` style: the middleware itself keeps no per-request state). Its
``run`` reads the request body, replays it to the app, and stands between the app and the
server on the way back: see the stages in :mod:`guardrail.middleware`. Policies are applied
through :mod:`guardrail.guard.inspection` (whole replies) and its stream guard, the proxy's own code.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Literal

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail.middleware.asgi import NO_HEADERS, Replay, header, marked
from guardrail.guard import Holdback
from guardrail.guard.flow import Flow, FlowConfig
from guardrail.guard.inspection import (
    STALE_HEADERS,
    Headers,
    guardrail_headers,
    request_locale,
)
from guardrail.guard.offload import Worker
from guardrail.observe.logs import Exchange, log_request, new_request_id, safe_stack
from guardrail.observe.record import HoldbackClock, Recorder
from guardrail.policy import PolicySet
from guardrail.guard.stream import UPSTREAM_BROKEN, StreamGuard

__all__ = ["ChatExchange", "Options"]


Mode = Literal["pass", "whole", "stream"]


@dataclass(frozen=True)
class Options:
    """The middleware's settled options, shared read-only by every request."""

    policies: PolicySet
    recorder: Recorder
    route: str
    locale: str
    locale_header: str | None
    holdback: Holdback
    max_holdback_chars: int
    max_inspect_bytes: int
    log_requests: bool
    worker: Worker = field(default_factory=Worker)  # large requests: parsed and judged off the loop


class ChatExchange:
    """Per request to a chat route: read, replay, hold, inspect, annotate, record."""

    def __init__(self, options: Options, scope: Scope, api: str, send: Send) -> None:
        self.o = options
        self.scope = scope
        self.api = api
        self.send = send
        headers = scope.get("headers", [])
        self.headers: list[tuple[bytes, bytes]] = list(headers)
        request_id = new_request_id({"x-request-id": header(headers, b"x-request-id")})
        path: str = scope.get("path", "")
        self.ex = Exchange(request_id, "POST", path[:300], route=options.route, api=api)
        self.ex.locale = self._locale()
        self.ex.policy_digest = options.policies.digest
        config = FlowConfig(
            locale=options.locale,
            holdback=options.holdback,
            max_holdback_chars=options.max_holdback_chars,
            max_inspect_bytes=options.max_inspect_bytes,
        )
        name = options.recorder.conversation_header
        conversation_id = header(self.headers, name.encode("latin-1")) if name else ""
        self.flow = Flow(
            options.policies,
            api,
            config,
            locale=self.ex.locale,
            conversation_id=conversation_id or None,
        )
        options.recorder.follow(self.flow, self.ex)
        self.mode: Mode = "pass"
        self.start: Message | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.guard: StreamGuard | None = None
        self.clock: HoldbackClock | None = None
        self.done = False  # the response was sent to its end
        self.called = 0.0

    def _locale(self) -> str:
        name = self.o.locale_header
        offered = header(self.headers, name.encode("latin-1")) if name else ""
        return request_locale(offered, self.o.locale)

    # ------------------------------------------------------------------ request
    async def run(self, app: ASGIApp, receive: Receive) -> None:
        """Serve the request through ``app``; record it once, whatever happens."""
        recorder = self.o.recorder
        recorder.started(self.o.route)
        logs = self.o.log_requests  # the app's own log context is left alone otherwise
        tokens = (
            structlog.contextvars.bind_contextvars(request_id=self.ex.request_id) if logs else {}
        )
        replay: Replay | None = None
        try:
            replay = Replay(await self._read(receive), receive)
            self.called = time.perf_counter()
            await app(self.scope, replay, self._send)
            if replay.disconnected and not self.done:
                self.ex.error = self.ex.error or "client_disconnected"
            else:
                await self._complete()
        except BaseException as exc:
            if replay is not None and replay.disconnected:
                self.ex.error = self.ex.error or "client_disconnected"
            elif isinstance(exc, Exception) and self.ex.error is None:
                self.ex.error = f"internal_{type(exc).__name__}"  # the app's own failure
                self.ex.error_stack = safe_stack(exc)
            raise
        finally:
            self._end_stream(replay)
            recorder.finished(self.ex)
            if logs:
                log_request(self.ex)
                structlog.contextvars.reset_contextvars(**tokens)

    async def _read(self, receive: Receive) -> list[Message]:
        """Read the request body ahead (up to the limit) and parse the chat request from it."""
        messages: list[Message] = []
        body: list[bytes] = []
        size, complete = 0, False
        limit = self.o.max_inspect_bytes
        while size <= limit:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunk: bytes = message.get("body", b"")
            body.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                complete = size <= limit
                break
        started = time.perf_counter()
        if complete:
            encoding = header(self.headers, b"content-encoding")
            raw = b"".join(body)
            parse = functools.partial(self.flow.read_request, raw, encoding)
            await self.o.worker.run(parse, self.flow.request_weight(len(raw)))
        else:
            self.flow.request_is(None, "too-large" if size > limit else "unparseable")
        self.ex.guardrail_s = time.perf_counter() - started
        return messages

    # ------------------------------------------------------------------ response
    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode == "whole":
            await self._whole_body(message)
        elif kind == "http.response.body" and self.mode == "stream":
            await self._stream_body(message)
        else:
            if self.mode == "whole":  # e.g. a file sent by path: not a body we can read
                await self._give_up("not-json", more=True)
            await self._forward(message)

    async def _forward(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done = True
        await self.send(message)

    async def _start(self, message: Message) -> None:
        status: int = message["status"]
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
        self.ex.upstream_status = status
        kind = header(headers, b"content-type").lower()
        flow = self.flow
        mode = flow.plan_reply(
            status,
            kind,
            header(headers, b"content-length"),
            header(headers, b"content-encoding"),
            decodes=_plain,  # the app's own bytes: a compressed stream cannot be read
        )
        if mode == "stream":
            self.ex.upstream_s = time.perf_counter() - self.called
            if await self._open_stream(kind):
                extra = guardrail_headers(True, holdback=self.o.holdback)
                extra.append((b"x-accel-buffering", b"no"))
                await self._send_start(message, marked(headers, extra, STALE_HEADERS))
                return
            mode = flow.passes("stream")
        if mode == "pass":
            self.mode = "pass"
            extra = guardrail_headers(False, reason=flow.reason)
            await self._send_start(message, marked(headers, extra, NO_HEADERS))
            return
        self.mode, self.start = "whole", message

    async def _send_start(self, message: Message, headers: Headers) -> None:
        self.ex.status = message["status"]
        await self.send({**message, "headers": headers})

    # ------------------------------------------------------------------ whole replies
    async def _whole_body(self, message: Message) -> None:
        chunk: bytes = message.get("body", b"")
        self.parts.append(chunk)
        self.size += len(chunk)
        more = bool(message.get("more_body", False))
        if self.size > self.o.max_inspect_bytes:  # send on what was held, then relay the rest
            await self._give_up("too-large", more=more)
            return
        if not more:
            await self._inspect()

    async def _give_up(self, reason: str, *, more: bool) -> None:
        """Send the held start (marked not inspected) and body unchanged; relay the rest."""
        assert self.start is not None
        self.mode = self.flow.passes(reason, self.start["status"])
        extra = guardrail_headers(False, reason=self.flow.reason)
        await self._send_start(self.start, marked(self.start.get("headers", []), extra, NO_HEADERS))
        body, self.parts = b"".join(self.parts), []
        if body or not more:
            await self._forward({"type": "http.response.body", "body": body, "more_body": more})

    async def _inspect(self) -> None:
        assert self.start is not None
        self.ex.upstream_s = time.perf_counter() - self.called
        raw, self.parts = b"".join(self.parts), []
        headers: list[tuple[bytes, bytes]] = list(self.start.get("headers", []))
        judge = functools.partial(self.flow.judge_whole, raw, header(headers, b"content-encoding"))
        started = time.perf_counter()
        outcome = await self.o.worker.run(judge, self.flow.reply_weight(len(raw)))
        self.ex.guardrail_s = (self.ex.guardrail_s or 0.0) + time.perf_counter() - started
        self.flow.finish(outcome, stream=False)
        if outcome.body is None:
            body, out = raw, marked(headers, outcome.headers(), NO_HEADERS)
        else:
            body = outcome.body
            length = [(b"content-length", str(len(body)).encode("ascii"))]
            out = marked(headers, [*length, *outcome.headers()], STALE_HEADERS)
        await self._send_start(self.start, out)
        await self._forward({"type": "http.response.body", "body": body, "more_body": False})

    # ------------------------------------------------------------------ streams
    async def _open_stream(self, kind: str) -> bool:
        """Set up the stream guard; False when the stream cannot be guarded."""
        opening = functools.partial(self.flow.open_stream, kind)
        guard = await self.o.worker.run(opening, self.flow.request_weight())  # the conversation
        if guard is None:
            return False
        self.mode, self.guard = "stream", guard
        self.clock = self.o.recorder.holdback_clock(self.ex)
        return True

    async def _stream_body(self, message: Message) -> None:
        guard, clock = self.guard, self.clock
        assert guard is not None and clock is not None
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        out = b""
        if chunk:
            clock.arrived()
            out = guard.feed(chunk)
        if not more:
            out += guard.close()
            self._stream_ended()
        if out or not more:
            await self._forward({"type": "http.response.body", "body": out, "more_body": more})
            if out:
                clock.released()

    def _stream_ended(self) -> None:
        guard = self.guard
        if guard is None or self.flow.judged:
            return
        report = guard.report
        self.ex.stream_fault = report.fault
        self.ex.guardrail_s = (self.ex.guardrail_s or 0.0) + report.guard_seconds
        self.flow.stream_ended(report, guard)

    def _end_stream(self, replay: Replay | None) -> None:
        """After the app: a stream it did not end (it raised, or the client left) is closed
        without sending, so its verdicts are still recorded."""
        if self.guard is None or self.flow.judged:
            return
        fault = None if replay is not None and replay.disconnected else UPSTREAM_BROKEN
        self.guard.close(fault)
        self.guard.report.cancelled = fault is None
        self._stream_ended()

    async def _complete(self) -> None:
        """The app returned: finish a response it left open (a stream without its last chunk)."""
        if self.done:
            return
        if self.mode == "stream":
            await self._stream_body({"type": "http.response.body", "body": b"", "more_body": False})
        elif self.mode == "whole" and self.start is not None:
            await self._whole_body({"type": "http.response.body", "body": b"", "more_body": False})


def _plain(content_encoding: str) -> bool:
    """The middleware reads the app's stream bytes as sent: only an uncompressed one."""
    return content_encoding.lower() in ("", "identity")
