"""The call budget of one judge endpoint: how many questions this process may send per minute.

A token bucket holding at most ``per_minute`` calls, refilled evenly (``per_minute / 60`` calls a
second) on an injectable clock: a burst may spend the whole bucket at once, and after that calls
are allowed at the budgeted rate. A question past the budget is not sent; the runner counts it
as ``budget`` and answers it by the endpoint's fail mode. ``guardrail check`` waits for the
bucket instead (:meth:`CallBudget.wait`), so an offline run is paced, not cut short.

The budget is per process: N workers may together send N times as many calls.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CallBudget"]


class CallBudget:
    """``per_minute`` calls a minute, in bursts of at most ``per_minute``; None: no cap."""

    def __init__(self, per_minute: int | None, clock: Callable[[], float]) -> None:
        self._capacity = float(per_minute) if per_minute is not None else None
        self._clock = clock
        self._tokens = self._capacity or 0.0
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        if self._capacity is not None and now > self._at:
            rate = self._capacity / 60.0
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * rate)
        self._at = max(self._at, now)

    def take(self) -> bool:
        """Spend one call if the budget allows it now."""
        if self._capacity is None:
            return True
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        """Seconds until :meth:`take` can succeed (0 if it can now)."""
        if self._capacity is None:
            return 0.0
        self._refill()
        return max(0.0, (1.0 - self._tokens) * 60.0 / self._capacity)
