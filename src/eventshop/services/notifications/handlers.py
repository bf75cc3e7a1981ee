"""notifications' use cases: event -> email (domain) -> claim, send, emit (one transaction);
and the caller's notifications, for its one route."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts import Envelope
from eventshop.contracts.notifications import NotificationSent
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed
from eventshop.contracts.users import UserRegistered
from eventshop.platform.bus import UnitOfWork
from eventshop.services.notifications import domain, store

if TYPE_CHECKING:
    from eventshop.services.notifications.service import Context


async def welcome_user(ctx: Context, uow: UnitOfWork, env: Envelope, event: UserRegistered) -> None:
    mail = domain.welcome(user_id=event.user_id, email=event.email, name=event.name)
    await _send_once(ctx, uow, mail, user_id=event.user_id)


async def mail_order_confirmation(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: OrderConfirmed
) -> None:
    mail = domain.order_confirmed(
        order_id=event.order_id,
        email=event.email,
        total_minor=event.total_minor,
        currency=event.currency,
        lines=event.lines,
    )
    await _send_once(ctx, uow, mail, user_id=event.user_id)


async def mail_order_cancellation(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: OrderCancelled
) -> None:
    mail = domain.order_cancelled(order_id=event.order_id, email=event.email, reason=event.reason)
    await _send_once(ctx, uow, mail, user_id=event.user_id)


async def _send_once(ctx: Context, uow: UnitOfWork, mail: domain.Email, *, user_id: str) -> None:
    """Send `mail` unless it was sent already; all in the handler's transaction.

    The row is claimed first, so the same notification asked for again (another event id, or a
    concurrent delivery) does nothing. If the send raises, the transaction rolls back with the
    claim and the bus retries. If the process dies after the send but before the commit, the
    retry sends the same Message-ID again and the receiver drops it as a duplicate (see
    eventshop.tooling.smtp_sink).
    """
    notification_id = uuid.uuid4()
    if not await store.claim_notification(uow.conn, notification_id, mail, user_id=user_id):
        return  # already sent
    await ctx.resources.mailer.send(mail)
    uow.emit(
        NotificationSent(
            notification_id=str(notification_id),
            kind=mail.kind,
            recipient=mail.recipient,
            ref=mail.ref,
        ),
        aggregate_id=mail.ref,  # the user or order it is about: it shows in their history
    )


async def notifications_of(
    ctx: Context, *, user_id: str, email: str, limit: int
) -> list[asyncpg.Record]:
    """A caller's notifications, newest first (about them, or sent to their address)."""
    async with ctx.pool.acquire() as conn:
        return await store.notifications_of(conn, user_id=user_id, email=email, limit=limit)
