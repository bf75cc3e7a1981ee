"""notifications' event handlers: event -> email (domain) -> claim, send, emit (one transaction)."""

from __future__ import annotations

import uuid
from typing import Protocol

from eventshop.contracts import Envelope
from eventshop.contracts.notifications import NotificationSent
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed
from eventshop.contracts.users import UserRegistered
from eventshop.platform.uow import UnitOfWork
from eventshop.services.notifications import domain, store


class Mailer(Protocol):
    """Delivers an email or raises; `SmtpMailer` is the real one."""

    async def send(self, mail: domain.Email) -> None: ...

    async def close(self) -> None:
        """Let go of any connection kept between sends (the service is stopping)."""


class Notifier:
    """The handlers, bound to the mailer they send through (the composition root picks it)."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def welcome(self, uow: UnitOfWork, env: Envelope, event: UserRegistered) -> None:
        mail = domain.welcome(user_id=event.user_id, email=event.email, name=event.name)
        await self._notify(uow, mail, user_id=event.user_id)

    async def order_confirmed(self, uow: UnitOfWork, env: Envelope, event: OrderConfirmed) -> None:
        mail = domain.order_confirmed(
            order_id=event.order_id,
            email=event.email,
            total_minor=event.total_minor,
            currency=event.currency,
            lines=event.lines,
        )
        await self._notify(uow, mail, user_id=event.user_id)

    async def order_cancelled(self, uow: UnitOfWork, env: Envelope, event: OrderCancelled) -> None:
        mail = domain.order_cancelled(
            order_id=event.order_id, email=event.email, reason=event.reason
        )
        await self._notify(uow, mail, user_id=event.user_id)

    async def _notify(self, uow: UnitOfWork, mail: domain.Email, *, user_id: str) -> None:
        """Send `mail` unless it was sent already; all in the handler's transaction.

        The row is claimed first, so the same notification asked for again (another event id,
        or a concurrent delivery) does nothing. If the send raises, the transaction rolls back
        with the claim and the bus retries. If the process dies after the send but before the
        commit, the retry sends the same Message-ID again and the receiver drops it as a
        duplicate (see eventshop.smtp_sink).
        """
        notification_id = uuid.uuid4()
        if not await store.claim_notification(uow.conn, notification_id, mail, user_id=user_id):
            return  # already sent
        await self.mailer.send(mail)
        uow.emit(
            NotificationSent(
                notification_id=str(notification_id),
                kind=mail.kind,
                recipient=mail.recipient,
                ref=mail.ref,
            ),
            aggregate_id=mail.ref,  # the user or order it is about: it shows in their history
        )
