"""Events the loyalty service publishes."""

from __future__ import annotations

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


@registry.event("loyalty.points_awarded", version=1)
class PointsAwarded(EventPayload):
    user_id: str
    order_id: str
    points: int = Field(ge=0)
    balance: int = Field(ge=0)
