"""The gateway's composition root: `eventshop run gateway` builds it from `definition`.

It consumes and publishes nothing and owns no tables (the runtime still gives it a pool and a
bus connection, which readiness reports on); at start it opens the Redis client (sessions, rate
limits, and the readiness "cache" check) and sets up the services' HTTP sessions (each opened on
the service's first request, inside the running loop; all closed at shutdown).

Its /health/ready reports the whole platform: its own checks (broker, database, cache) and
each service's own readiness. The status code is the gateway's own (200 when it can serve:
a probe must not take the public API out of rotation because loyalty is down), unless
`?scope=platform` asks whether every service is ready too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from eventshop.gateway.api import Gateway, create_app
from eventshop.gateway.auth import Authenticator, RedisSessionStore, Tokens
from eventshop.gateway.ratelimit import RateLimiter
from eventshop.gateway.settings import DEV_JWT_SECRET, GatewaySettings
from eventshop.gateway.upstream import Upstreams
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.runtime import ServiceContext, ServiceDefinition, readiness
from eventshop.services import PORTS

log = get_logger(__name__)


def assemble(settings: GatewaySettings, redis: Redis, upstreams: Upstreams) -> Gateway:
    """The gateway's parts from its settings and clients (tests pass their own clients)."""
    tokens = Tokens(settings.jwt_secret.get_secret_value(), settings.jwt_ttl_s)
    sessions = RedisSessionStore(redis, prefix=settings.redis_prefix)
    return Gateway(
        auth=Authenticator(tokens, sessions),
        limiter=RateLimiter(
            redis,
            per_ip=settings.rate_per_ip,
            per_user=settings.rate_per_user,
            window_s=settings.rate_window_s,
            prefix=settings.redis_prefix,
        ),
        upstreams=upstreams,
        session_key=sessions.key,  # the same Redis: a request's session is read with its counters
    )


def connect_redis(url: str) -> Redis:
    """A Redis client that fails fast: every request waits on it, so a Redis that is down or
    hung must cost a request well under a second, not redis-py's default ten retries."""
    return Redis.from_url(
        url,
        socket_timeout=1,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.05), retries=1),
    )


async def start(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    settings = GatewaySettings()
    if settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
        log.warning("gateway.dev_jwt_secret", hint="set EVENTSHOP_GATEWAY_JWT_SECRET")
    redis = connect_redis(ctx.settings.redis_url)
    upstreams = Upstreams.over_http(settings)
    ctx.extras["redis"] = redis  # the runtime's readiness checks it as "cache"
    ctx.extras["gateway"] = assemble(settings, redis, upstreams)

    async def close() -> None:
        await upstreams.aclose()
        await redis.aclose()

    return close


def build_app(ctx: ServiceContext) -> FastAPI:
    gateway: Gateway = ctx.extras["gateway"]
    app = create_app(gateway)

    @app.get("/health/ready", include_in_schema=False)
    async def ready(scope: Literal["gateway", "platform"] = "gateway") -> JSONResponse:
        checks, services = await asyncio.gather(readiness(ctx), gateway.upstreams.readiness())
        own = all(checks.values())
        everything = own and all(s["ready"] for s in services.values())
        ok = everything if scope == "platform" else own
        return JSONResponse(
            {
                "status": "ready" if ok else "not ready",
                "service": ctx.name,
                "checks": checks,
                "platform": {
                    "status": "ready" if everything else "degraded",
                    "services": {"gateway": {"ready": own, "checks": checks}, **services},
                },
            },
            status_code=200 if ok else 503,
        )

    return app


definition = ServiceDefinition(
    name="gateway",
    port=PORTS["gateway"],
    handlers={},
    publishes=[],
    migrations=[],
    http=build_app,
    on_start=start,
)
