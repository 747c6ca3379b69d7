"""Offload: pure work on a large input runs in a worker thread, never on the event loop.

The one rule, used by every stage that parses or judges (request bodies, whole replies, big
stream chunks, the regenerated reply): at most :data:`OFFLOAD_BYTES` of input is handled inline,
where it costs less than the thread hop; anything larger runs in a worker thread, at most
:data:`HEAVY_THREADS` at a time per event loop, so a burst of huge requests cannot hold the loop
or take every thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["HEAVY_THREADS", "OFFLOAD_BYTES", "Worker", "offloaded"]

T = TypeVar("T")

OFFLOAD_BYTES = 64 * 1024
"""Inputs bigger than this are parsed or judged in a worker thread; smaller ones inline."""
HEAVY_THREADS = 4
"""Worker threads one event loop gives to large inputs at a time."""


def offloaded(size: int) -> bool:
    """Whether work reading ``size`` bytes belongs in a worker thread."""
    return size > OFFLOAD_BYTES


class Worker:
    """Runs pure work off the event loop when its input is large (one per pipeline, so its
    thread limiter belongs to the event loop that serves the pipeline)."""

    def __init__(self, threads: int = HEAVY_THREADS) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, work: Callable[[], T], size: int) -> T:
        """``work()`` here when ``size`` (the bytes it reads) is small, else in a worker thread,
        at most ``threads`` at a time: pure work on a large input never holds the loop."""
        if not offloaded(size):
            return work()
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)
