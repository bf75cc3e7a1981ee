"""orders' composition root: what it consumes, what it publishes, how it is built.

Its settings (OrdersSettings, EVENTSHOP_ORDERS_*) are read once at start. Its one resource is the
group its POSTs are placed in (a transaction for the orders that arrive together); beyond that it
has the platform's pool and bus (its event store is SQL over that pool: store.events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.contracts.inventory import InventoryRejected, InventoryReserved
from eventshop.contracts.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    PaymentRequested,
)
from eventshop.contracts.payments import PaymentFailed, PaymentSucceeded
from eventshop.platform import eventstore
from eventshop.platform.grouping import GroupCommit
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.orders import api, handlers, jobs
from eventshop.services.orders.settings import OrdersSettings


@dataclass
class Resources:
    #: the orders being placed: those that arrive together are written in one transaction
    placing: GroupCommit[handlers.Placement, tuple[str, str]]


@asynccontextmanager
async def open_resources(
    settings: OrdersSettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    yield Resources(placing=GroupCommit(max_group=settings.place_group_max))


Context = ServiceContext[OrdersSettings, Resources]

SAGA_STEPS = Batch(handlers.advance_orders)

definition: ServiceDefinition[OrdersSettings, Resources] = ServiceDefinition(
    name="orders",
    port=PORTS["orders"],
    handlers={
        ProductCreated: handlers.keep_price,
        ProductUpdated: handlers.keep_price,
        # one batch for the four saga steps: a window's events of them in one call
        InventoryReserved: SAGA_STEPS,
        InventoryRejected: SAGA_STEPS,
        PaymentSucceeded: SAGA_STEPS,
        PaymentFailed: SAGA_STEPS,
    },
    publishes=[OrderCreated, PaymentRequested, OrderConfirmed, OrderCancelled],
    migrations=[eventstore.MIGRATIONS, "eventshop.services.orders.migrations"],
    router=api.router,
    settings=OrdersSettings,
    resources=open_resources,
    jobs=[jobs.time_out_orders, jobs.run_projections],
    # replicas lock the same orders (and then the event log's counter): a window's first
    lock_first=handlers.lock_window,
)
