"""Where rate-limit state lives: this host's memory (shared by the gateway's worker
processes) or Redis (shared by every gateway replica)."""

from __future__ import annotations

import hashlib
import logging
import mmap
import multiprocessing
import secrets
import struct
import time
from typing import Any, Protocol

from gateway_svc.domain.ratelimit import Decision, gcra
from gateway_svc.domain.routes import RateLimitPolicy

log = logging.getLogger("gateway.ratelimit")

_WAYS = 8
_BUCKET = struct.Struct("<8Q8d")  # 8 key hashes, then their 8 TATs: 128 bytes per bucket
_KEY = struct.Struct("<Q")
_TAT = struct.Struct("<d")


class AsyncLimiterStore(Protocol):
    async def check(
        self, key: bytes, policy: RateLimitPolicy, cost: int = 1, *, debit: bool = False
    ) -> Decision: ...

    async def close(self) -> None: ...


class LocalStore:
    """A set-associative table of TATs in shared memory.

    Created before the workers fork, it is one table for all of them, so a limit
    holds across the workers of one host. Each bucket has 8 slots; a new key takes an
    empty or expired slot (an expired TAT is a full bucket, same as no entry), and
    when all 8 are live the slot closest to expiry is reused, so memory is bounded
    (``slots * 16`` bytes).

    With several workers, updates hold one process-shared semaphore for about a
    microsecond (its uncontended path is an atomic operation, no syscall). A worker
    killed inside that microsecond would leave it held: the others notice after
    ``LOCK_TIMEOUT``, log it, and carry on without the lock (a racy update can at
    worst let a few extra requests through) while the supervisor replaces the worker.
    """

    LOCK_TIMEOUT = 0.1

    def __init__(self, slots: int = 1 << 16, *, shared: bool = False) -> None:
        self.buckets = max(1, slots // _WAYS)
        self._memory = mmap.mmap(-1, self.buckets * _BUCKET.size)
        self._salt = secrets.token_bytes(16)
        self._hashes: dict[bytes, int] = {}
        self._lock: Any = multiprocessing.get_context("fork").Lock() if shared else None

    def _slot_hash(self, key: bytes) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            digest = hashlib.blake2b(key, digest_size=8, key=self._salt).digest()
            hashed = int.from_bytes(digest, "little") or 1
            if len(self._hashes) >= 65536:
                self._hashes.clear()
            self._hashes[key] = hashed
        return hashed

    def check(
        self, key: bytes, policy: RateLimitPolicy, cost: int = 1, *, debit: bool = False
    ) -> Decision:
        """One GCRA decision for ``key`` (see :func:`~gateway_svc.domain.ratelimit.gcra`
        for ``cost`` and ``debit``)."""
        hashed = self._slot_hash(key)
        bucket = hashed % self.buckets
        offset = bucket * _BUCKET.size
        lock = self._lock
        if lock is not None and not lock.acquire(timeout=self.LOCK_TIMEOUT):
            log.error("the shared rate-limit lock is stuck (a worker died holding it); going on")
            self._lock = lock = None
        try:
            now = time.monotonic()
            values = _BUCKET.unpack_from(self._memory, offset)
            slot = -1
            tat = now
            for way in range(_WAYS):
                if values[way] == hashed:
                    slot = way
                    tat = values[_WAYS + way]
                    break
            if slot < 0:
                oldest = 0
                for way in range(_WAYS):
                    if values[way] == 0 or values[_WAYS + way] <= now:
                        oldest = way
                        break
                    if values[_WAYS + way] < values[_WAYS + oldest]:
                        oldest = way
                slot = oldest
                _KEY.pack_into(self._memory, offset + 8 * slot, hashed)
                _TAT.pack_into(self._memory, offset + 64 + 8 * slot, now)
            decision, new_tat = gcra(policy, tat, now, cost, debit=debit)
            if new_tat != tat:
                _TAT.pack_into(self._memory, offset + 64 + 8 * slot, new_tat)
            return decision
        finally:
            if lock is not None:
                lock.release()

    def close(self) -> None:
        self._lock = None


# GCRA in one atomic step, on Redis' clock so every replica agrees on "now".
# Times in microseconds; values are written with %.0f so Lua never emits 1e+15.
# ARGV: interval, window, cost, debit (1: settle after the fact, never refused; a negative
# cost gives back; TAT stays within [now, now + 2 windows]).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if (not tat) or tat < now then tat = now end
if ARGV[4] == '1' then
  local new_tat = math.min(math.max(tat + cost * interval, now), now + 2 * window)
  if new_tat <= now then
    redis.call('DEL', KEYS[1])
    return {1, '0', '0'}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  if new_tat - window <= now then return {1, string.format('%.0f', new_tat - now), '0'} end
  return {0, string.format('%.0f', new_tat - now), '0'}
end
local allow_at = tat + math.max(cost, 1) * interval - window
if now < allow_at then
  return {0, string.format('%.0f', tat - now), string.format('%.0f', allow_at - now)}
end
if cost == 0 then return {1, string.format('%.0f', tat - now), '0'} end
local new_tat = tat + cost * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, string.format('%.0f', new_tat - now), '0'}
"""


class RedisStore:
    """GCRA on Redis (one Lua script per decision), so a limit holds across replicas.

    If Redis cannot answer, the decision falls back to the host-local table (limits
    then hold per host instead of failing open) and the outage is logged.
    """

    def __init__(self, url: str, prefix: str, fallback: LocalStore, timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, max_connections=256
        )
        self._script = self._redis.register_script(_GCRA_LUA)
        self.prefix = prefix.encode()
        self.fallback = fallback
        self._last_warning = 0.0
        self.errors = 0

    async def check(
        self, key: bytes, policy: RateLimitPolicy, cost: int = 1, *, debit: bool = False
    ) -> Decision:
        import redis

        interval = round(policy.emission_interval * 1_000_000)
        window = round(policy.window * 1_000_000)
        try:
            allowed, reset, retry = await self._script(
                keys=[self.prefix + key], args=[interval, window, cost, 1 if debit else 0]
            )
        except (TimeoutError, redis.RedisError, OSError) as error:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning(
                    "Redis rate limiting failed; using the host-local table",
                    extra={"error": repr(error)},
                )
            return self.fallback.check(key, policy, cost, debit=debit)
        reset_s = int(reset) / 1_000_000
        if int(allowed):
            remaining = int((window - int(reset)) / interval + 1e-6)
            return Decision(True, remaining, reset_s, 0.0)
        return Decision(False, 0, reset_s, int(retry) / 1_000_000)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
