"""Events the inventory service publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventshop.contracts.common import Line
from eventshop.contracts.registry import EventPayload, registry


@registry.event("inventory.reserved", version=1)
class InventoryReserved(EventPayload):
    order_id: str
    lines: tuple[Line, ...]


@registry.event("inventory.rejected", version=1)
class InventoryRejected(EventPayload):
    order_id: str
    reason: Literal["out_of_stock", "unknown_sku"]
    #: the skus that could not be reserved
    skus: tuple[str, ...] = ()


@registry.event("inventory.released", version=1)
class InventoryReleased(EventPayload):
    order_id: str
    lines: tuple[Line, ...]


@registry.event("stock.adjusted", version=1)
class StockAdjusted(EventPayload):
    sku: str
    delta: int
    on_hand: int = Field(ge=0)
    reason: Literal["restock", "correction"] = "restock"
