"""loyalty's event handlers."""

from __future__ import annotations

from eventshop.contracts import Envelope
from eventshop.contracts.loyalty import PointsAwarded
from eventshop.contracts.orders import OrderConfirmed
from eventshop.platform.uow import UnitOfWork
from eventshop.services.loyalty import domain, store


async def award_points(uow: UnitOfWork, env: Envelope, event: OrderConfirmed) -> None:
    points = domain.points_for(event.total_minor)
    balance = await store.record_award(uow.conn, event.order_id, event.user_id, points)
    if balance is None:
        return  # already awarded (the inbox dedupes deliveries; this guards a re-published order)
    uow.emit(
        PointsAwarded(
            user_id=event.user_id, order_id=event.order_id, points=points, balance=balance
        ),
        aggregate_id=event.user_id,
    )
