"""notifications' composition root: what it consumes, what it publishes, how it is built.

Its settings (`NotificationsSettings`) say where mail goes; its one resource is the mailer.
Opening it opens no connection: the mailer opens its SMTP session at the first send, and the
service closes it when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from eventshop.contracts.notifications import NotificationSent
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed
from eventshop.contracts.users import UserRegistered
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.notifications import api, handlers
from eventshop.services.notifications.adapters import Mailer, SmtpMailer
from eventshop.services.notifications.settings import NotificationsSettings


@dataclass
class Resources:
    mailer: Mailer


@asynccontextmanager
async def open_resources(
    settings: NotificationsSettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    """The SMTP mailer its settings describe; its session (if one is open) ends at stop."""
    mailer = SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.sender,
        timeout_s=settings.smtp_timeout_s,
    )
    try:
        yield Resources(mailer=mailer)
    finally:
        await mailer.close()


Context = ServiceContext[NotificationsSettings, Resources]

MAIL = Batch(handlers.send_notifications)

definition: ServiceDefinition[NotificationsSettings, Resources] = ServiceDefinition(
    name="notifications",
    port=PORTS["notifications"],
    # one batch for the three: a window's mails claimed in one statement, sent in one hand-over
    handlers={UserRegistered: MAIL, OrderConfirmed: MAIL, OrderCancelled: MAIL},
    publishes=[NotificationSent],
    migrations=["eventshop.services.notifications.migrations"],
    router=api.router,
    settings=NotificationsSettings,
    resources=open_resources,
    # a mail a moment later costs nobody anything: windows of many events, fewer transactions
    linger_s=0.05,
)
