"""The gateway's settings (env prefix EVENTSHOP_GATEWAY_); every default points at loopback."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.services import PORTS

#: the services the gateway forwards to
UPSTREAMS = (
    "users", "catalog", "inventory", "orders", "payments", "notifications", "loyalty", "archive",
)  # fmt: skip

#: known to everyone, so refused outside development; 32+ bytes all the same (RFC 7518 3.2 asks
#: that of an HS256 key, and PyJWT warns on every token otherwise)
DEV_JWT_SECRET = "dev-only-secret-never-use-it-in-production"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_GATEWAY_", extra="ignore")

    #: anything but "development" refuses to start with the development JWT secret
    environment: Literal["development", "production"] = "development"

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    #: token lifetime, and so the lifetime of its session in Redis
    jwt_ttl_s: int = Field(default=3_600, ge=1)

    #: requests per window, per authenticated user and per client IP
    rate_per_user: int = Field(default=20, ge=1)
    rate_per_ip: int = Field(default=50, ge=1)
    rate_window_s: int = Field(default=1, ge=1, le=3_600)

    #: prepended to every Redis key the gateway writes (tests isolate themselves with it)
    redis_prefix: str = ""

    #: a service that does not answer within these is reported unavailable (503), never awaited
    upstream_connect_timeout_s: float = Field(default=1.0, gt=0)
    upstream_timeout_s: float = Field(default=10.0, gt=0)

    # where each service listens; unset means http://127.0.0.1:<its port>
    users_url: str | None = None
    catalog_url: str | None = None
    inventory_url: str | None = None
    orders_url: str | None = None
    payments_url: str | None = None
    notifications_url: str | None = None
    loyalty_url: str | None = None
    archive_url: str | None = None

    @model_validator(mode="after")
    def _no_dev_secret_outside_development(self) -> GatewaySettings:
        secret = self.jwt_secret.get_secret_value()
        if self.environment != "development" and (secret == DEV_JWT_SECRET or len(secret) < 32):
            raise ValueError(
                "EVENTSHOP_GATEWAY_JWT_SECRET must be set (32+ characters) outside development"
            )
        return self

    def upstream_url(self, service: str) -> str:
        url: str | None = getattr(self, f"{service}_url")
        return url or f"http://127.0.0.1:{PORTS[service]}"
