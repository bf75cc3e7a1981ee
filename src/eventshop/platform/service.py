"""What a service is made of, and how its parts are put together at start.

Every service's `service.py` declares one `ServiceDefinition`: its settings class, how its
resources are opened and closed, its handler table keyed by contract class, what it publishes,
its HTTP router and its background jobs. Nothing is built at import: `open_service` reads the
settings once, opens the resources and yields the `ServiceContext` that every handler, route
and job receives (the runtime serves it; tests open it the same way, with their own pool,
settings or resources).

    class Resources: ...                          # typed: clients the service talks through

    definition = ServiceDefinition(
        name="loyalty",
        handlers={OrderConfirmed: handlers.award_points},
        publishes=[PointsAwarded],
        migrations=["eventshop.services.loyalty.migrations"],
        router=api.router,
    )

Handlers are plain functions `(ctx, uow, envelope, event) -> None`; the runtime binds the
context, so the bus sees the `(uow, envelope, event)` handlers it always has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request

from eventshop.contracts import Envelope, EventPayload
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.outbox import UnitOfWork
from eventshop.platform.bus.types import BatchHandler, Delivery, Handler, LockFirst
from eventshop.platform.http import correlation_id_of, install_conventions, known_query_only
from eventshop.platform.leadership import JobLeader
from eventshop.platform.observability.http import new_app
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.retention import keep_tables_bounded
from eventshop.platform.settings import PlatformSettings

log = get_logger(__name__)

SettingsT = TypeVar("SettingsT")
ResourcesT = TypeVar("ResourcesT")

#: the key of a handler that takes every event type (the archive's)
EVERY_EVENT: Literal["#"] = "#"


class Checked(Protocol):
    """Resources that can say whether they work; readiness reports each check by name."""

    async def checks(self) -> dict[str, bool]: ...


@dataclass
class ServiceContext(Generic[SettingsT, ResourcesT]):
    """What a service's handlers, routes and jobs may use; built at start, closed at stop."""

    name: str
    platform: PlatformSettings
    settings: SettingsT
    resources: ResourcesT
    pool: asyncpg.Pool
    bus: BusNode

    def unit_of_work(
        self, correlation_id: str | None = None
    ) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction whose emitted events go to this service's outbox (a command's)."""
        return UnitOfWork.begin(self.pool, service=self.name, correlation_id=correlation_id)


AnyContext = ServiceContext[Any, Any]
EventHandler = Callable[[Any, UnitOfWork, Envelope, Any], Awaitable[None]]


@dataclass(frozen=True)
class Batch:
    """A handler that takes a window's consecutive events at once `(ctx, deliveries)`, e.g. one
    multi-row INSERT for all of them (the bus's `BatchHandler`, with the context bound)."""

    handle: Callable[[Any, Sequence[Delivery]], Awaitable[None]]


Job = Callable[[Any], Coroutine[Any, Any, None]]

#: the jobs every service runs besides its own (`running_jobs`)
PLATFORM_JOBS: tuple[Job, ...] = (keep_tables_bounded,)


def no_settings() -> None:
    return None


@asynccontextmanager
async def no_resources(settings: Any, platform: PlatformSettings) -> AsyncIterator[None]:
    yield None


@dataclass(frozen=True)
class ServiceDefinition(Generic[SettingsT, ResourcesT]):
    name: str
    #: where its HTTP app listens (on loopback): its entry of `eventshop.services.PORTS`
    port: int
    #: contract class (or EVERY_EVENT) -> handler; the queue is bound to exactly these types
    handlers: Mapping[type[EventPayload] | str, EventHandler | Batch] = field(default_factory=dict)
    #: the contracts this service publishes (its RabbitMQ user may publish only these)
    publishes: Sequence[type[EventPayload]] = ()
    #: packages holding the service's SQL migrations
    migrations: Sequence[str] = ()
    #: its HTTP routes; every route only translates HTTP into a call of a handler
    router: APIRouter | None = None
    #: reads the service's settings (from the environment), once, at start
    settings: Callable[[], SettingsT] = no_settings  # type: ignore[assignment]
    #: opens the service's resources at start and closes them at stop
    resources: Callable[[SettingsT, PlatformSettings], AbstractAsyncContextManager[ResourcesT]] = (
        no_resources  # type: ignore[assignment]
    )
    #: background loops `(ctx) -> None`, started with the service and cancelled at its stop;
    #: one process of the service runs each at a time (platform/leadership.py, ADR 0012)
    jobs: Sequence[Job] = ()
    #: finishes the HTTP app before the shared conventions wrap it (the gateway's middlewares
    #: and its own readiness)
    customize_app: Callable[[FastAPI, Any], None] | None = None
    #: the schema the service owns (defaults to its name)
    schema: str | None = None

    #: how long its consumer lets a window fill before handling it (`Subscription.linger_s`)
    linger_s: float = 0.0
    #: the row locks a window's handlers will take, taken first in one order
    #: (`Subscription.lock_first`): for a service whose replicas compete for the same rows
    lock_first: LockFirst | None = None
    #: False: its consumer keeps no inbox (`Subscription.inbox`): for handlers idempotent by
    #: the event id themselves, in a service that publishes nothing
    inbox: bool = True
    #: where /metrics is served when not on `port` (the public gateway's: an internal port)
    metrics_port: int | None = None
    #: refuse query parameters a route does not declare (the gateway's routes pass the query
    #: on to the service, which refuses what it does not take)
    strict_query: bool = True

    def __post_init__(self) -> None:
        if not self.inbox and self.publishes:
            # without an inbox a redelivered event runs again: what it emitted would go out twice
            raise ValueError(f"{self.name}: a service that keeps no inbox may publish nothing")

    @property
    def consumes(self) -> dict[str, EventHandler | Batch]:
        """event type -> handler, as the bus routes them."""
        return {
            key if isinstance(key, str) else key.event_type: handler
            for key, handler in self.handlers.items()
        }

    @property
    def publishes_types(self) -> list[str]:
        return [event.event_type for event in self.publishes]

    def bind(self, ctx: ServiceContext[SettingsT, ResourcesT]) -> dict[str, Handler]:
        """The bus's handlers: this service's, each given `ctx`. A handler given for several
        event types is bound once: a `Batch` then takes a window's consecutive events of all of
        its types in one call (the consumer groups them by handler)."""
        bound: dict[int, Handler] = {}
        return {
            event_type: bound.get(id(handler)) or bound.setdefault(id(handler), _bind(handler, ctx))
            for event_type, handler in self.consumes.items()
        }


def _bind(handler: EventHandler | Batch, ctx: AnyContext) -> Handler:
    if isinstance(handler, Batch):
        batch = handler.handle

        async def many(deliveries: Sequence[Delivery]) -> None:
            await batch(ctx, deliveries)

        return BatchHandler(many)

    async def one(uow: UnitOfWork, envelope: Envelope, event: Any) -> None:
        await handler(ctx, uow, envelope, event)

    one.__name__ = one.__qualname__ = getattr(handler, "__name__", "handler")
    return one


@asynccontextmanager
async def open_service(
    definition: ServiceDefinition[SettingsT, ResourcesT],
    *,
    platform: PlatformSettings,
    pool: asyncpg.Pool,
    bus: BusNode,
    settings: SettingsT | None = None,
    resources: ResourcesT | None = None,
) -> AsyncIterator[ServiceContext[SettingsT, ResourcesT]]:
    """The service's context: its settings read (unless given), its resources opened (unless
    given: a test's own) for the life of the block, and closed after it."""
    own_settings = definition.settings() if settings is None else settings
    async with contextlib.AsyncExitStack() as stack:
        if resources is None:
            resources = await stack.enter_async_context(
                definition.resources(own_settings, platform)
            )
        yield ServiceContext(
            name=definition.name,
            platform=platform,
            settings=own_settings,
            resources=resources,
            pool=pool,
            bus=bus,
        )


def build_app(definition: ServiceDefinition[Any, Any], ctx: AnyContext) -> FastAPI:
    """The service's HTTP app: its router under the shared conventions, `ctx` for its routes."""
    app = new_app(title=definition.name)
    app.state.ctx = ctx
    # what the gateway proves forwarded identities with (platform/http.py, `caller`)
    app.state.identity_key = ctx.platform.identity_key()
    if definition.router is not None:
        strict = [Depends(known_query_only)] if definition.strict_query else []
        app.include_router(definition.router, dependencies=strict)
    if definition.customize_app is not None:
        definition.customize_app(app, ctx)
    install_conventions(app)  # last, so outermost: every answer has the one error shape
    return app


@asynccontextmanager
async def running_jobs(
    definition: ServiceDefinition[Any, Any], ctx: AnyContext
) -> AsyncIterator[None]:
    """The service's background jobs, each run only while this process leads it: one process
    of the service at a time (platform/leadership.py, ADR 0012); and the platform's own that
    every process runs, retention of its inbox, outbox and idempotency keys (ADR 0009), which
    takes a lock per batch itself and needs no leader."""
    leaders = [
        JobLeader(
            functools.partial(job, ctx),
            name=getattr(job, "__name__", "job"),
            dsn=ctx.platform.database_url,
            schema=ctx.bus.schema,
            service=ctx.name,
            poll_s=ctx.platform.job_leader_poll_s,
        )
        for job in definition.jobs
    ]
    tasks = [
        asyncio.create_task(leader.run(), name=f"{ctx.name}.{leader.name}.leader")
        for leader in leaders
    ] + [
        asyncio.create_task(job(ctx), name=f"{ctx.name}.{getattr(job, '__name__', 'job')}")
        for job in PLATFORM_JOBS
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# Routes reach the context through this dependency; `async def` because FastAPI runs a plain
# `def` dependency on a worker thread (docs/SERVICES.md, "HTTP").
async def service_context(request: Request) -> AnyContext:
    ctx: AnyContext = request.app.state.ctx
    return ctx


async def correlation_id_dependency(request: Request) -> str:
    return correlation_id_of(request)


Context = Annotated[AnyContext, Depends(service_context)]
CorrelationId = Annotated[str, Depends(correlation_id_dependency)]
