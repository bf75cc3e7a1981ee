"""A local SMTP server for development and tests: it accepts every message and keeps it as a file.

    python -m eventshop.tooling.smtp_sink  # 127.0.0.1:8025, messages in ./var/mail,
                                           # the mailbox view on http://127.0.0.1:8026/

Settings: EVENTSHOP_SMTP_SINK_PORT (default `eventshop.services.SMTP_SINK_PORT`),
EVENTSHOP_SMTP_SINK_HTTP_PORT (the mailbox view, eventshop.tooling.mailbox; 0: none) and
EVENTSHOP_SMTP_SINK_DIR (default ./var/mail). SIGTERM or SIGINT stops it.

Each message is stored as one `.eml` file named after its Message-ID. A second message with a
Message-ID already stored is answered 250 (accepted) but not stored again. That is what makes
"a notification is never sent twice" hold across a crash: the notifications service sends a
mail with a Message-ID derived from what it is about, *then* commits its record of it; if it
dies in between, the event is redelivered and the same mail is sent again, with the same
Message-ID, and lands here as the duplicate it is. (Real mail systems do the same thing one
step later: mail clients collapse messages that share a Message-ID.)

Tests and tools read what arrived with `stored_messages(directory)`, without any HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import hashlib
import os
import re
import signal
import uuid
import weakref
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.platform.observability.logging import configure_logging, get_logger
from eventshop.services import SMTP_SINK_HTTP_PORT, SMTP_SINK_PORT

log = get_logger(__name__)

#: headers the sink adds on top of each stored message: the SMTP envelope, which the message's
#: own headers need not repeat (Bcc recipients, bounces)
H_MAIL_FROM = "X-Sink-Mail-From"
H_RCPT_TO = "X-Sink-Rcpt-To"

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
#: where a message's header section ends (the first empty line)
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
#: a Message-ID header and its continuation lines, if folded
_MESSAGE_ID = re.compile(rb"^message-id:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


class SmtpSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_SMTP_SINK_", extra="ignore")

    #: the address it listens on (0.0.0.0 in a container)
    host: str = "127.0.0.1"
    #: the port it listens on for SMTP
    port: int = SMTP_SINK_PORT
    #: the port of the mailbox view (HTML and JSON over HTTP, on the same address); 0: no view
    http_port: int = Field(default=SMTP_SINK_HTTP_PORT, ge=0, le=65_535)
    #: where each mail is kept, one file per Message-ID
    dir: Path = Path("var/mail")
    #: sync each mail to disk before answering 250. Off: a mail stored is safe from the sink's
    #: own crash (the file is whole before its name exists), not from the machine's, which a
    #: sink for development can do without: the sync was about a fifth of its CPU per mail
    #: (docs/PERFORMANCE.md §5.5)
    fsync: bool = False


class MailDirectory:
    """The directory the sink keeps messages in: one file per Message-ID, written atomically."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        #: sync each file to disk before its name is linked (`SmtpSinkSettings.fsync`)
        self.fsync = fsync

    def file_for(self, message_id: str) -> Path:
        """The file of a Message-ID: readable prefix, hash for uniqueness and safety."""
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        readable = _UNSAFE.sub("_", message_id.strip("<> "))[:80]
        return self.path / f"{readable}-{digest}.eml"

    def put(self, message_id: str, raw: bytes) -> bool:
        """Store `raw` under `message_id`; False (and nothing written) if it is already there.

        The message is written (and, with `fsync`, synced) to a temporary file which is then
        hard-linked to its final name: a link fails if the name exists, so two sessions racing
        with the same Message-ID store it once, and a reader never sees a half-written file.
        """
        final = self.file_for(message_id)
        if final.exists():
            return False
        tmp = self.path / f".{uuid.uuid4().hex}.tmp"
        try:
            try:
                f = tmp.open("xb")
            except FileNotFoundError:  # the directory is gone (removed while running): again
                self.path.mkdir(parents=True, exist_ok=True)
                f = tmp.open("xb")
            with f:
                f.write(raw)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)


class StoringHandler:
    """aiosmtpd handler: every message accepted, stored once per Message-ID."""

    def __init__(self, directory: MailDirectory) -> None:
        self.directory = directory
        self.stored = 0
        self.duplicates = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        message_id = _message_id_of(content)
        header = (
            f"{H_MAIL_FROM}: {envelope.mail_from or ''}\r\n"
            f"{H_RCPT_TO}: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        # Written right here, blocking the loop meanwhile: a hop to a writer thread
        # and back cost ~45 us of CPU per mail, and the client waits for this reply anyway.
        if not self.directory.put(message_id, header + content):
            self.duplicates += 1
            log.info("smtp_sink.duplicate", message_id=message_id)
            return "250 OK: already stored, not stored again"
        self.stored += 1
        log.debug("smtp_sink.stored", message_id=message_id, rcpt_to=envelope.rcpt_tos)
        return "250 OK: stored"


def _message_id_of(content: bytes) -> str:
    """The message's Message-ID (its first, unfolded); a message without one is keyed by the
    hash of its bytes.

    A scan of the header section, not a parse of the message: as the email package's compat32
    parser reads it, for a fraction of the cost.
    """
    end = _END_OF_HEADERS.search(content)
    found = _MESSAGE_ID.search(content if end is None else content[: end.start()])
    message_id = b"".join(found.group(1).splitlines()).strip() if found else b""
    if message_id:
        return message_id.decode("ascii", "surrogateescape")
    return f"<sha256.{hashlib.sha256(content).hexdigest()}@smtp-sink>"


class SmtpSink:
    """The sink as an asyncio server in the running loop.

    async with SmtpSink(tmp_path, port=0) as sink:   # port 0: a free one, see sink.port
        ...
    """

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        port: int = SMTP_SINK_PORT,
        fsync: bool = False,
    ) -> None:
        self.directory = MailDirectory(directory, fsync=fsync)
        self.handler = StoringHandler(self.directory)
        self.host = host
        self.port = port
        #: connections accepted so far (tests see whether a client reuses its session)
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    async def start(self) -> None:
        self.directory.path.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host=self.host, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("smtp_sink.started", host=self.host, port=self.port, dir=str(self.directory.path))

    def _session(self) -> SMTP:
        self.connections += 1
        session = SMTP(
            self.handler,
            # a fixed hostname: aiosmtpd would otherwise look up the machine's FQDN (slow DNS)
            hostname="eventshop-smtp-sink",
            ident="eventshop smtp sink",
            enable_SMTPUTF8=True,
            data_size_limit=10 * 1024 * 1024,
        )
        self._sessions.add(session)
        return session

    async def stop(self) -> None:
        """Stop listening and close the sessions still open, as a stopped process would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.stop()


@dataclass(frozen=True)
class StoredMail:
    """One message as the sink stored it."""

    path: Path
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def to(self) -> str:
        return str(self.message["To"] or "")

    @property
    def envelope_to(self) -> list[str]:
        """The SMTP RCPT TO addresses (who it was delivered to)."""
        return [a.strip() for a in str(self.message[H_RCPT_TO] or "").split(",") if a.strip()]

    @property
    def body(self) -> str:
        """The plain-text body, with newlines as in Python (SMTP carries CRLF)."""
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")


def stored_messages(directory: Path) -> list[StoredMail]:
    """Every message stored in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    files = sorted(directory.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [
        StoredMail(
            path=p,
            message=email.message_from_bytes(
                p.read_bytes(), _class=EmailMessage, policy=email.policy.default
            ),
        )
        for p in files
    ]


async def serve(settings: SmtpSinkSettings) -> None:
    """Run the sink, and its mailbox view unless `http_port` is 0, until SIGTERM or SIGINT."""
    import uvicorn

    from eventshop.tooling.mailbox import mailbox_app

    stop = asyncio.Event()
    view: uvicorn.Server | None = None
    if settings.http_port:
        view = uvicorn.Server(
            uvicorn.Config(
                mailbox_app(settings.dir),
                host=settings.host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                loop="none",
            )
        )

    def stopping() -> None:
        stop.set()
        if view is not None:
            view.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    async with SmtpSink(settings.dir, host=settings.host, port=settings.port, fsync=settings.fsync):
        # uvicorn captures SIGTERM/SIGINT while it serves and raises them again after; the
        # loop's handlers above see them too
        await asyncio.gather(stop.wait(), *([view.serve()] if view is not None else []))
    log.info("smtp_sink.stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, help="overrides EVENTSHOP_SMTP_SINK_PORT")
    parser.add_argument("--http-port", type=int, help="overrides EVENTSHOP_SMTP_SINK_HTTP_PORT")
    parser.add_argument("--dir", type=Path, help="overrides EVENTSHOP_SMTP_SINK_DIR")
    args = parser.parse_args(argv)
    settings = SmtpSinkSettings()
    given = (("port", args.port), ("http_port", args.http_port), ("dir", args.dir))
    overrides = {k: v for k, v in given if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging("smtp_sink")
    uvloop.run(serve(settings))  # less CPU per SMTP command than asyncio's own loop


if __name__ == "__main__":
    main()
