"""Events the orders service publishes (the saga's integration events)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventshop.contracts.common import Line
from eventshop.contracts.registry import EventPayload, registry

CancelReason = Literal["out_of_stock", "payment_declined", "fraud", "timeout", "unknown_sku"]


@registry.event("order.created", version=1)
class OrderCreated(EventPayload):
    order_id: str
    user_id: str
    email: str
    lines: tuple[Line, ...] = Field(min_length=1)
    total_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


@registry.event("payment.requested", version=1)
class PaymentRequested(EventPayload):
    order_id: str
    user_id: str
    email: str
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    #: the payment method chosen at checkout (a provider token, e.g. "tok_visa")
    payment_token: str = "tok_visa"
    #: the id the payment is to have: its result must name it, or the order refuses it
    #: (absent from requests made before orders named their payments)
    payment_id: str | None = None


@registry.event("order.confirmed", version=1)
class OrderConfirmed(EventPayload):
    order_id: str
    user_id: str
    email: str
    total_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    lines: tuple[Line, ...]


@registry.event("order.cancelled", version=1)
class OrderCancelled(EventPayload):
    order_id: str
    user_id: str
    email: str
    reason: CancelReason
    #: whether stock was reserved for it (inventory releases it)
    stock_reserved: bool
    lines: tuple[Line, ...]
