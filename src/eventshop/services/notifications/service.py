"""notifications' composition root: what it consumes, what it publishes, how it is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from eventshop.platform.runtime import ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.notifications import api
from eventshop.services.notifications.handlers import Mailer, Notifier
from eventshop.services.notifications.mailer import SmtpMailer
from eventshop.services.notifications.settings import NotificationsSettings


def build(mailer: Mailer | None = None) -> ServiceDefinition:
    """The service, sending through `mailer` (by default SMTP, as its settings say).

    Building opens no connection: the mailer opens its session at the first send, and the
    service closes it when it stops.
    """
    mailer = mailer or SmtpMailer.from_settings(NotificationsSettings())
    notifier = Notifier(mailer)

    async def start(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
        return mailer.close

    return ServiceDefinition(
        name="notifications",
        port=PORTS["notifications"],
        handlers={
            "user.registered": notifier.welcome,
            "order.confirmed": notifier.order_confirmed,
            "order.cancelled": notifier.order_cancelled,
        },
        publishes=["notification.sent"],
        migrations=["eventshop.services.notifications.migrations"],
        http=api.build_app,
        on_start=start,
        # a mail a moment later costs nobody anything: windows of many events, fewer transactions
        linger_s=0.05,
    )


definition = build()
