"""The stall timeout of a stream pump: one timer per stream, not a cancel scope per read.

:class:`Stall` serves :meth:`guardrail.guard.stream.StreamGuard.pump`: the pump reads every upstream
chunk through :meth:`Stall.read` and calls :meth:`Stall.progressed` after each chunk that
completed an upstream event other than a keep-alive. :class:`Stalled` is raised by ``read`` when
the deadline passes first. Nothing here logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from guardrail.errors import Stalled  # re-exported: its old home

__all__ = ["Stall", "Stalled"]


class Stall:
    """The stall timeout of one pump: one timer per stream, not a cancel scope per read.

    The deadline moves with each upstream event that is not a keep-alive (:meth:`progressed`).
    The timer, armed at the deadline (and again at the new one if progress moved it meanwhile),
    cancels the pump's task only while it waits for upstream bytes; :meth:`read` takes that
    cancellation back (``Task.uncancel``) and raises :class:`Stalled`. A deadline that passes
    while the pump is elsewhere (sending to a slow client, feeding a big chunk) is noticed at the
    next read. A cancellation from anyone else goes on as it came. Asyncio only, as the proxy
    (uvicorn on asyncio or uvloop). It costs a clock read and two attribute writes per read,
    where a cancel scope per read cost about 16 us (``bench/stall_bench.py``).
    """

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.seconds = seconds
        self.deadline = self.loop.time() + seconds
        self.fired = False
        self.waiting = False
        self.handle: asyncio.TimerHandle | None = None

    def progressed(self) -> None:
        self.deadline = self.loop.time() + self.seconds

    async def read(self, iterator: AsyncIterator[bytes]) -> bytes:
        """The next upstream chunk; :class:`Stalled` if the deadline passes first."""
        if self.loop.time() >= self.deadline:  # keep-alives kept coming, nothing else
            raise Stalled
        if self.handle is None:
            self.handle = self.loop.call_at(self.deadline, self._check)
        self.waiting = True
        try:
            return await anext(iterator)
        except asyncio.CancelledError:
            if not self.fired or self.task.uncancel() > 0:
                raise
            raise Stalled from None
        finally:
            self.waiting = False

    def _check(self) -> None:
        self.handle = None
        if not self.waiting:  # noticed (and the timer armed again) at the next read
            return
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._check)
            return
        self.fired = True
        self.task.cancel()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
