"""The Redis backend: state shared by every replica, through redis-py's asyncio client.

One Redis hash per user, ``guardrail:state:<user key>``, with the fields of
``guardrail.state.model.to_fields`` (timestamps in milliseconds and counters, nothing else).
``observe`` is one Lua script (:data:`OBSERVE`), which Redis runs atomically: two replicas
observing the same user at once both count, without a read-modify-write race or a retry loop,
in one round trip. The script mirrors ``guardrail.state.model.observed`` (a test runs one
sequence through both) and refreshes the key's expiry to ``state.retention`` (``PEXPIRE``), so a
user's state disappears that long after their last activity.

Every operation is bounded by ``state.timeout`` as a whole (connect, send, reply). A failure or
a timeout raises :class:`~guardrail.errors.StateUnavailable`; the client drops the connection it
was using and opens a new one on the next call, so the store works again as soon as Redis
does, and the script is loaded again (``EVALSHA`` falls back to ``SCRIPT LOAD``) after a Redis
restart emptied its script cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from guardrail.errors import StateUnavailable
from guardrail.state.config import StateConfig
from guardrail.state.identity import Identity
from guardrail.state.model import (
    DEPENDENCY_WINDOW_DAYS,
    DISTRESS_TURNS,
    Observation,
    UserState,
    current,
    day_number,
    from_fields,
)

__all__ = ["KEY_PREFIX", "MAX_CONNECTIONS", "OBSERVE", "RedisStore"]

KEY_PREFIX = "guardrail:state:"
MAX_CONNECTIONS = 64
"""Connections one process opens to Redis at most; more concurrent operations wait for one
(within ``state.timeout``) rather than fail."""

OBSERVE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local session = ARGV[2]
local gap = tonumber(ARGV[3])
local today = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local mask = tonumber(ARGV[6])
local distress = ARGV[7] == '1'
local crisis = ARGV[8] == '1'
local dependency = ARGV[9] == '1'
local records = ',' .. ARGV[10] .. ','
local ttl = tonumber(ARGV[11])

local f = {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
local function ms(x) return string.format('%.0f', x) end
local function has(name) return string.find(records, ',' .. name .. ',', 1, true) ~= nil end

local last = tonumber(f.la)
local fresh
if last == nil then fresh = true
elseif session ~= '' then fresh = session ~= (f.sk or '')
else fresh = now - last > gap end

local turns, referrals, bits = 0, 0, 0
local drop = {}
if fresh then
  if session ~= '' then f.sk = session else f.sk = nil; drop[#drop + 1] = 'sk' end
  f.ss = ms(now)
  f.lb = nil; f.lw = nil
  drop[#drop + 1] = 'lb'; drop[#drop + 1] = 'lw'
else
  turns = tonumber(f.tn) or 0
  referrals = tonumber(f.rc) or 0
  bits = tonumber(f.db) or 0
end

local set, written = {}, {}
local function put(name, value)
  f[name] = value; written[name] = true
  set[#set + 1] = name; set[#set + 1] = value
end
if f.fs == nil then put('fs', ms(now)) end
put('la', ms(now))
put('ss', f.ss or ms(now))
if f.sk ~= nil then put('sk', f.sk) end
put('tn', ms(turns + 1))
if has('disclosure') then put('ld', ms(now)) end
if has('break_reminder') then put('lb', ms(now)) end
if has('wind_down') then put('lw', ms(now)) end
if has('referral') or has('crisis_referral') then
  put('lr', ms(now)); referrals = referrals + 1
end
put('rc', ms(referrals))
if crisis then put('lc', ms(now)) end
local bit = 0
if distress then bit = 1 end
put('db', ms((bits * 2 + bit) % (mask + 1)))

local days, seen = {}, {}
if dependency then days[1] = today; seen[today] = true end
for d in string.gmatch(f.dd or '', '[^,]+') do
  local n = tonumber(d)
  if n ~= nil and n > today - window and n <= today + 1 and not seen[n] then
    days[#days + 1] = n; seen[n] = true
  end
end
table.sort(days)
if #days > 0 then
  local parts = {}
  for i, d in ipairs(days) do parts[i] = ms(d) end
  put('dd', table.concat(parts, ','))
else
  drop[#drop + 1] = 'dd'
end

local kept = {}
for _, name in ipairs(drop) do
  if not written[name] then kept[#kept + 1] = name end
end
if #kept > 0 then redis.call('HDEL', key, unpack(kept)) end
redis.call('HSET', key, unpack(set))
redis.call('PEXPIRE', key, ttl)
return 1
"""
"""Apply one Observation to a user's hash, atomically (mirrors ``model.observed``)."""

T = TypeVar("T")


class RedisStore:
    """:class:`~guardrail.state.store.StateStore` on Redis (``state.url``)."""

    def __init__(self, config: StateConfig) -> None:
        if not config.url:
            raise ValueError("the redis backend needs state.url")
        self.config = config
        pool = aioredis.BlockingConnectionPool.from_url(
            config.url,
            max_connections=MAX_CONNECTIONS,
            timeout=config.timeout,  # waiting for a free connection counts against the bound
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._observe = self._client.register_script(OBSERVE)

    @staticmethod
    def key(user: str) -> str:
        return KEY_PREFIX + user

    async def _bounded(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.config.timeout):
                return await operation()
        except (TimeoutError, RedisTimeout):
            raise StateUnavailable("state store did not answer in time", cause="timeout") from None
        except (RedisConnectionError, OSError) as exc:
            message = f"state store unreachable: {type(exc).__name__}"
            raise StateUnavailable(message, cause="connection") from None
        except RedisError as exc:
            message = f"state store failed: {type(exc).__name__}"
            raise StateUnavailable(message, cause="error") from None

    async def load(self, identity: Identity, now: float) -> UserState:
        fields: dict[Any, Any] = await self._bounded(
            lambda: self._client.hgetall(self.key(identity.user))
        )
        return current(from_fields(fields), now, identity.session, self.config.session_gap)

    async def observe(self, identity: Identity, now: float, observation: Observation) -> None:
        args: list[str | int] = [
            round(now * 1000),
            identity.session or "",
            round(self.config.session_gap * 1000),
            day_number(now, self.config.zone),
            DEPENDENCY_WINDOW_DAYS,
            (1 << DISTRESS_TURNS) - 1,
            int(observation.distress),
            int(observation.crisis),
            int(observation.dependency),
            ",".join(sorted(observation.records)),
            max(1, round(self.config.retention * 1000)),
        ]
        keys = [self.key(identity.user)]
        await self._bounded(lambda: self._observe(keys=keys, args=args))

    async def erase(self, user: str) -> bool:
        removed: int = await self._bounded(lambda: self._client.delete(self.key(user)))
        return removed > 0

    async def ping(self) -> bool:
        try:
            return bool(await self._bounded(self._client.ping))
        except StateUnavailable:
            return False

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)
