"""The SMTP sink's mailbox, seen in a browser: what the platform sent, newest first.

    http://127.0.0.1:8026/                   every message (?to=ann@example.com: one recipient's)
    http://127.0.0.1:8026/messages/<name>    one message: its headers and its text
    http://127.0.0.1:8026/api/messages       the same as JSON (?to=, ?limit=)
    http://127.0.0.1:8026/api/messages/<name>

The sink serves it beside SMTP (`EVENTSHOP_SMTP_SINK_HTTP_PORT`, default
`eventshop.services.SMTP_SINK_HTTP_PORT`), on the sink's address: 127.0.0.1 under
`eventshop up`, and in the compose platform published on 127.0.0.1 only. It reads the files the
sink stores and nothing else, and it is a developer's tool: the mails of a real installation
hold password-reset links, so it is never exposed beyond the machine (docs/SECURITY.md).
Errors answer in the platform's one JSON shape.
"""

from __future__ import annotations

import email.policy
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from eventshop.platform.http import install_conventions, known_query_only, not_found
from eventshop.tooling.smtp_sink import H_RCPT_TO

#: a stored message's name: the file name the sink gives it, without `.eml` (no path in it)
_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,120}")
_PARSER = BytesParser(_class=EmailMessage, policy=email.policy.default)

_templates = Environment(
    loader=PackageLoader("eventshop.tooling", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@dataclass(frozen=True)
class Mail:
    """One stored message, as the view shows it."""

    name: str
    message_id: str
    sender: str
    to: str
    envelope_to: tuple[str, ...]
    subject: str
    stored_at: datetime
    size: int
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")

    def addressed_to(self, address: str) -> bool:
        wanted = address.strip().lower()
        named = {parseaddr(a)[1].lower() for a in self.to.split(",")} | {
            a.lower() for a in self.envelope_to
        }
        return wanted in named

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "message_id": self.message_id,
            "from": self.sender,
            "to": self.to,
            "envelope_to": list(self.envelope_to),
            "subject": self.subject,
            "stored_at": self.stored_at.isoformat(),
            "size": self.size,
        }


def _read(path: Path) -> Mail | None:
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:  # removed meanwhile
        return None
    message = _PARSER.parsebytes(raw)
    return Mail(
        name=path.name.removesuffix(".eml"),
        message_id=str(message["Message-ID"] or ""),
        sender=str(message["From"] or ""),
        to=str(message["To"] or ""),
        envelope_to=tuple(a.strip() for a in str(message[H_RCPT_TO] or "").split(",") if a.strip()),
        subject=str(message["Subject"] or ""),
        stored_at=datetime.fromtimestamp(mtime, UTC),
        size=len(raw),
        message=message,
    )


class Mailbox:
    """The sink's directory, read newest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names_newest_first(self) -> list[str]:
        try:
            entries = [e for e in os.scandir(self.directory) if e.name.endswith(".eml")]
        except FileNotFoundError:
            return []
        stamped = []
        for entry in entries:
            try:
                stamped.append((entry.stat().st_mtime_ns, entry.name))
            except FileNotFoundError:
                continue
        return [name for _, name in sorted(stamped, reverse=True)]

    def latest(self, *, to: str | None = None, limit: int = 100) -> tuple[list[Mail], int]:
        """The newest `limit` messages (to `to`, if given) and how many there are in all."""
        names = self.names_newest_first()
        if to is None:
            total = len(names)
            mails = [m for m in (_read(self.directory / n) for n in names[:limit]) if m]
            return mails, total
        matching = [m for m in (_read(self.directory / n) for n in names) if m]
        matching = [m for m in matching if m.addressed_to(to)]
        return matching[:limit], len(matching)

    def one(self, name: str) -> Mail:
        if not _NAME.fullmatch(name):
            raise not_found("message")
        mail = _read(self.directory / f"{name}.eml")
        if mail is None:
            raise not_found("message")
        return mail


To = Annotated[str | None, Query(max_length=320, description="only mail to this address")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")]


def mailbox_app(directory: Path) -> FastAPI:
    """The view of the mails stored in `directory`."""
    box = Mailbox(directory)
    app = FastAPI(
        title="eventshop mailbox",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_conventions(app)

    def page(template: str, **values: Any) -> HTMLResponse:
        return HTMLResponse(_templates.get_template(template).render(**values))

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(known_query_only)])
    async def index(to: To = None, limit: Limit = 100) -> HTMLResponse:
        mails, total = box.latest(to=to, limit=limit)
        return page("mailbox_list.html", mails=mails, total=total, to=to or "")

    @app.get("/messages/{name}", response_class=HTMLResponse)
    async def show(name: str) -> HTMLResponse:
        return page("mailbox_message.html", mail=box.one(name))

    @app.get("/api/messages", dependencies=[Depends(known_query_only)])
    async def api_list(to: To = None, limit: Limit = 100) -> dict[str, Any]:
        mails, total = box.latest(to=to, limit=limit)
        return {"total": total, "messages": [m.summary() for m in mails]}

    @app.get("/api/messages/{name}")
    async def api_show(name: str) -> dict[str, Any]:
        mail = box.one(name)
        return {**mail.summary(), "body": mail.body}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return app
