"""The memory backend: one process's state, bounded, with expiry; nothing to install.

Holds at most ``state.max_users`` users; past that the least recently active is dropped first.
A user's state expires ``state.retention`` seconds after their last activity, measured on the
``now`` the caller passes (so a test's fake clock drives expiry too); expired entries are
dropped when touched and when the bound is enforced. Each operation runs under a lock and
without awaiting inside, so it is atomic for asyncio tasks and threads alike. State lives and
dies with the process: replicas need the Redis backend to share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from guardrail.state.config import StateConfig
from guardrail.state.identity import Identity
from guardrail.state.model import Observation, UserState, current, day_number, observed

__all__ = ["MemoryStore"]


class MemoryStore:
    """:class:`~guardrail.state.store.StateStore` in a bounded ordered dict."""

    def __init__(self, config: StateConfig) -> None:
        self.config = config
        self._users: OrderedDict[str, tuple[float, UserState]] = OrderedDict()  # user -> expiry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def _get(self, user: str, now: float) -> UserState:
        entry = self._users.get(user)
        if entry is None:
            return UserState()
        expires, state = entry
        if now >= expires:
            del self._users[user]
            return UserState()
        return state

    async def load(self, identity: Identity, now: float) -> UserState:
        with self._lock:
            state = self._get(identity.user, now)
        return current(state, now, identity.session, self.config.session_gap)

    async def observe(self, identity: Identity, now: float, observation: Observation) -> None:
        today = day_number(now, self.config.zone)
        gap = self.config.session_gap
        with self._lock:
            state = self._get(identity.user, now)
            state = observed(state, now, identity.session, gap, observation, today)
            self._users[identity.user] = (now + self.config.retention, state)
            self._users.move_to_end(identity.user)
            self._trim(now)

    def _trim(self, now: float) -> None:
        """Drop expired users from the least recently active end, then enough to fit the bound."""
        while self._users and next(iter(self._users.values()))[0] <= now:
            self._users.popitem(last=False)
        while len(self._users) > self.config.max_users:
            self._users.popitem(last=False)

    async def erase(self, user: str) -> bool:
        with self._lock:
            return self._users.pop(user, None) is not None

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
