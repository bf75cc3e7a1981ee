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
from eventshop.platform.service import ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.orders import api, handlers, jobs
from eventshop.services.orders.settings import OrdersSettings

Context = ServiceContext[OrdersSettings, None]

definition: ServiceDefinition[OrdersSettings, None] = ServiceDefinition(
    name="orders",
    port=PORTS["orders"],
    handlers={
        ProductCreated: handlers.keep_price,
        ProductUpdated: handlers.keep_price,
        InventoryReserved: handlers.request_payment,
        InventoryRejected: handlers.cancel_for_missing_stock,
        PaymentSucceeded: handlers.confirm_paid_order,
        PaymentFailed: handlers.cancel_unpaid_order,
    },
    publishes=[OrderCreated, PaymentRequested, OrderConfirmed, OrderCancelled],
    migrations=[eventstore.MIGRATIONS, "eventshop.services.orders.migrations"],
    router=api.router,
    settings=OrdersSettings,
    jobs=[jobs.time_out_orders, jobs.run_projections],
    # replicas lock the same orders (and then the event log's counter): a window's first
    lock_first=handlers.lock_window,
)
