"""Upcasters of orders' domain events: a stored event of an old schema reads as the current one.

Domain events are orders' own record (eventshop.services.orders.domain), not the integration
events of eventshop.contracts, so their versions and upcasters live here, and the orders store
applies them on every read (streams, the global log, projections, time travel).
Each step takes a payload of version n and returns one of version n+1.
"""

from __future__ import annotations

from typing import Any

from eventshop.platform.eventstore import Upcasters

UPCASTERS = Upcasters()


@UPCASTERS.register("PaymentSucceeded", 1)
def payment_succeeded_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded the captured amount without its currency: v2 says it was not recorded."""
    return {**payload, "currency": None}
