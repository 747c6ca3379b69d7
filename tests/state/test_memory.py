"""The memory backend and the facts, driven by a fake clock: sessions, gaps, expiry, bounds."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import datetime, timezone

import pytest

from guardrail.state import (
    STATE_FACTS,
    FakeClock,
    Identity,
    Observation,
    StateConfig,
    UserState,
    clock_facts,
    facts_from,
)
from guardrail.state.memory import MemoryStore

pytestmark = pytest.mark.anyio

HOUR = 3600.0
ALICE = Identity(user="a" * 32)


def store(**changes: object) -> MemoryStore:
    return MemoryStore(StateConfig(key=b"k" * 32, **changes))  # type: ignore[arg-type]


async def facts(s: MemoryStore, identity: Identity, now: float) -> dict[str, float | bool]:
    return facts_from(await s.load(identity, now), identity, now, s.config)


async def test_a_first_request_reads_as_a_new_user_with_nothing_ever_given() -> None:
    s, clock = store(), FakeClock()
    got = await facts(s, ALICE, clock.now())
    assert set(got) == STATE_FACTS | {"clock.local_hour"}
    assert got["session.minutes"] == 0 and got["session.turns"] == 1
    for name in (
        "disclosure.minutes_since",
        "break_reminder.minutes_since",
        "wind_down.minutes_since",
        "referral.minutes_since",
        "crisis.hours_since",
        "user.days_since_last_use",
    ):
        assert got[name] == math.inf, name
    assert got["referral.session_count"] == 0 and got["dependency.days_recent"] == 0
    assert got["distress.recent_turns"] == 0 and got["user.minor"] is False


async def test_session_grows_within_the_gap_and_starts_anew_after_it() -> None:
    s, clock = store(session_gap=1800.0), FakeClock()
    start = clock.now()
    for _ in range(3):
        await s.observe(ALICE, clock.now(), Observation())
        clock.advance(1799)
    got = await facts(s, ALICE, clock.now())
    assert got["session.turns"] == 4
    assert got["session.minutes"] == pytest.approx((clock.now() - start) / 60)
    clock.advance(2)  # 1801 s after the last activity: more than the gap
    got = await facts(s, ALICE, clock.now())
    assert got["session.turns"] == 1 and got["session.minutes"] == 0
    assert got["user.days_since_last_use"] == pytest.approx(1801 / 86400)


async def test_a_session_key_holds_the_session_across_a_gap_and_a_new_key_starts_one() -> None:
    s, clock = store(session_gap=60.0), FakeClock()
    one, two = Identity(ALICE.user, session="1" * 32), Identity(ALICE.user, session="2" * 32)
    await s.observe(one, clock.now(), Observation(records=frozenset({"break_reminder"})))
    clock.advance(2 * HOUR)
    got = await facts(s, one, clock.now())
    assert got["session.turns"] == 2 and got["session.minutes"] == 120
    assert got["break_reminder.minutes_since"] == 120
    got = await facts(s, two, clock.now())
    assert got["session.turns"] == 1 and got["session.minutes"] == 0
    assert got["break_reminder.minutes_since"] == math.inf  # session-scoped


async def test_records_set_their_times_and_user_wide_ones_survive_a_new_session() -> None:
    s, clock = store(), FakeClock()
    everything = frozenset({"disclosure", "break_reminder", "wind_down", "referral"})
    await s.observe(ALICE, clock.now(), Observation(crisis=True, records=everything))
    clock.advance(10 * 60)
    await s.observe(ALICE, clock.now(), Observation(records=frozenset({"crisis_referral"})))
    clock.advance(5 * 60)
    got = await facts(s, ALICE, clock.now())
    assert got["disclosure.minutes_since"] == 15 and got["wind_down.minutes_since"] == 15
    assert got["referral.minutes_since"] == 5 and got["referral.session_count"] == 2
    assert got["crisis.hours_since"] == pytest.approx(0.25)
    clock.advance(5 * HOUR)  # a new session
    got = await facts(s, ALICE, clock.now())
    assert got["referral.session_count"] == 0 and got["break_reminder.minutes_since"] == math.inf
    assert got["disclosure.minutes_since"] == 315 and got["crisis.hours_since"] == 5.25


async def test_distress_counts_only_the_last_five_turns() -> None:
    s, clock = store(), FakeClock()
    for distress in (True, True, True, False, False, False, True, True):
        await s.observe(ALICE, clock.now(), Observation(distress=distress))
        clock.advance(30)
    assert (await facts(s, ALICE, clock.now()))["distress.recent_turns"] == 2
    for _ in range(5):
        await s.observe(ALICE, clock.now(), Observation(distress=False))
    assert (await facts(s, ALICE, clock.now()))["distress.recent_turns"] == 0


async def test_dependency_days_count_distinct_days_of_the_last_seven() -> None:
    s = store(retention=90 * 86400.0)
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=timezone.utc).timestamp())
    for day in (0, 0, 0, 2, 8, 9):  # three hits on day 0 count once
        clock.set(datetime(2026, 3, 1 + day, 12, tzinfo=timezone.utc).timestamp())
        await s.observe(ALICE, clock.now(), Observation(dependency=True))
    clock.set(datetime(2026, 3, 10, 13, tzinfo=timezone.utc).timestamp())
    assert (await facts(s, ALICE, clock.now()))["dependency.days_recent"] == 2  # days 8 and 9
    clock.set(datetime(2026, 3, 16, 1, tzinfo=timezone.utc).timestamp())  # day 15: 9 is in range
    assert (await facts(s, ALICE, clock.now()))["dependency.days_recent"] == 1
    clock.set(datetime(2026, 3, 17, 1, tzinfo=timezone.utc).timestamp())
    assert (await facts(s, ALICE, clock.now()))["dependency.days_recent"] == 0
    state = await s.load(ALICE, clock.now())
    assert len(state.dependency_days) <= 8  # bounded: the window and tomorrow


async def test_days_and_the_local_hour_follow_the_configured_time_zone() -> None:
    utc_23 = datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc).timestamp()
    assert clock_facts(utc_23, StateConfig())["clock.local_hour"] == 23
    tokyo = StateConfig(timezone="Asia/Tokyo")  # UTC+9: already 08:30 the next day
    assert clock_facts(utc_23, tokyo)["clock.local_hour"] == 8
    s = MemoryStore(tokyo)
    await s.observe(ALICE, utc_23 - 16 * HOUR, Observation(dependency=True))  # 16:30 Tokyo
    await s.observe(ALICE, utc_23 - 2 * HOUR, Observation(dependency=True))  # 06:30 next day
    assert (await facts(s, ALICE, utc_23))["dependency.days_recent"] == 2


async def test_minor_comes_from_the_identity() -> None:
    s, clock = store(), FakeClock()
    minor = Identity(ALICE.user, minor=True)
    assert (await facts(s, minor, clock.now()))["user.minor"] is True


async def test_state_expires_retention_after_the_last_activity() -> None:
    s, clock = store(retention=100.0), FakeClock()
    await s.observe(ALICE, clock.now(), Observation(crisis=True))
    clock.advance(99)
    assert (await s.load(ALICE, clock.now())).last_crisis is not None
    await s.observe(ALICE, clock.now(), Observation())  # activity renews it
    clock.advance(99)
    assert (await s.load(ALICE, clock.now())).last_crisis is not None
    clock.advance(2)
    assert await s.load(ALICE, clock.now()) == UserState(session_start=clock.now())
    assert len(s) == 0  # dropped, not only hidden


async def test_expired_users_are_dropped_when_others_write() -> None:
    s, clock = store(retention=100.0), FakeClock()
    for n in range(5):
        await s.observe(Identity(f"{n:032x}"), clock.now(), Observation())
    clock.advance(101)
    await s.observe(ALICE, clock.now(), Observation())
    assert len(s) == 1


async def test_the_memory_store_holds_at_most_max_users_dropping_the_least_recent() -> None:
    s, clock = store(max_users=3), FakeClock()
    users = [Identity(f"{n:032x}") for n in range(5)]
    for identity in users:
        await s.observe(identity, clock.now(), Observation(crisis=True))
        clock.advance(1)
    assert len(s) == 3
    assert (await s.load(users[0], clock.now())).last_crisis is None
    assert (await s.load(users[1], clock.now())).last_crisis is None
    for identity in users[2:]:
        assert (await s.load(identity, clock.now())).last_crisis is not None
    await s.observe(users[2], clock.now(), Observation())  # now the most recent
    await s.observe(users[0], clock.now(), Observation())  # evicts users[3], the least recent
    assert (await s.load(users[3], clock.now())).last_crisis is None
    assert (await s.load(users[2], clock.now())).last_crisis is not None


async def test_erase_forgets_one_user_only() -> None:
    s, clock = store(), FakeClock()
    bob = Identity("b" * 32)
    await s.observe(ALICE, clock.now(), Observation(crisis=True))
    await s.observe(bob, clock.now(), Observation(crisis=True))
    assert await s.erase(ALICE.user) is True
    assert await s.erase(ALICE.user) is False
    assert (await s.load(ALICE, clock.now())).last_crisis is None
    assert (await s.load(bob, clock.now())).last_crisis is not None


async def test_concurrent_observes_lose_no_count() -> None:
    s, clock = store(), FakeClock()
    referral = Observation(records=frozenset({"referral"}))
    await asyncio.gather(*(s.observe(ALICE, clock.now(), referral) for _ in range(300)))

    def hammer() -> None:
        async def many() -> None:
            for _ in range(100):
                await s.observe(ALICE, clock.now(), referral)

        asyncio.run(many())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = await s.load(ALICE, clock.now())
    assert state.turns == 700 and state.referrals == 700


def test_an_unknown_record_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record 'hug'"):
        Observation(records=frozenset({"hug"}))


async def test_a_clock_that_steps_back_never_gives_negative_minutes() -> None:
    s, clock = store(), FakeClock()
    await s.observe(ALICE, clock.now(), Observation(records=frozenset({"disclosure"})))
    clock.advance(-120)
    got = await facts(s, ALICE, clock.now())
    assert got["disclosure.minutes_since"] == 0 and got["session.minutes"] == 0
