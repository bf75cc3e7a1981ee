"""Sending a notification by SMTP.

smtplib (the standard library) in a worker thread: no async SMTP client is a dependency, and a
notification is one short SMTP session, so a thread per send costs nothing that matters.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from eventshop.services.notifications.domain import Email
from eventshop.services.notifications.settings import NotificationsSettings


def to_message(mail: Email, *, sender: str) -> EmailMessage:
    """The MIME message of a notification; its Message-ID is the notification's own."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.recipient
    msg["Subject"] = mail.subject
    msg["Message-ID"] = mail.message_id
    msg["Date"] = formatdate(usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not answer it
    msg["X-Eventshop-Notification"] = f"{mail.kind} {mail.ref}"
    msg.set_content(mail.body)
    return msg


class SmtpMailer:
    """Sends notifications to one SMTP server; any failure raises (the bus retries)."""

    def __init__(self, *, host: str, port: int, sender: str, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: NotificationsSettings) -> SmtpMailer:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.sender,
            timeout_s=settings.smtp_timeout_s,
        )

    async def send(self, mail: Email) -> None:
        await asyncio.to_thread(self._send, to_message(mail, sender=self.sender))

    def _send(self, msg: EmailMessage) -> None:
        # a fixed local_hostname: smtplib would otherwise look up this machine's FQDN (slow DNS)
        with smtplib.SMTP(
            self.host, self.port, timeout=self.timeout_s, local_hostname="eventshop"
        ) as smtp:
            refused = smtp.send_message(msg)
        if refused:  # some (not all) recipients refused: a notification has one, so say so
            raise smtplib.SMTPRecipientsRefused(refused)
