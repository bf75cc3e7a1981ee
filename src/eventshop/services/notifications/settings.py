"""notifications' settings: where mail goes (the local SMTP sink by default)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.services import SMTP_SINK_PORT


class NotificationsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_NOTIFICATIONS_", extra="ignore")

    #: the SMTP server mails go through (the SMTP sink, in development)
    smtp_host: str = "127.0.0.1"
    #: its port
    smtp_port: int = Field(default=SMTP_SINK_PORT, ge=1, le=65_535)
    #: bounded well below the handler timeout, so a hung server fails the send, not the batch
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    #: the From of every mail
    sender: str = "eventshop <no-reply@eventshop.local>"
