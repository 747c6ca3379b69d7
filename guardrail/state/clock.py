"""Clocks: where the state layer's "now" comes from.

Everything in ``guardrail.state`` takes ``now`` (epoch seconds) as an argument; the request flow
reads it once per request from a :class:`Clock`. Production uses :class:`SystemClock`; tests and
benchmarks inject a :class:`FakeClock` and move it by hand, so a test of "three hours later"
never sleeps.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    """The machine's wall clock (``time.time()``)."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that stands still until told to move: ``advance(seconds)`` or ``set(epoch)``."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward (or back, with a negative amount); returns the new time."""
        self._now += seconds
        return self._now

    def set(self, epoch: float) -> None:
        self._now = float(epoch)
