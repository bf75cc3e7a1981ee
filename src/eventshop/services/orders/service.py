"""orders' composition root: what it consumes, what it publishes, how it is built.

Its settings (OrdersSettings, EVENTSHOP_ORDERS_*) are read once at start; it has no resources of
its own beyond the platform's pool and bus (its event store is SQL over that pool: store.events).
"""

from __future__ import annotations

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
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.orders import api, handlers, jobs
from eventshop.services.orders.settings import OrdersSettings

Context = ServiceContext[OrdersSettings, None]

SAGA_STEPS = Batch(handlers.advance_orders)

definition: ServiceDefinition[OrdersSettings, None] = ServiceDefinition(
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
    jobs=[jobs.time_out_orders, jobs.run_projections],
    # replicas lock the same orders (and then the event log's counter): a window's first
    lock_first=handlers.lock_window,
)
