"""Events the payments service publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


@registry.event("payment.succeeded", version=1)
class PaymentSucceeded(EventPayload):
    payment_id: str
    order_id: str
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


@registry.event("payment.failed", version=1)
class PaymentFailed(EventPayload):
    payment_id: str
    order_id: str
    reason: Literal["declined", "fraud", "provider_error"]
    detail: str = ""


@registry.event("payment.refunded", version=1)
class PaymentRefunded(EventPayload):
    payment_id: str
    order_id: str
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
