"""The gateway's settings (env prefix EVENTSHOP_GATEWAY_); every default points at loopback."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.platform.secrets import secret, secrets_dir
from eventshop.services import BACKENDS, PORTS

#: an HS256 key shorter than its hash is weak (RFC 7518 3.2), and PyJWT warns on every token
MIN_JWT_SECRET = 32


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_GATEWAY_", extra="ignore")

    #: "production" refuses to start without a JWT secret of its own
    environment: Literal["development", "production"] = "development"

    #: unset in development: this installation's own key, made on first start
    #: (eventshop.platform.secrets, "gateway-jwt"); never a constant of the code
    jwt_secret: SecretStr | None = None
    #: token lifetime, and so the lifetime of its session in Redis
    jwt_ttl_s: int = Field(default=3_600, ge=1)

    #: requests per window of an authenticated user
    rate_per_user: int = Field(default=20, ge=1)
    #: requests per window from one client address
    rate_per_ip: int = Field(default=50, ge=1)
    #: the rate limits' window, in seconds
    rate_window_s: int = Field(default=1, ge=1, le=3_600)

    #: prepended to every Redis key the gateway writes (tests isolate themselves with it)
    redis_prefix: str = ""
    #: Redis connections at most
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    #: how long a request waits for a free Redis connection before it fails
    redis_pool_wait_s: float = Field(default=2.0, gt=0, le=30)

    #: a service not connected to within this is reported unavailable (503), never awaited
    upstream_connect_timeout_s: float = Field(default=1.0, gt=0)
    #: a service's whole answer must come within this (else 503)
    upstream_timeout_s: float = Field(default=10.0, gt=0)

    #: where a service listens, by name, when not at http://127.0.0.1:<its port>; from the
    #: environment as JSON: EVENTSHOP_GATEWAY_UPSTREAMS='{"orders": "http://orders:8004"}'
    upstreams: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _a_strong_secret(self) -> GatewaySettings:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret is not None else None
        if (secret is None and self.environment != "development") or (
            secret is not None and len(secret) < MIN_JWT_SECRET
        ):
            raise ValueError(
                f"EVENTSHOP_GATEWAY_JWT_SECRET must be set ({MIN_JWT_SECRET}+ characters)"
                " outside development"
            )
        return self

    def signing_key(self) -> str:
        """The JWT key: the configured one, else (development) this installation's own."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        try:
            return secret("gateway-jwt")
        except OSError as exc:  # say what to do, not only what the file system said
            raise RuntimeError(
                f"the gateway's development JWT key cannot be kept in {secrets_dir()}"
                f" ({exc.strerror or exc}): set EVENTSHOP_GATEWAY_JWT_SECRET, or"
                " EVENTSHOP_SECRETS_DIR to a directory this user may write"
            ) from exc

    @model_validator(mode="after")
    def _only_known_upstreams(self) -> GatewaySettings:
        unknown = sorted(set(self.upstreams) - set(BACKENDS))
        if unknown:
            raise ValueError(
                f"EVENTSHOP_GATEWAY_UPSTREAMS names no such service: {', '.join(unknown)}"
                f" (known: {', '.join(BACKENDS)})"
            )
        return self

    def upstream_urls(self) -> dict[str, str]:
        """Every service behind the gateway at its URL: the configured one, else loopback."""
        return {
            name: self.upstreams.get(name) or f"http://127.0.0.1:{PORTS[name]}" for name in BACKENDS
        }
