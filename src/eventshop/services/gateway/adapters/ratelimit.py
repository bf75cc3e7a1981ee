"""Rate limits: fixed-window counters in Redis, per client IP and per authenticated user.

Time is cut into windows of `window_s` seconds; a request counts in the window it falls in,
under a key naming the window (`<prefix>ratelimit:<scope>:<who>:<window index>`), and is
refused once that count passes the limit, until the window ends (that is the Retry-After).
A fixed window lets up to twice the limit through across a window boundary; in exchange it is
one counter per caller and one round trip, which is what a gateway in front of everything wants.

Each counter is bumped by a Lua script (INCR, and EXPIRE when it is new) so the key never
outlives its window even if the gateway dies between the two; one script per key so each
touches one key (Redis Cluster safe), all of a request's scripts sent in one pipeline.

A request costs at most one round trip to Redis: the scripts are called by their SHA
(EVALSHA; the script is loaded the first time Redis answers that it does not know it, after a
restart too), not through redis-py's pipeline scripts, which ask SCRIPT EXISTS before every
pipeline; and the caller may have one key read in the same pipeline (`read_along`: the gateway's
session of the request's token), which then needs no round trip of its own.

And the requests that arrive while one pipeline is in flight share the next
(platform/grouping.py, as orders are placed): redis-py's pipeline costs about 100 µs of the
gateway's CPU however few commands it carries, and one of 32 requests' commands costs little
more than one of a single request's (docs/PERFORMANCE.md §5.8). A lone request goes at once.
Each request keeps its own answers: a command that failed fails only its request.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from eventshop.platform.grouping import GroupCommit
from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
#: what Redis knows the script by (EVALSHA)
_HIT_SHA = hashlib.sha1(_HIT.encode(), usedforsecurity=False).hexdigest()


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


@dataclass(frozen=True)
class Counted:
    """One request counted, and the key read along with it."""

    verdict: Verdict
    #: whether `read_along` was read (False when not asked, or when Redis could not be reached)
    was_read: bool = False
    #: its value, None if the key does not exist
    value: str | None = None
    #: Redis could not be reached: nothing was counted (the caller decides to let it through)
    uncounted: bool = False


@dataclass(frozen=True)
class _Hit:
    """One request's commands: its counters' keys, and the key read along (if any)."""

    keys: list[str]
    read_along: str | None

    @property
    def commands(self) -> int:
        return len(self.keys) + (self.read_along is not None)


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
        max_group: int = 64,
    ) -> None:
        self._redis = redis
        self.per_ip = per_ip
        self.per_user = per_user
        self.window_s = window_s
        self._prefix = prefix
        self._clock = clock
        #: the requests waiting for the pipeline in flight go in the next, together
        self.counting: GroupCommit[_Hit, list[Any]] = GroupCommit(max_group=max_group)

    def limits_for(self, ip: str, user_id: str | None) -> list[Limit]:
        limits = [Limit("ip", ip, self.per_ip)]
        if user_id is not None:
            limits.append(Limit("user", user_id, self.per_user))
        return limits

    async def hit(self, ip: str, user_id: str | None, *, read_along: str | None = None) -> Counted:
        """Count one request of this client (and user), reading `read_along` in the same round
        trip; whether the request may proceed, and what was read.

        If Redis cannot be reached nothing is counted (`uncounted`): the caller lets the
        request through, as a cache outage should not take the public catalog down with it, or
        refuses it where an unlimited request is the danger (password guessing). Nothing is
        read then, and authenticated routes still fail, closed, on their own session check.
        """
        window = window_at(self._clock(), self.window_s)
        limits = self.limits_for(ip, user_id)
        keys = [counter_key(self._prefix, limit.scope, limit.who, window) for limit in limits]
        try:
            answers = await self.counting.submit(_Hit(keys, read_along), self._count)
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.unavailable", error=str(exc))
            return Counted(ALLOWED, uncounted=True)
        verdict = judge(limits, [int(c) for c in answers[: len(keys)]], window)
        if read_along is None:
            return Counted(verdict)
        value = answers[-1]
        return Counted(verdict, was_read=True, value=_text(value))

    async def close(self) -> None:
        """Stop counting: a pipeline in flight is abandoned, its requests fail (uncounted)."""
        await self.counting.close()

    async def _count(self, hits: Sequence[_Hit]) -> list[list[Any] | Exception]:
        """Every request's commands in one pipeline; each request's answers, or the error one
        of its commands failed with (that request alone)."""
        answers = await self._run(hits)
        if any(isinstance(a, NoScriptError) for a in answers):
            # first use, or Redis restarted: the script ran nowhere, nothing was counted
            await self._redis.script_load(_HIT)
            answers = await self._run(hits)
        results: list[list[Any] | Exception] = []
        start = 0
        for hit in hits:
            own = answers[start : start + hit.commands]
            start += hit.commands
            failed = next((a for a in own if isinstance(a, Exception)), None)
            results.append(failed if failed is not None else own)
        return results

    async def _run(self, hits: Sequence[_Hit]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for hit in hits:
                for key in hit.keys:
                    pipe.evalsha(_HIT_SHA, 1, key, self.window_s)
                if hit.read_along is not None:
                    pipe.get(hit.read_along)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        return answers


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
