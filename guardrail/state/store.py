"""The state store: the interface every backend offers, and how one is opened from settings.

All methods are async and bounded: a backend that cannot answer within ``state.timeout`` raises
:class:`~guardrail.errors.StateUnavailable` (the one error a caller catches to go on without
state) rather than stalling a reply. Keys are the stored keys of ``guardrail.state.keys``,
never raw ids.

* ``load(identity, now)`` -- the user's state as of ``now`` (a lapsed session reads as new);
  nothing is written.
* ``observe(identity, now, observation)`` -- one user turn, applied atomically: concurrent
  observes of one user (on one replica or several) never lose an update.
* ``erase(user)`` -- forget one user (their stored key); True when there was something.
* ``ping()`` -- whether the store answers now (never raises).
* ``aclose()`` -- release connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from guardrail.state.config import StateConfig
from guardrail.state.identity import Identity
from guardrail.state.keys import Keyring
from guardrail.state.model import Observation, UserState

__all__ = ["StateAccess", "StateStore", "open_store"]


class StateStore(Protocol):
    async def load(self, identity: Identity, now: float) -> UserState: ...

    async def observe(self, identity: Identity, now: float, observation: Observation) -> None: ...

    async def erase(self, user: str) -> bool: ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


def open_store(config: StateConfig) -> StateStore:
    """The configured backend (``state.backend``); connects lazily, so this never blocks."""
    if config.backend == "redis":
        from guardrail.state.redisstore import RedisStore

        return RedisStore(config)
    from guardrail.state.memory import MemoryStore

    return MemoryStore(config)


@dataclass(frozen=True)
class StateAccess:
    """A store with the keys that address it: what the admin endpoint and ``guardrail state``
    need to act on a raw user id (which they hash exactly as requests are hashed)."""

    store: StateStore
    config: StateConfig

    def user_key(self, raw_user: str) -> str:
        return Keyring(self.config.key).user(raw_user.strip())

    async def erase(self, raw_user: str) -> bool:
        """Erase the user whose raw id is ``raw_user``; True when they had state."""
        return await self.store.erase(self.user_key(raw_user))
