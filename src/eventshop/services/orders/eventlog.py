"""orders' event log, how its records are read: the upcasters of its domain events (a stored
event of an old schema reads as the current one) and the codec of an order's snapshots.

Domain events are orders' own record (eventshop.services.orders.domain), not the integration
events of eventshop.contracts, so their versions and upcasters live here, and the orders store
applies them on every read (streams, the global log, projections, time travel).
Each step takes a payload of version n and returns one of version n+1.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from eventshop.contracts.common import Line
from eventshop.platform.eventstore import Upcasters
from eventshop.services.orders.domain import Order, Status

UPCASTERS = Upcasters()


@UPCASTERS.register("PaymentSucceeded", 1)
def payment_succeeded_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded the captured amount without its currency: v2 says it was not recorded."""
    return {**payload, "currency": None}


class OrderCodec:
    """An order's state in a snapshot; bump `schema_version` when `Order` changes shape."""

    schema_version = 1

    def encode(self, order: Order) -> dict[str, Any]:
        state = asdict(order)
        state["lines"] = [line.model_dump(mode="json") for line in order.lines]
        state["placed_at"] = order.placed_at.isoformat()
        state["deadline"] = order.deadline.isoformat()
        return state

    def decode(self, data: dict[str, Any]) -> Order:
        return Order(
            **{
                **data,
                "lines": tuple(Line.model_validate(line) for line in data["lines"]),
                "placed_at": datetime.fromisoformat(data["placed_at"]),
                "deadline": datetime.fromisoformat(data["deadline"]),
                "status": Status(data["status"]),
            }
        )


CODEC = OrderCodec()
