"""notifications' internal HTTP routes (behind the gateway)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from eventshop.platform.http import Caller
from eventshop.platform.service import Context
from eventshop.services.notifications import handlers

router = APIRouter()


class Notification(BaseModel):
    notification_id: uuid.UUID
    kind: str
    #: what it is about: the user id or the order id
    ref: str
    recipient: str
    subject: str
    sent_at: datetime


class Notifications(BaseModel):
    notifications: list[Notification]


@router.get("/notifications")
async def my_notifications(
    ctx: Context, who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> Notifications:
    """The caller's notifications, newest first."""
    rows = await handlers.notifications_of(ctx, user_id=who.user_id, email=who.email, limit=limit)
    return Notifications(notifications=[Notification(**dict(r)) for r in rows])
