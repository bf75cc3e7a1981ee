"""loyalty's internal HTTP routes (behind the gateway)."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI
from pydantic import BaseModel

from eventshop.platform.http import Caller, install_conventions
from eventshop.platform.runtime import ServiceContext
from eventshop.services.loyalty import store


class Award(BaseModel):
    order_id: str
    points: int
    awarded_at: datetime


class Points(BaseModel):
    user_id: str
    points: int
    history: list[Award]


def build_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="loyalty")
    install_conventions(app)

    @app.get("/points")
    async def my_points(who: Caller) -> Points:
        async with ctx.pool.acquire() as conn:
            points, history = await store.balance_of(conn, who.user_id)
        return Points(
            user_id=who.user_id, points=points, history=[Award(**dict(r)) for r in history]
        )

    return app
