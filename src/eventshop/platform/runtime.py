"""One service process: its HTTP app, its consumer and its outbox relay; graceful stop.

    eventshop run inventory

builds the service from its composition root (`eventshop.services.<name>.service.definition`,
or any `module:attribute` naming a `ServiceDefinition`), applies its migrations, attaches it to
the bus and serves its HTTP app with `/health/live`, `/health/ready` and `/metrics`. SIGTERM (or
SIGINT) stops it gracefully: stop consuming, finish the batch in hand, flush the relay, then exit.

Observability is set up here for every service alike: JSON logs (observability.logging), the
tracer provider and its exporter (observability.tracing), a span, metrics and log context per
HTTP request (observability.http), spans of the database work (the pool's connection class)
and Prometheus' /metrics, whose outbox and queue gauges are read when scraped.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import socket
import uuid
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eventshop.contracts import registry
from eventshop.platform import collector
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.topology import queue_depth
from eventshop.platform.bus.types import Subscription
from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate
from eventshop.platform.http import install_conventions
from eventshop.platform.observability import metrics
from eventshop.platform.observability.http import install_observability
from eventshop.platform.observability.logging import configure_logging, get_logger
from eventshop.platform.observability.sql_spans import TracedConnection
from eventshop.platform.observability.tracing import setup_tracing, shutdown_tracing
from eventshop.platform.reach import once_reachable
from eventshop.platform.service import (
    AnyContext,
    ServiceDefinition,
    build_app,
    open_service,
    running_jobs,
)
from eventshop.platform.settings import PlatformSettings

log = get_logger(__name__)


def load_definition(name: str) -> ServiceDefinition[Any, Any]:
    target = name if ":" in name else f"eventshop.services.{name}.service:definition"
    module, _, attr = target.partition(":")
    definition = getattr(importlib.import_module(module), attr)
    if not isinstance(definition, ServiceDefinition):
        raise TypeError(f"{target} is not a ServiceDefinition")
    return definition


def health_routes(app: FastAPI, ctx: AnyContext) -> None:
    """/health/live and /health/ready, unless the service's app has its own (the gateway's
    ready reports the whole platform)."""
    taken = {getattr(r, "path", None) for r in app.router.routes}

    async def live() -> dict[str, str]:
        return {"status": "live", "service": ctx.name}

    async def ready() -> JSONResponse:
        checks = await readiness(ctx)
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "service": ctx.name, "checks": checks},
            status_code=200 if ok else 503,
        )

    if "/health/live" not in taken:
        app.get("/health/live", include_in_schema=False)(live)
    if "/health/ready" not in taken:
        app.get("/health/ready", include_in_schema=False)(ready)


def metrics_route(app: FastAPI, ctx: AnyContext) -> None:
    """GET /metrics in Prometheus' text format; outbox and queue gauges are read first."""
    queues = list(ctx.bus.consumer.queues.all_names) if ctx.bus.consumer else []

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        await metrics.refresh(ctx.name, pool=ctx.pool, connection=ctx.bus.connection, queues=queues)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


async def readiness(ctx: AnyContext) -> dict[str, bool]:
    checks: dict[str, bool] = {}
    try:
        async with ctx.pool.acquire(timeout=2) as conn:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
        checks["database"] = True
    except Exception:
        checks["database"] = False
    conn_ = ctx.bus.connection
    checks["broker"] = bool(conn_ is not None and not conn_.is_closed and conn_.connected.is_set())
    if ctx.bus.consumer is not None:
        checks["consumers"] = ctx.bus.consumer.attached and await _consumers_on_queue(ctx)
    own_checks = getattr(ctx.resources, "checks", None)
    if own_checks is not None:  # the service's resources (a cache, say): `service.Checked`
        try:
            checks.update(await asyncio.wait_for(own_checks(), 2))
        except Exception:
            checks["resources"] = False
    return checks


async def _consumers_on_queue(ctx: AnyContext) -> bool:
    """Ask the broker: does the service's queue have a consumer? (after a broker restart a
    client may believe it consumes while the broker has none)."""
    connection, consumer = ctx.bus.connection, ctx.bus.consumer
    if connection is None or consumer is None or not connection.connected.is_set():
        return False
    try:
        channel = await asyncio.wait_for(connection.channel(), 2)
        try:
            _, consumers = await asyncio.wait_for(queue_depth(channel, consumer.queues.main), 2)
        finally:
            await channel.close()
    except Exception:
        return False
    return consumers > 0


async def serve(
    definition: ServiceDefinition[Any, Any], platform: PlatformSettings, *, port: int | None = None
) -> None:
    schema = definition.schema or definition.name
    pool = await once_reachable(
        "database",
        lambda: create_pool(
            platform.database_url,
            schema,
            max_size=platform.db_pool_max,
            connection_class=TracedConnection,
        ),
        within_s=platform.startup_wait_s,
    )
    applied = await migrate(pool, [PLATFORM_MIGRATIONS, *definition.migrations])
    if applied:
        log.info("migrations.applied", names=applied)
    node = BusNode(
        service=definition.name, schema=schema, pool=pool, registry=registry, settings=platform
    )
    try:
        async with open_service(definition, platform=platform, pool=pool, bus=node) as ctx:
            if definition.handlers:
                node.subscription = Subscription(
                    definition.name,
                    definition.bind(ctx),
                    tuple(platform.retry_delays_ms),
                    linger_s=definition.linger_s,
                    lock_first=definition.lock_first,
                    inbox=definition.inbox,
                )
            await node.start(wait_for_broker_s=platform.startup_wait_s)
            collector.tune(platform)  # started: what it built so far lives as long as it
            try:
                async with running_jobs(definition, ctx):
                    await _serve_http(
                        definition, ctx, port or definition.port, definition.metrics_port
                    )
            finally:
                log.info("service.stopping")
                await node.stop()
    finally:
        await pool.close()
        log.info("service.stopped")


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, but a request too malformed to reach the app (a broken header,
    a bad request line) is refused in the platform's one error shape, not in plain text."""

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps(
            {
                "error": {
                    "code": "bad_request",
                    "message": "malformed HTTP request",
                    "details": [],
                },
                "correlation_id": str(uuid.uuid4()),
            }
        )
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()


def http_server_config(app: Any, port: int, platform: PlatformSettings) -> uvicorn.Config:
    """How a service's HTTP server runs. Forwarded headers (X-Forwarded-For) are believed only
    from the proxies `trusted_proxies` names, none by default: otherwise any client could pick
    the address the gateway's per-IP rate limit counts it under."""
    trusted = platform.trusted_proxies
    return uvicorn.Config(
        app,
        host=platform.http_host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="none",
        http=JsonErrorsProtocol,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=",".join(trusted) if trusted else "",
    )


def http_servers(
    definition: ServiceDefinition[Any, Any],
    ctx: AnyContext,
    port: int,
    metrics_port: int | None = None,
) -> list[uvicorn.Server]:
    """The service's app on `port`, with /metrics on it, or on `metrics_port` alone (the public
    gateway's metrics on an internal port, never to the clients of the API: its public app has
    no /metrics route at all, so it answers 404 there like any path it does not serve)."""
    app = build_app(definition, ctx)
    health_routes(app, ctx)
    install_observability(app, definition.name)
    servers = [uvicorn.Server(http_server_config(app, port, ctx.platform))]
    if metrics_port is None or metrics_port == port:
        metrics_route(app, ctx)
    else:
        internal = FastAPI(title=f"{definition.name} metrics", openapi_url=None)
        metrics_route(internal, ctx)
        install_conventions(internal)  # its 404s too in the one error shape
        servers.append(uvicorn.Server(http_server_config(internal, metrics_port, ctx.platform)))
    return servers


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The server's socket, bound here rather than by uvicorn so that replicas of a service can
    share the port: with SO_REUSEPORT the kernel hands each new connection to one of the
    processes listening on it (ADR 0012)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve_http(
    definition: ServiceDefinition[Any, Any],
    ctx: AnyContext,
    port: int,
    metrics_port: int | None = None,
) -> None:
    """Serve `http_servers` until SIGTERM or SIGINT."""
    servers = http_servers(definition, ctx, port, metrics_port)
    # uvicorn captures SIGTERM/SIGINT during serve() and re-raises them afterwards; the loop's
    # handlers below see them too and ask the servers to exit, then the caller stops the bus
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    reuse = ctx.platform.reuse_port
    sockets = [
        listening_socket(server.config.host, server.config.port, reuse_port=reuse)
        for server in servers
    ]
    log.info("service.started", port=port, metrics_port=metrics_port or port, reuse_port=reuse)
    try:
        await asyncio.gather(
            *(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True))
        )
    finally:
        for sock in sockets:
            sock.close()


def run(name: str, *, port: int | None = None) -> None:
    definition = load_definition(name)
    configure_logging(definition.name)
    settings = PlatformSettings()
    setup_tracing(definition.name)
    import uvloop

    try:
        uvloop.run(serve(definition, settings, port=port))
    finally:
        shutdown_tracing()
