"""inventory's composition root: what it consumes, what it publishes, how it is built.

It has no settings and no resources of its own: its context is the platform's pool and bus.
"""

from eventshop.contracts.catalog import ProductCreated
from eventshop.contracts.inventory import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    StockAdjusted,
)
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed, OrderCreated
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.inventory import api, handlers

Context = ServiceContext[None, None]

MOVE_STOCK = Batch(handlers.move_stock)

definition: ServiceDefinition[None, None] = ServiceDefinition(
    name="inventory",
    port=PORTS["inventory"],
    handlers={
        ProductCreated: handlers.add_stock_item,
        # one batch for reserving and selling: a window's run of them in one call (ADR 0016)
        OrderCreated: MOVE_STOCK,
        OrderCancelled: handlers.release_stock,
        OrderConfirmed: MOVE_STOCK,
    },
    publishes=[InventoryReserved, InventoryRejected, InventoryReleased, StockAdjusted],
    migrations=["eventshop.services.inventory.migrations"],
    router=api.router,
    # replicas compete for the same stock rows: lock a window's first, in sku order
    lock_first=handlers.lock_window,
)
