"""catalog's composition root: what it consumes, what it publishes, how it is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from eventshop.platform.runtime import ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.catalog import api
from eventshop.services.catalog.settings import CatalogSettings


async def start(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    """Validate the catalog's settings and open its Redis client (readiness then checks it)."""
    settings = CatalogSettings()
    ctx.extras["catalog_settings"] = settings
    redis = Redis.from_url(
        ctx.settings.redis_url,
        socket_timeout=settings.cache_timeout_s,
        socket_connect_timeout=settings.cache_timeout_s,
    )
    ctx.extras["redis"] = redis
    return redis.aclose


definition = ServiceDefinition(
    name="catalog",
    port=PORTS["catalog"],
    handlers={},
    publishes=["product.created", "product.updated"],
    migrations=["eventshop.services.catalog.migrations"],
    http=api.build_app,
    on_start=start,
)
