"""notifications' composition root: what it consumes, what it publishes, how it is built."""

from __future__ import annotations

from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.notifications import api
from eventshop.services.notifications.handlers import Mailer, Notifier
from eventshop.services.notifications.mailer import SmtpMailer
from eventshop.services.notifications.settings import NotificationsSettings


def build(mailer: Mailer | None = None) -> ServiceDefinition:
    """The service, sending through `mailer` (by default SMTP, as its settings say).

    Building opens no connection: the mailer connects per send.
    """
    notifier = Notifier(mailer or SmtpMailer.from_settings(NotificationsSettings()))
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
    )


definition = build()
