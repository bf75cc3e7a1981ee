"""notifications' use cases: a window's events -> emails (domain) -> claimed, sent, announced
(one transaction); and the caller's notifications, for its one route."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts.notifications import NotificationSent
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed
from eventshop.contracts.users import UserRegistered
from eventshop.platform.bus import Delivery
from eventshop.services.notifications import domain, store

if TYPE_CHECKING:
    from eventshop.services.notifications.service import Context


def mail_for(event: UserRegistered | OrderConfirmed | OrderCancelled) -> domain.Email:
    """The mail an event asks for."""
    match event:
        case UserRegistered():
            return domain.welcome(user_id=event.user_id, email=event.email, name=event.name)
        case OrderConfirmed():
            return domain.order_confirmed(
                order_id=event.order_id,
                email=event.email,
                total_minor=event.total_minor,
                currency=event.currency,
                lines=event.lines,
            )
        case OrderCancelled():
            return domain.order_cancelled(
                order_id=event.order_id, email=event.email, reason=event.reason
            )
    raise TypeError(f"no mail for {type(event).__name__}")


async def send_notifications(ctx: Context, deliveries: Sequence[Delivery]) -> None:
    """Send the mails a window's events ask for, each unless it was sent already; all in the
    window's transaction (a `Batch` handler, ADR 0016).

    The notifications are claimed first, in one statement, so the same notification asked for
    again (another event id, in this window or another, or a concurrent delivery) is sent once.
    The claimed mails then go over the mailer's session in one hand-over to its thread. If a
    send raises, the transaction rolls back with the claims and the window is handled again one
    event at a time (platform/bus/window.py), each retried by the bus. A mail already out when
    that happens, or when the process dies before the commit, is sent again under the same
    Message-ID and the receiver drops it as a duplicate (see eventshop.tooling.smtp_sink).
    """
    wanted = [
        (uow, store.Claim(uuid.uuid4(), mail_for(event), event.user_id))
        for uow, _, event in deliveries
    ]
    claimed = await store.claim_notifications(deliveries[0][0].conn, [c for _, c in wanted])
    to_send = [(uow, claim) for uow, claim in wanted if claim.notification_id in claimed]
    if not to_send:
        return  # all sent already
    await ctx.resources.mailer.send_all([claim.mail for _, claim in to_send])
    for uow, claim in to_send:
        uow.emit(
            NotificationSent(
                notification_id=str(claim.notification_id),
                kind=claim.mail.kind,
                recipient=claim.mail.recipient,
                ref=claim.mail.ref,
            ),
            aggregate_id=claim.mail.ref,  # the user or order it is about: in their history
        )


async def notifications_of(
    ctx: Context, *, user_id: str, email: str, limit: int
) -> list[asyncpg.Record]:
    """A caller's notifications, newest first (about them, or sent to their address)."""
    async with ctx.pool.acquire() as conn:
        return await store.notifications_of(conn, user_id=user_id, email=email, limit=limit)
