"""Events the notifications service publishes."""

from __future__ import annotations

from typing import Literal

from eventshop.contracts.registry import EventPayload, registry


@registry.event("notification.sent", version=1)
class NotificationSent(EventPayload):
    notification_id: str
    kind: Literal["welcome", "order_confirmed", "order_cancelled"]
    recipient: str
    #: what it is about: the user id or the order id
    ref: str
