"""Per-key token buckets in Redis, shared by every gateway replica.

One Lua script reads the bucket, refills it by the time passed (Redis' own clock, so replicas on
different machines agree), takes the cost if it can, and says how long to wait if it cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio

from ragstream.stores.keys import Keys

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys):
        self._take = client.register_script(_TAKE)
        self._keys = keys

    async def take(self, key_id: str, rate_per_s: float, burst: int, cost: int = 1) -> Decision:
        if cost > burst:
            return Decision(False, math.ceil(cost / rate_per_s))
        allowed, wait = await self._take(keys=[self._keys.ratelimit(key_id)],
                                         args=[rate_per_s, burst, cost])
        return Decision(bool(allowed), max(1, math.ceil(float(wait))))
