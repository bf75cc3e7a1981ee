"""catalog's adapter: cache-aside for product reads, in Redis.

Readers look in Redis first and, on a miss, read PostgreSQL and fill Redis. Every key has a TTL.
The promise: once an update has been committed and its HTTP response returned, no read serves
the product as it was before that update. Two races threaten it, and each has its guard.

1. A product key (a hash: version + data). The classic race is a reader that read version 1
   from the database, stalls, and writes it to Redis after an update to version 2 committed
   and invalidated the key: with "delete after commit" alone the old value would then live
   for a whole TTL. So the writer does not delete; after its commit it *writes* the new
   version, and every write, the reader's fill included, goes through one Lua script that
   refuses to replace a cached version with an older one (atomic in Redis, so no
   check-then-set window). Whatever order the writes land in, the highest version stays.
   The one gap left: a reader that stalls longer than the TTL between its database read and
   its fill could find the newer entry expired. `remember_product` refuses to fill when its
   read is older than half a TTL, so that gap is closed too.
2. List pages. A page holds many products, so a per-product version does not fit. Every page
   key includes a *generation* number; a writer bumps it after its commit, so every page
   cached before is out of reach at once. A reader reads the generation *before* it reads the
   database: a page read from a snapshot older than an update is therefore filed under a
   generation older than that update's bump, which no reader asks for afterwards. The
   generation key has a TTL too (ten page TTLs, refreshed by every read and bump), so it
   always outlives the pages filed under it: when it expires and restarts from 0, no page of
   an earlier generation 0 is left.

Redis is a cache, not a source of truth: when it fails, reads go to the database (a miss) and
the failure is logged. The one case a failure can matter is the writer's own post-commit
write; it then tries to delete the key, and if Redis is unreachable for both, the old entry
lives at most one TTL (and readers who cannot reach Redis read the database anyway).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventshop.platform.observability.logging import get_logger
from eventshop.services.catalog.domain import PageRequest, Product

log = get_logger(__name__)

#: KEYS[1] the product key; ARGV version, data (JSON), ttl (s). Writes unless a newer version
#: is cached; an equal version rewrites the same data (and so refreshes the TTL).
_REMEMBER_IF_NOT_OLDER = """
local cached = redis.call('HGET', KEYS[1], 'version')
if cached and tonumber(cached) > tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: how many page TTLs the generation key outlives the pages filed under it
_GENERATION_TTL_FACTOR = 10

Page = tuple[list[Product], int]


class RedisProductCache:
    """Products and list pages in Redis, with `hits` and `misses` counted for observation."""

    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0
        self._remember_if_not_older = redis.register_script(_REMEMBER_IF_NOT_OLDER)

    # -- keys ----------------------------------------------------------------------------------
    def product_key(self, sku: str) -> str:
        return f"{self.prefix}:product:{sku}"

    @property
    def generation_key(self) -> str:
        return f"{self.prefix}:products:generation"

    def page_key(self, generation: int, request: PageRequest) -> str:
        which = "all" if request.include_inactive else "active"
        return f"{self.prefix}:products:page:{generation}:{which}:{request.limit}:{request.offset}"

    def _fresh_enough(self, read_started: float) -> bool:
        """Whether a fill from a read started at `read_started` (monotonic) may still be written."""
        return time.monotonic() - read_started < self.ttl_s / 2

    # -- products ------------------------------------------------------------------------------
    async def cached_product(self, sku: str) -> Product | None:
        try:
            data = await self.redis.hget(self.product_key(sku), "data")
        except RedisError as exc:
            log.warning("catalog.cache_unavailable", op="get_product", error=repr(exc))
            data = None
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        return _product_from(orjson.loads(data))

    async def remember_product(self, product: Product, *, read_started: float) -> bool:
        """Fill the cache after a miss; False when a newer version is there or the read is old."""
        if not self._fresh_enough(read_started):
            return False
        try:
            return await self._write_if_not_older(product)
        except RedisError as exc:
            log.warning("catalog.cache_unavailable", op="fill_product", error=repr(exc))
            return False

    async def _write_if_not_older(self, product: Product) -> bool:
        written = await self._remember_if_not_older(
            keys=[self.product_key(product.sku)],
            args=[product.version, orjson.dumps(asdict(product)), self.ttl_s],
        )
        return bool(written)

    async def product_changed(self, product: Product) -> None:
        """After a committed create or update: cache the new version, retire every list page."""
        try:
            await self._write_if_not_older(product)
        except RedisError as exc:
            log.error("catalog.cache_write_failed", sku=product.sku, error=repr(exc))
            try:
                await self.redis.delete(self.product_key(product.sku))
            except RedisError:
                log.error("catalog.cache_stale_until_ttl", sku=product.sku, ttl_s=self.ttl_s)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(self.generation_key)
                pipe.expire(self.generation_key, self.ttl_s * _GENERATION_TTL_FACTOR)
                await pipe.execute()
        except RedisError as exc:
            log.error("catalog.cache_pages_stale_until_ttl", ttl_s=self.ttl_s, error=repr(exc))

    # -- list pages ----------------------------------------------------------------------------
    async def list_generation(self) -> int:
        """The current page generation (read before the database, see the module docstring)."""
        try:
            value = await self.redis.getex(
                self.generation_key, ex=self.ttl_s * _GENERATION_TTL_FACTOR
            )
        except RedisError as exc:
            log.warning("catalog.cache_unavailable", op="get_generation", error=repr(exc))
            return -1  # never filed under: pages are neither read nor written
        return int(value) if value is not None else 0

    async def cached_page(self, generation: int, request: PageRequest) -> Page | None:
        data = None
        if generation >= 0:
            try:
                data = await self.redis.get(self.page_key(generation, request))
            except RedisError as exc:
                log.warning("catalog.cache_unavailable", op="get_page", error=repr(exc))
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        page = orjson.loads(data)
        return [_product_from(p) for p in page["items"]], int(page["total"])

    async def remember_page(
        self, generation: int, request: PageRequest, page: Page, *, read_started: float
    ) -> None:
        if generation < 0 or not self._fresh_enough(read_started):
            return
        items, total = page
        key = self.page_key(generation, request)
        data = orjson.dumps({"items": [asdict(p) for p in items], "total": total})
        try:
            await self.redis.set(key, data, ex=self.ttl_s)
        except RedisError as exc:
            log.warning("catalog.cache_unavailable", op="fill_page", error=repr(exc))


def _product_from(data: dict[str, Any]) -> Product:
    return Product(**{**data, "updated_at": datetime.fromisoformat(data["updated_at"])})
