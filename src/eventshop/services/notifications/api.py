"""notifications' internal HTTP routes (behind the gateway)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import BaseModel

from eventshop.platform.http import Caller, install_conventions
from eventshop.platform.runtime import ServiceContext
from eventshop.services.notifications import store


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


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="notifications")
    install_conventions(app)

    @app.get("/notifications")
    async def my_notifications(
        who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> Notifications:
        """The caller's notifications, newest first."""
        async with ctx.pool.acquire() as conn:
            rows = await store.notifications_of(
                conn, user_id=who.user_id, email=who.email, limit=limit
            )
        return Notifications(notifications=[Notification(**dict(r)) for r in rows])

    return app
