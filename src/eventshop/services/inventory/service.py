"""inventory's composition root: what it consumes, what it publishes, how it is built."""

from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.inventory import api, handlers

definition = ServiceDefinition(
    name="inventory",
    port=PORTS["inventory"],
    handlers={
        "product.created": handlers.add_stock_item,
        "order.created": handlers.reserve_stock,
        "order.cancelled": handlers.release_stock,
        "order.confirmed": handlers.sell_reserved_stock,
    },
    publishes=["inventory.reserved", "inventory.rejected", "inventory.released", "stock.adjusted"],
    migrations=["eventshop.services.inventory.migrations"],
    http=api.build_app,
)
