"""A service as the runtime builds it, in-process, for tests: its context and its HTTP app.

    async with service_context(definition, schema, pool, settings) as ctx:   # its resources open
        async with http_client(ctx) as client:
            await client.get("/points")

The bus node in the context is never started (routes and handlers only write to the outbox).
Give `service_settings` or `resources` to replace the service's own (a fake mailer, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import httpx

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.platform.bus import BatchHandler
from eventshop.platform.bus.node import BusNode
from eventshop.platform.runtime import load_definition
from eventshop.platform.service import (
    AnyContext,
    ServiceDefinition,
    build_app,
    open_service,
)
from eventshop.platform.settings import PlatformSettings
from tests.support.identity import ProvenIdentity


@asynccontextmanager
async def service_context(
    definition: ServiceDefinition[Any, Any],
    schema: str,
    pool: asyncpg.Pool,
    settings: PlatformSettings,
    *,
    service_settings: Any = None,
    resources: Any = None,
) -> AsyncIterator[AnyContext]:
    bus = BusNode(
        service=definition.name, schema=schema, pool=pool, registry=registry, settings=settings
    )
    async with open_service(
        definition,
        platform=settings,
        pool=pool,
        bus=bus,
        settings=service_settings,
        resources=resources,
    ) as ctx:
        yield ctx


async def deliver(
    ctx: AnyContext,
    event: EventPayload,
    *,
    aggregate_id: str = "aggregate",
    envelope: Envelope | None = None,
) -> Envelope:
    """Handle `event` as the bus would: the service's own handler of its type, bound to `ctx`,
    in a transaction of its own whose emitted events go to the outbox. A fresh envelope (event
    id) each time unless one is given, so the inbox would not stop a repeated business fact."""
    env = envelope or new_envelope(
        event.event_type, event.schema_version, aggregate_id, event.model_dump(mode="json")
    )
    handler = load_definition(ctx.name).bind(ctx)[event.event_type]
    async with ctx.unit_of_work(env.correlation_id) as uow:
        await handler(uow.caused_by(env), env, event)
    return env


async def handle_window(
    ctx: AnyContext, events: Sequence[EventPayload], *, first: bool, pause_s: float = 0.3
) -> None:
    """Handle `events` as one replica's window (platform/bus/window.py): one transaction, the
    service's `lock_first` hook (if `first`), then each event's own handler in order, with a
    pause after each so that two windows run side by side interleave."""
    definition = load_definition(ctx.name)
    handlers = definition.bind(ctx)
    async with ctx.unit_of_work() as uow:
        if first:
            assert definition.lock_first is not None, f"{ctx.name} has no lock_first"
            await definition.lock_first(uow.conn, list(events))
        for event in events:
            env = new_envelope(
                event.event_type, event.schema_version, "aggregate", event.model_dump(mode="json")
            )
            await handlers[event.event_type](uow.caused_by(env), env, event)
            await asyncio.sleep(pause_s)


#: what asyncpg's introspection of types runs (connection.py: its _introspect_types)
_INTROSPECTION = ("current_setting('jit')", "typeinfo_tree", "FROM pg_catalog.pg_type")


@contextmanager
def statements_run(conn: asyncpg.Connection) -> Iterator[list[str]]:
    """The statements `conn` sends while the block runs, in order (asyncpg's own look-up of a
    type's codec, once per connection, left out: not the code's)."""
    ran: list[str] = []

    def note(logged: asyncpg.connection.LoggedQuery) -> None:
        if not any(mark in logged.query for mark in _INTROSPECTION):
            ran.append(logged.query)

    with conn.query_logger(note):
        yield ran


async def deliver_window(ctx: AnyContext, events: Sequence[EventPayload]) -> list[str]:
    """Handle `events` as one window whose events all go to one batch handler (the service's
    handler of the first event's type, which must take them all: platform/bus/window.py hands
    a batch handler a window's consecutive events of it in one call): one transaction, each
    event its own unit of work caused by it. The statements the call ran, in order."""
    handler = load_definition(ctx.name).bind(ctx)[events[0].event_type]
    assert isinstance(handler, BatchHandler), f"{events[0].event_type}: not a batch handler"
    async with ctx.unit_of_work() as window:
        deliveries = []
        for event in events:
            aggregate = str(getattr(event, "order_id", None) or "aggregate")
            env = new_envelope(
                event.event_type, event.schema_version, aggregate, event.model_dump(mode="json")
            )
            deliveries.append((window.caused_by(env), env, event))
        with statements_run(window.conn) as ran:
            await handler.many(deliveries)
    return ran


async def outbox_events(pool: asyncpg.Pool) -> list[tuple[str, EventPayload]]:
    """(event_type, payload) of every event the service wrote to its outbox, in order."""
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    return [
        (env.event_type, payload) for env, payload in (registry.decode(r["body"]) for r in rows)
    ]


@asynccontextmanager
async def http_client(
    ctx: AnyContext, definition: ServiceDefinition[Any, Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the service's own app (by default the definition named like `ctx`)."""
    app = build_app(definition or load_definition(ctx.name), ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url=f"http://{ctx.name}",
        auth=ProvenIdentity(app.state.identity_key),
    ) as client:
        yield client
