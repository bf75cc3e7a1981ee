"""Value shapes that several services' events share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Line(BaseModel):
    """One line of an order: how many of which sku (and, in order events, at what price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1_000)
    unit_price_minor: int | None = Field(default=None, ge=0)


Currency = str  # ISO 4217 code, e.g. "EUR"
