"""Platform settings: one pydantic-settings class, env prefix EVENTSHOP_, loopback defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/eventshop"
    database_url: str = "postgresql://root@127.0.0.1:5432/eventshop"
    redis_url: str = "redis://127.0.0.1:6379/0"
    exchange: str = "eventshop.events"
    #: unacked messages a consumer may hold; also the largest batch handled in one transaction
    prefetch: int = Field(default=256, ge=1, le=10_000)
    #: the retry ladder: delays in milliseconds, one delay queue each
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000])
    #: a handler taking longer than this counts as failed (the bulkhead's bound)
    handler_timeout_s: float = 30.0
    #: how long a publish may wait for its confirm before it counts as failed
    confirm_timeout_s: float = 10.0
    #: the relay's polling fallback when no NOTIFY arrives
    relay_poll_s: float = 1.0
    relay_batch: int = Field(default=1_000, ge=1)
