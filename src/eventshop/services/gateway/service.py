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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from eventshop.platform.observability.logging import get_logger
from eventshop.platform.runtime import readiness
from eventshop.platform.service import ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import METRICS_PORTS, PORTS
from eventshop.services.gateway import api, edge
from eventshop.services.gateway.adapters.auth import Authenticator, RedisSessionStore, Tokens
from eventshop.services.gateway.adapters.ratelimit import RateLimiter
from eventshop.services.gateway.adapters.upstream import Upstreams
from eventshop.services.gateway.edge import Gateway
from eventshop.services.gateway.settings import GatewaySettings

log = get_logger(__name__)


@dataclass
class Resources:
    """The gateway's clients: Redis (sessions, rate limits) and the assembled routes' parts."""

    redis: Redis
    gateway: Gateway

    async def checks(self) -> dict[str, bool]:
        try:
            return {"cache": bool(await asyncio.wait_for(self.redis.ping(), 2))}
        except Exception:
            return {"cache": False}


Context = ServiceContext[GatewaySettings, Resources]


def assemble(settings: GatewaySettings, redis: Redis, upstreams: Upstreams) -> Gateway:
    """The gateway's parts from its settings and clients (tests pass their own clients)."""
    tokens = Tokens(settings.signing_key(), settings.jwt_ttl_s)
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


def connect_redis(url: str, *, max_connections: int = 64, pool_wait_s: float = 2.0) -> Redis:
    """A Redis client that fails fast: every request waits on it, so a Redis that is down or
    hung must cost a request well under a second, not redis-py's default ten retries.

    Its connections are bounded, and a request waits up to `pool_wait_s` for a free one rather
    than failing: redis-py's default pool raises "Too many connections" past 100 at once, and
    the gateway then answered 503 to logins and let requests pass the rate limit uncounted.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_wait_s,
        socket_timeout=1,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.05), retries=1),
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def open_resources(
    settings: GatewaySettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    if settings.jwt_secret is None:
        log.info("gateway.installation_jwt_secret", hint="set EVENTSHOP_GATEWAY_JWT_SECRET")
    redis = connect_redis(
        platform.redis_url,
        max_connections=settings.redis_max_connections,
        pool_wait_s=settings.redis_pool_wait_s,
    )
    upstreams = Upstreams.over_http(settings, platform.identity_key())
    gateway = assemble(settings, redis, upstreams)
    try:
        yield Resources(redis=redis, gateway=gateway)
    finally:
        await gateway.limiter.close()
        await upstreams.aclose()
        await redis.aclose()


async def ready(
    request: Request, scope: Literal["gateway", "platform"] = "gateway"
) -> JSONResponse:
    """The gateway's readiness, and the whole platform's: each service's own readiness."""
    ctx: Context = request.app.state.ctx
    checks, services = await asyncio.gather(
        readiness(ctx), ctx.resources.gateway.upstreams.readiness()
    )
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


def finish_app(app: FastAPI, ctx: Context) -> None:
    edge.install_gateway(app, ctx.resources.gateway)
    app.add_api_route("/health/ready", ready, methods=["GET"], include_in_schema=False)


definition: ServiceDefinition[GatewaySettings, Resources] = ServiceDefinition(
    name="gateway",
    port=PORTS["gateway"],
    metrics_port=METRICS_PORTS["gateway"],  # internal: never to the clients of the API
    strict_query=False,  # queries go on to the services, which refuse what they do not take
    settings=GatewaySettings,
    resources=open_resources,
    router=api.router,
    customize_app=finish_app,
)
