"""orders' composition root: what it consumes, what it publishes, how it is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from eventshop.platform import eventstore
from eventshop.platform.eventstore.projections import start_projections
from eventshop.platform.runtime import ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.orders import api, handlers, projections, store, timeouts
from eventshop.services.orders.settings import OrdersSettings

#: read from the environment when the service is loaded, so a bad value stops it at start
settings = OrdersSettings()


def build_http(ctx: ServiceContext) -> FastAPI:
    return api.build_app(ctx, settings)


async def start_background(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    """The timeout scanner and the projections' live subscriptions; returns what stops both."""
    stop_scanner = timeouts.start_scanner(ctx.pool, settings, service=ctx.name)
    stop_projections = start_projections(
        ctx.pool,
        store.events,
        projections.PROJECTIONS,
        batch=settings.projection_batch,
        poll_s=settings.projection_poll_s,
    )

    async def stop() -> None:
        await stop_projections()
        await stop_scanner()

    return stop


definition = ServiceDefinition(
    name="orders",
    port=PORTS["orders"],
    handlers={
        "product.created": handlers.keep_price,
        "product.updated": handlers.keep_price,
        "inventory.reserved": handlers.stock_reserved,
        "inventory.rejected": handlers.stock_rejected,
        "payment.succeeded": handlers.payment_succeeded,
        "payment.failed": handlers.payment_failed,
    },
    publishes=["order.created", "payment.requested", "order.confirmed", "order.cancelled"],
    migrations=[eventstore.MIGRATIONS, "eventshop.services.orders.migrations"],
    http=build_http,
    on_start=start_background,
)
