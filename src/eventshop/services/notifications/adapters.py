"""notifications' adapter: sending notifications by SMTP, over one session kept open.

A notification is rendered straight to the bytes SMTP carries (`render`): the `email` package's
header registry parsed every header of every mail and cost a fifth of the service's CPU, and
a notification's few headers need none of it. Non-ASCII text is encoded as RFC 2047 (headers)
and quoted-printable (body), so the message is 7-bit clean whatever the server supports.

`SmtpMailer` keeps one SMTP session and sends each mail as one transaction on it (MAIL, RCPT,
DATA; no RSET: a completed DATA ends the transaction, and any failure drops the session).
smtplib runs on a worker thread of the mailer's own, one, which serialises the sends: measured
against the SMTP sink, that cost less CPU per mail than aiosmtplib on the event loop, and it
needs no dependency.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import smtplib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from typing import Protocol

from eventshop.services.notifications.domain import Email

#: RFC 5322 recommends lines of at most 78 characters (998 is the hard limit)
_MAX_LINE = 78
#: longest body line sent as it is (7bit); a longer one makes the body quoted-printable
_MAX_7BIT_LINE = 998


def render(mail: Email, *, sender: str, date: str | None = None) -> bytes:
    """The notification as a complete RFC 5322 message, CRLF line ends; its Message-ID is the
    notification's own. `date` (an RFC 5322 date) defaults to now.

    ValueError if a header value holds a line break (it would forge headers) or the recipient
    is not an ASCII address (users only register those).
    """
    if not mail.recipient.isascii():
        raise ValueError(f"recipient {mail.recipient!r} is not an ASCII address")
    headers = (
        ("From", _address_header(sender)),
        ("To", mail.recipient),
        ("Subject", mail.subject),
        ("Message-ID", mail.message_id),
        ("Date", date or formatdate(usegmt=True)),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: auto-responders must not answer it
        ("X-Eventshop-Notification", f"{mail.kind} {mail.ref}"),
    )
    lines = [f"{name}: {_header_value(name, value)}" for name, value in headers]
    body = b"\r\n".join(mail.body.encode("utf-8").splitlines()) + b"\r\n"
    if body.isascii() and max(map(len, body.split(b"\r\n"))) <= _MAX_7BIT_LINE:
        cte = "7bit"
    else:
        cte = "quoted-printable"
        body = binascii.b2a_qp(body, istext=True)  # keeps the CRLF line ends as they are
    lines += (
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {cte}",
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _header_value(name: str, value: str) -> str:
    """`value` as header `name` carries it: as it is when short ASCII, else folded (and RFC 2047
    encoded when not ASCII)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header may not hold a line break: {value!r}")
    if value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        return value
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name).encode(linesep="\r\n")


@functools.lru_cache(maxsize=8)
def _address_header(address: str) -> str:
    """A From/To value ("Name <addr>" or "addr"), its display name RFC 2047 encoded if need be."""
    name, addr = parseaddr(address)
    if not addr.isascii():
        raise ValueError(f"{address!r} is not an ASCII address")
    return formataddr((name, addr), charset="utf-8")


class Mailer(Protocol):
    """Delivers an email or raises; `SmtpMailer` is the real one."""

    async def send(self, mail: Email) -> None: ...

    async def send_all(self, mails: Sequence[Email]) -> None:
        """Send each in order; the first failure raises (the ones before it went out)."""
        ...

    async def close(self) -> None:
        """Let go of any connection kept between sends (the service is stopping)."""


class SmtpMailer:
    """Sends notifications to one SMTP server over one session; any failure raises (the bus
    retries).

    The session is opened by the first send and kept. A session the server has closed in the
    meantime (its idle timeout, a restart) is only found out by using it: if MAIL, the first
    command of a transaction, finds it gone (disconnected, or 421 "closing"), nothing of the
    mail went out yet, so the mail is sent once more on a new session; a failure there raises.
    A session idle for longer than `max_idle_s` is not trusted at all (a peer that vanished
    without closing would make MAIL wait for the whole timeout) and is replaced before use.
    Any other failure drops the session and raises.

    Never twice: a failure after DATA began may hide a mail that arrived; the bus then retries
    the event, the same mail goes out again under the same Message-ID, and the receiver drops
    it as a duplicate (see eventshop.tooling.smtp_sink): as it was with a session per mail.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        timeout_s: float = 10.0,
        max_idle_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout_s = timeout_s
        self.max_idle_s = max_idle_s
        self._envelope_from = parseaddr(sender)[1]
        self._smtp: smtplib.SMTP | None = None  # touched only by the worker thread
        self._idle_since = 0.0
        self._sessions = 0
        # one thread: the sends queue up behind one another, never interleave on the session
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp-mailer")

    @property
    def sessions_opened(self) -> int:
        """How many SMTP sessions this mailer has opened so far."""
        return self._sessions

    async def send(self, mail: Email) -> None:
        await self.send_all([mail])

    async def send_all(self, mails: Sequence[Email]) -> None:
        """The mails one after the other on the session, in one hand-over to the worker thread
        (a window's mails: one hop there and back, not one each)."""
        rendered = [(mail.recipient, render(mail, sender=self.sender)) for mail in mails]
        await asyncio.get_running_loop().run_in_executor(self._worker, self._deliver_all, rendered)

    async def close(self) -> None:
        """End the session (QUIT) once the sends queued before are done; a later send opens
        another. The worker thread, idle, ends with the mailer."""
        await asyncio.get_running_loop().run_in_executor(self._worker, self._quit)

    # -- on the worker thread --------------------------------------------------------------------
    def _deliver_all(self, rendered: Sequence[tuple[str, bytes]]) -> None:
        for recipient, raw in rendered:
            self._deliver(recipient, raw)

    def _deliver(self, recipient: str, raw: bytes) -> None:
        try:
            smtp = self._smtp
            if smtp is not None and time.monotonic() - self._idle_since > self.max_idle_s:
                self._drop()
                smtp = None
            if smtp is None or not self._mail_from(smtp, reused=True):
                self._drop()
                smtp = self._connect()
                self._mail_from(smtp, reused=False)
            self._rcpt_and_data(smtp, recipient, raw)
        except BaseException:
            self._drop()  # whatever state it is in, the next mail starts on a new session
            raise
        self._idle_since = time.monotonic()

    def _connect(self) -> smtplib.SMTP:
        # a fixed local_hostname: smtplib would otherwise look up this machine's FQDN (slow DNS)
        self._smtp = smtplib.SMTP(
            self.host, self.port, timeout=self.timeout_s, local_hostname="eventshop"
        )
        self._sessions += 1
        self._smtp.ehlo_or_helo_if_needed()
        return self._smtp

    def _mail_from(self, smtp: smtplib.SMTP, *, reused: bool) -> bool:
        """MAIL FROM; False if a `reused` session turns out closed (nothing of the mail went)."""
        try:
            code, resp = smtp.mail(self._envelope_from)
        except smtplib.SMTPServerDisconnected:
            if reused:
                return False
            raise
        if code == 421 and reused:  # the server is closing the session (idle too long)
            return False
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, resp, self._envelope_from)
        return True

    def _rcpt_and_data(self, smtp: smtplib.SMTP, recipient: str, raw: bytes) -> None:
        code, resp = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, resp)})
        code, resp = smtp.data(raw)
        if code != 250:
            raise smtplib.SMTPDataError(code, resp)

    def _drop(self) -> None:
        """Forget the session, closing its socket (no QUIT: it may be broken)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _quit(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()  # it was closed already: nothing more to say
