"""The console's settings (EVENTSHOP_CONSOLE_*). The broker and the database are the
operator's, as for the CLI: EVENTSHOP_AMQP_URL and EVENTSHOP_DATABASE_URL."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.services import CONSOLE_PORT, PORTS


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_CONSOLE_", extra="ignore")

    #: the address it listens on: loopback, the operators' machine (0.0.0.0 in a container)
    host: str = "127.0.0.1"
    #: the port it listens on
    port: int = Field(default=CONSOLE_PORT, ge=1, le=65_535)
    #: the gateway whose login it uses (its /api/v1)
    gateway_url: str = f"http://127.0.0.1:{PORTS['gateway']}/api/v1"
    #: send the session cookie over HTTPS only (set it when a TLS proxy is in front)
    secure_cookie: bool = False
    #: how long a session checked with the gateway is believed before asking again (seconds)
    session_check_s: float = Field(default=5.0, ge=0, le=60)
    #: how often the live pages look for a change to push (seconds)
    live_interval_s: float = Field(default=1.0, gt=0, le=30)
