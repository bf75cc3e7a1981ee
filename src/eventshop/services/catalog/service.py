"""catalog's composition root: it consumes nothing and publishes product.created/updated.

Its settings (`CatalogSettings`) shape the cache; its one resource is the product cache over
a Redis client of its own, opened at start and closed at stop. Readiness reports the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.platform.service import ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.catalog import api
from eventshop.services.catalog.adapters import RedisProductCache
from eventshop.services.catalog.settings import CatalogSettings


@dataclass
class Resources:
    cache: RedisProductCache

    async def checks(self) -> dict[str, bool]:
        """Whether Redis answers (the catalog still serves, from the database, when it does not)."""
        try:
            return {"cache": bool(await asyncio.wait_for(self.cache.redis.ping(), 2))}
        except Exception:
            return {"cache": False}


@asynccontextmanager
async def open_resources(
    settings: CatalogSettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    """The cache over a Redis client of the catalog's own, closed when the service stops."""
    redis = Redis.from_url(
        platform.redis_url,
        socket_timeout=settings.cache_timeout_s,
        socket_connect_timeout=settings.cache_timeout_s,
    )
    try:
        yield Resources(
            cache=RedisProductCache(redis, prefix=settings.cache_prefix, ttl_s=settings.cache_ttl_s)
        )
    finally:
        await redis.aclose()


Context = ServiceContext[CatalogSettings, Resources]

definition: ServiceDefinition[CatalogSettings, Resources] = ServiceDefinition(
    name="catalog",
    port=PORTS["catalog"],
    publishes=[ProductCreated, ProductUpdated],
    migrations=["eventshop.services.catalog.migrations"],
    router=api.router,
    settings=CatalogSettings,
    resources=open_resources,
)
