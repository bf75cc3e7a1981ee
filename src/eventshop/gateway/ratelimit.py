"""Rate limits: fixed-window counters in Redis, per client IP and per authenticated user.

Time is cut into windows of `window_s` seconds; a request counts in the window it falls in,
under a key naming the window (`<prefix>ratelimit:<scope>:<who>:<window index>`), and is
refused once that count passes the limit, until the window ends (that is the Retry-After).
A fixed window lets up to twice the limit through across a window boundary; in exchange it is
one counter per caller and one round trip, which is what a gateway in front of everything wants.

Each counter is bumped by a Lua script (INCR, and EXPIRE when it is new) so the key never
outlives its window even if the gateway dies between the two; one script per key so each
touches one key (Redis Cluster safe), all of a request's scripts sent in one pipeline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@dataclass(frozen=True)
class Window:
    """The window an instant falls in."""

    index: int
    #: seconds until it ends (> 0)
    remaining_s: float


def window_at(now: float, window_s: int) -> Window:
    index = math.floor(now / window_s)
    return Window(index=index, remaining_s=(index + 1) * window_s - now)


def retry_after_s(window: Window) -> int:
    """Whole seconds to wait (the Retry-After header): at least 1, never before the window ends."""
    return max(1, math.ceil(window.remaining_s))


def counter_key(prefix: str, scope: str, who: str, window: Window) -> str:
    return f"{prefix}ratelimit:{scope}:{who}:{window.index}"


@dataclass(frozen=True)
class Limit:
    scope: str  # "ip" or "user"
    who: str
    per_window: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: seconds until the exhausted window ends; 0 when allowed
    retry_after_s: int = 0
    #: the limit that refused the request
    refused_by: Limit | None = None


ALLOWED = Verdict(allowed=True)


def judge(limits: list[Limit], counts: list[int], window: Window) -> Verdict:
    """Refuse if any counter (already including this request) is past its limit."""
    for limit, count in zip(limits, counts, strict=True):
        if count > limit.per_window:
            return Verdict(allowed=False, retry_after_s=retry_after_s(window), refused_by=limit)
    return ALLOWED


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        *,
        per_ip: int,
        per_user: int,
        window_s: int,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._hit = redis.register_script(_HIT)
        self.per_ip = per_ip
        self.per_user = per_user
        self.window_s = window_s
        self._prefix = prefix
        self._clock = clock

    def limits_for(self, ip: str, user_id: str | None) -> list[Limit]:
        limits = [Limit("ip", ip, self.per_ip)]
        if user_id is not None:
            limits.append(Limit("user", user_id, self.per_user))
        return limits

    async def hit(self, ip: str, user_id: str | None) -> Verdict:
        """Count one request of this client (and user); whether it may proceed.

        If Redis cannot be reached the request is let through (and logged): a cache outage
        should not take the public catalog down with it. Authenticated routes still fail,
        closed, on their session check.
        """
        window = window_at(self._clock(), self.window_s)
        limits = self.limits_for(ip, user_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for limit in limits:
                    key = counter_key(self._prefix, limit.scope, limit.who, window)
                    await self._hit(keys=[key], args=[self.window_s], client=pipe)
                counts = [int(c) for c in await pipe.execute()]
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.unavailable", error=str(exc))
            return ALLOWED
        return judge(limits, counts, window)
