"""Regenerate a streamed reply: ask the upstream once more before any of the stream is out.

When it runs: for a guarded stream on a route with ``holdback: full`` and ``regenerate`` on (with
``sentence`` or ``none`` the text is out before the reply is judged, so those streams keep the
template fallback). The pipeline makes a :class:`StreamRegeneration` for the stream's guard,
which puts the guard on :meth:`~guardrail.guard.stream.StreamGuard.hold`, and hands its
:meth:`~StreamRegeneration.finish` to the stream relay, which calls it when the upstream stream
has ended:

1. While the first stream is read nothing of it goes out, its head included (Chat Completions'
   role chunk, Anthropic's ``message_start``, Responses' ``response.created``); only keep-alives
   do, as SSE comments.
2. At its end, if its verdicts carry regenerate requests and it ended cleanly (terminator seen, no
   engine error), the original request is sent once more to the same URL with the same headers
   plus the requesting policies' instruction (:func:`guardrail.proxy.regenerate.prepare`), still
   streamed, and read through a fresh held full-holdback guard that judges it against the
   ORIGINAL conversation (the instruction's words never trigger a detector).
3. The second stream is accepted when, within ``regenerate_budget`` seconds (request sent, whole
   stream read; ``stall_timeout`` applies between its events), it is a 2xx stream of the API's media
   type that ended with its terminator, the engine did not fail, it is not blocked, and none of
   the requesting policies hits it again. Then the first stream is dropped and the second goes
   out whole, head to terminator. Otherwise the first goes out whole: its template fallback.

So the client always reads exactly one upstream stream, guarded: ids, item and block indexes,
reasoning and ``thinking`` all belong to the reply it gets (the OpenAI SDK's ``responses.stream()``
refuses a response whose id changes mid-stream, and a stored Responses reply continued with
``previous_response_id`` is the one the client saw). The cost, on these routes only: the head
and replies without text (a tool call alone) wait for the end of the stream like the text does.
The terminator's annotation says what happened, as on a non-streamed body::

    "regenerated": true | false,
    "regenerate": {"policies": ["validation.only"], "outcome": "accepted"}

Failures never reach the client: an upstream error or error status, a reply that is not a stream
of the API, a broken or stalled second stream and the budget running out all end in the fallback.
A client that leaves cancels the second request too. Nothing here logs; the pipeline records
``result`` (log line, ``guardrail_regenerations_total``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from contextlib import aclosing

import anyio

from guardrail.errors import UpstreamError
from guardrail.guard.inspection import is_stream, open_stream_guard, stream_guardable
from guardrail.proxy.regenerate import Second, note_for, open_second, prepare
from guardrail.guard.stream import StreamGuard

__all__ = ["StreamRegeneration", "judge"]


def judge(guard: StreamGuard, ids: Collection[str]) -> str:
    """How a second stream, read to its end by ``guard``, fares: ``accepted``, ``rejected`` (an
    engine error, blocked, or a policy of ``ids`` hit again) or ``upstream-error`` (it broke
    off, stalled or had no terminator)."""
    report = guard.report
    if report.fault is not None:
        return "upstream-error"
    if report.engine_error is not None:
        return "rejected"
    for verdict in report.verdicts.values():
        if verdict is not None and (verdict.blocked or any(h.policy in ids for h in verdict.hits)):
            return "rejected"
    return "accepted"


class StreamRegeneration:
    """Per streamed response: send its reply, or the reply asked for once more (module docstring).

    ``first`` is the response's guard, with holdback ``full`` and nothing fed yet: it is put on
    hold here. ``second`` says where and how to ask again; ``stall_timeout`` bounds the time
    between two events of the second stream (keep-alives do not count). Once
    :meth:`finish` has run: ``result`` (one of ``regenerate.OUTCOMES``; None when nothing asked),
    ``policies`` (the ids that asked), ``sent`` (the second stream's guard when its reply went
    out, else None), ``upstream_s`` (the second call's time, its guard's excluded) and
    ``guard_s`` (the second guard's time).
    """

    def __init__(
        self,
        first: StreamGuard,
        second: Second,
        *,
        stall_timeout: float | None = None,
    ) -> None:
        first.hold()
        self.first = first
        self.second = second
        self.stall_timeout = stall_timeout
        self.result: str | None = None
        self.policies: tuple[str, ...] = ()
        self.sent: StreamGuard | None = None
        self.upstream_s = 0.0
        self.guard_s = 0.0
        self._guard: StreamGuard | None = None  # the second stream's, once it is read

    async def finish(self) -> bytes:
        """The first stream has ended: the bytes to send, the first's or the second's stream."""
        first, report = self.first, self.first.report
        ids: tuple[str, ...] = ()
        content = b""
        if report.terminated and report.fault is None and report.engine_error is None:
            ids, content = prepare(self.second, list(report.verdicts.values()))
        if not ids:
            return first.release()
        started = time.perf_counter()
        result = "timeout"
        with anyio.move_on_after(self.second.budget):
            result = await self._ask(content, ids)
        second = self._guard
        self.guard_s = second.report.guard_seconds if second is not None else 0.0
        self.upstream_s = max(0.0, time.perf_counter() - started - self.guard_s)
        self.result, self.policies = result, ids
        if result == "accepted" and second is not None:
            first.discard()
            second.add_note(note_for(ids, result, True))
            self.sent = second
            return second.release()
        first.add_note(note_for(ids, result, False))
        return first.release()

    async def _ask(self, content: bytes, ids: tuple[str, ...]) -> str:
        """Send the second request and read its stream to the end through a held guard."""
        try:
            response = await open_second(self.second, content)
        except UpstreamError:
            return "upstream-error"
        try:
            kind = response.headers.get("content-type", "").lower()
            if not 200 <= response.status_code < 300 or not is_stream(kind, True):
                return "upstream-error"
            guard = self._new_guard()
            if guard is None or not stream_guardable(kind, guard):
                return "upstream-error"
            guard.hold()
            self._guard = guard
            pump = guard.pump(
                response.aiter_bytes(), stall_timeout=self.stall_timeout, aclose=response.aclose
            )
            async with aclosing(pump) as out:
                async for _ in out:  # keep-alives only: the client has the first stream's
                    pass
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return judge(guard, ids)

    def _new_guard(self) -> StreamGuard | None:
        """A guard like the first, for the second stream: same API, ORIGINAL conversation,
        policies and locale, holdback ``full`` (which holds no sentence, so needs no cap)."""
        s = self.second
        return open_stream_guard(s.api, s.chat, s.policies, s.locale, holdback="full")
