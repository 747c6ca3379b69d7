"""Which requests' facts need the state store (``StateLink.known_facts``), and that the answer
given without the store is the one the store path would give.

The proxy gathers facts beside the upstream call; a request whose facts need no lookup (no user
identified, or no stored fact read by the pack) gets the clock's facts at once, without a task
(issue 12, item 7). Anything that does need the store must still go to it.
"""

from __future__ import annotations

from typing import Any

import pytest

from guardrail.state import FakeClock, Identity, StateConfig
from guardrail.state.link import StateLink
from guardrail.state.memory import MemoryStore

CONFIG = StateConfig(key=b"a-key-for-these-tests-0123456789")
NOW = FakeClock().now()


class CountingStore(MemoryStore):
    """The memory store, counting the loads it was asked for."""

    def __init__(self) -> None:
        super().__init__(CONFIG)
        self.loads = 0

    async def load(self, identity: Identity, now: float) -> Any:
        self.loads += 1
        return await super().load(identity, now)


@pytest.mark.anyio
async def test_anonymous_requests_get_no_facts_and_no_store_call() -> None:
    """A request that names no user is judged as the library judges it: no facts at all."""
    store = CountingStore()
    link = StateLink(store, CONFIG)
    needed = frozenset({"session.minutes"})
    known = link.known_facts(None, NOW, needed)
    assert known == {}
    assert known == await link.facts(None, NOW, needed)  # the same answer either way
    assert store.loads == 0


@pytest.mark.anyio
async def test_an_identified_user_whose_pack_reads_stored_facts_goes_to_the_store() -> None:
    store = CountingStore()
    link = StateLink(store, CONFIG)
    user = Identity(user="u-1")
    assert link.known_facts(user, NOW, frozenset({"session.minutes"})) is None
    facts = await link.facts(user, NOW, frozenset({"session.minutes"}))
    assert store.loads == 1
    assert "session.minutes" in facts and "clock.local_hour" in facts


def test_a_pack_that_reads_no_stored_fact_needs_no_lookup_even_for_a_user() -> None:
    link = StateLink(CountingStore(), CONFIG)
    known = link.known_facts(Identity(user="u-1"), NOW, frozenset())
    assert known is not None and set(known) == {"clock.local_hour"}
