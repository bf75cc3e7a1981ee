"""loyalty's internal HTTP routes (behind the gateway)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from eventshop.platform.http import Caller
from eventshop.platform.service import Context
from eventshop.services.loyalty import handlers

router = APIRouter()


class Award(BaseModel):
    order_id: str
    points: int
    awarded_at: datetime


class Points(BaseModel):
    user_id: str
    points: int
    history: list[Award]


@router.get("/points")
async def my_points(ctx: Context, who: Caller) -> Points:
    points, history = await handlers.points_of(ctx, who.user_id)
    return Points(user_id=who.user_id, points=points, history=[Award(**dict(r)) for r in history])
