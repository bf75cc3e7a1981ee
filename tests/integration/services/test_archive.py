"""archive against the real PostgreSQL and the real RabbitMQ.

Real: PostgreSQL (a random schema per test, migrated), RabbitMQ (the test run's own vhost). The
archive's bus node is started under a random service name, so its publisher is real; replays
go to a queue the test declares itself (random name) and are read back with basic.get. The
handler is called directly in a UnitOfWork as the bus would, except in the tests that archive
events arriving through a real consumer bound with "#" (a window of them in one call, a
duplicate, a poison event). Routes go through httpx's ASGI transport. Every queue a test
declares is deleted when it ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.contracts.catalog import ProductCreated
from eventshop.contracts.common import Line
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed, OrderCreated
from eventshop.contracts.selfcheck import Pinged, PingedV1
from eventshop.platform.bus import BatchHandler, Delivery, Subscription, UnitOfWork
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.topology import REPLAY_EXCHANGE, declare_direct_exchange
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import migrate
from eventshop.platform.service import EVERY_EVENT, Batch, ServiceContext, open_service
from eventshop.platform.settings import PlatformSettings
from eventshop.services.archive import handlers, store
from eventshop.services.archive.service import Context, definition
from tests.integration.helpers import Bus, consumer_of, parked, ping
from tests.support.polling import eventually
from tests.support.services import http_client

pytestmark = pytest.mark.integration

SERVICE = "archive"
MIGRATIONS = "eventshop.services.archive.migrations"
ADMIN = {"X-User-Id": "admin-1", "X-User-Role": "admin", "X-User-Email": "admin@example.com"}
CUSTOMER = {"X-User-Id": "user-1", "X-User-Role": "customer", "X-User-Email": "u@example.com"}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
async def node(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> AsyncIterator[BusNode]:
    """The archive's bus node, started (a real publisher), consuming nothing."""
    schema, pool = schema_pool
    bus = BusNode(
        service=f"archive_{uuid.uuid4().hex[:8]}",
        schema=schema,
        pool=pool,
        registry=registry,
        settings=settings,
    )
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def client(node: BusNode, settings: PlatformSettings) -> AsyncIterator[httpx.AsyncClient]:
    service = open_service(definition, platform=settings, pool=node.pool, bus=node)
    async with service as ctx, http_client(ctx) as c:
        yield c


@pytest.fixture
async def channel(settings: PlatformSettings) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def target(channel: AbstractChannel) -> AsyncIterator[AbstractQueue]:
    """A service's queue, as its consumer would have declared it; nothing consumes it."""
    queue = await channel.declare_queue(
        f"target_{uuid.uuid4().hex[:8]}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(await declare_direct_exchange(channel, REPLAY_EXCHANGE), queue.name)
    yield queue
    await queue.delete(if_unused=False, if_empty=False)


def event(
    payload: EventPayload, *, aggregate_id: str, correlation_id: str, at: datetime
) -> Envelope:
    return new_envelope(
        payload.event_type,
        payload.schema_version,
        aggregate_id,
        payload.model_dump(mode="json"),
        correlation_id=correlation_id,
        occurred_at=at,
    )


def context_on(pool: asyncpg.Pool | None) -> Context:
    """The archive's context on `pool` (it has no settings or resources; its handler uses
    neither the context nor the bus node, which is never started)."""
    bus = BusNode(
        service="archive", schema="archive", pool=pool, registry=registry, settings=SETTINGS
    )
    return ServiceContext(
        name="archive", platform=SETTINGS, settings=None, resources=None, pool=pool, bus=bus
    )


SETTINGS = PlatformSettings()
#: what the bus runs for every event the archive receives, its context bound
ARCHIVE_CONTEXT = context_on(None)
ARCHIVE = definition.bind(ARCHIVE_CONTEXT)[EVERY_EVENT]


async def archive(pool: asyncpg.Pool, *envelopes: Envelope) -> None:
    """Hand each envelope to the archive's handler, in a transaction of its own, as the bus does
    when it retries a window one event at a time."""
    for env in envelopes:
        async with UnitOfWork.begin(pool, service="archive") as uow:
            await ARCHIVE(uow.caused_by(env), env, None)


LINES = (Line(sku="SKU-1", quantity=1, unit_price_minor=500),)


def history(tag: str) -> list[Envelope]:
    """A small history: two orders (correlations A and B) and a product, a minute apart."""
    a, b, p = f"{tag}-A", f"{tag}-B", f"{tag}-P"
    common: dict[str, Any] = {"user_id": "u-1", "email": "ann@example.com", "lines": LINES}
    return [
        event(ProductCreated(sku="SKU-1", name="Mug", price_minor=500, currency="EUR"),
              aggregate_id="SKU-1", correlation_id=p, at=T0),
        event(OrderCreated(order_id="o-a", total_minor=500, currency="EUR", **common),
              aggregate_id="o-a", correlation_id=a, at=T0 + timedelta(minutes=1)),
        event(OrderCreated(order_id="o-b", total_minor=500, currency="EUR", **common),
              aggregate_id="o-b", correlation_id=b, at=T0 + timedelta(minutes=2)),
        event(OrderConfirmed(order_id="o-a", total_minor=500, currency="EUR", **common),
              aggregate_id="o-a", correlation_id=a, at=T0 + timedelta(minutes=3)),
        event(OrderCancelled(order_id="o-b", reason="fraud", stock_reserved=True, **common),
              aggregate_id="o-b", correlation_id=b, at=T0 + timedelta(minutes=4)),
    ]  # fmt: skip


async def drain(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    """Every message in `queue` now, by basic.get."""
    got = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        got.append(message)
    return got


def ids(events: list[Envelope]) -> list[str]:
    return [str(e.event_id) for e in events]


async def find(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/events", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- the handler ---------------------------------------------------------------------------------
async def test_stores_each_event_once_with_its_whole_envelope(pool: asyncpg.Pool) -> None:
    env = history("h")[1]
    await archive(pool, env)
    await archive(pool, env)  # again: no error, no second row
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM archived_events")
    [row] = rows
    assert row["event_id"] == env.event_id
    assert (row["event_type"], row["schema_version"]) == ("order.created", 1)
    assert (row["aggregate_id"], row["correlation_id"]) == ("o-a", "h-A")
    assert row["occurred_at"] == env.occurred_at
    assert Envelope.model_validate_json(row["envelope"]) == env


async def test_archived_events_are_immutable(pool: asyncpg.Pool) -> None:
    await archive(pool, history("h")[0])
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="immutable"):
            await conn.execute("UPDATE archived_events SET event_type = 'x.y'")
        with pytest.raises(asyncpg.RaiseError, match="immutable"):
            await conn.execute("DELETE FROM archived_events")


async def test_archives_every_event_from_the_broker_as_received_after_upcasting(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings, channel: AbstractChannel
) -> None:
    schema, pool = schema_pool
    name = f"archive_{uuid.uuid4().hex[:8]}"
    subscription = Subscription(
        name, definition.bind(context_on(pool)), tuple(settings.retry_delays_ms)
    )
    bus = BusNode(
        service=name,
        schema=schema,
        pool=pool,
        registry=registry,
        settings=settings,
        subscription=subscription,
    )
    await bus.start()
    try:
        assert bus.publisher is not None
        old = event(PingedV1(number=7), aggregate_id="ping", correlation_id="c", at=T0)
        sent = [*history(uuid.uuid4().hex[:6]), old]
        for env in sent:
            await bus.publisher.publish(env.event_type, message_from_envelope(env))
        wanted = {e.event_id for e in sent}

        async def archived() -> dict[uuid.UUID, asyncpg.Record]:
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT * FROM archived_events WHERE event_id = ANY($1::uuid[])", list(wanted)
                )
            return {r["event_id"]: r for r in rows}

        deadline = time.monotonic() + 10
        while len(rows := await archived()) < len(wanted):
            assert time.monotonic() < deadline, f"archived {len(rows)} of {len(wanted)}"
            await asyncio.sleep(0.02)
        upcast = Envelope.model_validate_json(rows[old.event_id]["envelope"])
        assert (upcast.schema_version, upcast.payload) == (2, {"seq": 7, "note": "upcast from v1"})
        assert rows[old.event_id]["schema_version"] == 2
    finally:
        await bus.stop()
        queues = subscription.queues
        for queue in (queues.main, queues.parked, *(queues.retry(i + 1) for i in range(2))):
            await channel.queue_delete(queue)


# -- a window of events in one call -------------------------------------------------------------
class CountingConnection(asyncpg.Connection):  # type: ignore[misc]
    """A real connection that also keeps the text of every statement it is asked to run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements: list[str] = []

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(query)
        return await super().execute(query, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(query)
        return await super().fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(query)
        return await super().fetchval(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(query)
        return await super().fetchrow(query, *args, **kwargs)


async def archived_ids(pool: asyncpg.Pool) -> list[uuid.UUID]:
    """The archived event ids, in archive order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM archived_events ORDER BY position")
    return [r["event_id"] for r in rows]


async def test_a_window_is_one_insert_keeping_each_event_once_in_delivery_order(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    schema, pool = schema_pool
    first, second = history("w1"), history("w2")
    conn: CountingConnection = await asyncpg.connect(
        settings.database_url,
        connection_class=CountingConnection,
        server_settings={"search_path": schema},
    )
    try:

        async def window(*envelopes: Envelope) -> list[str]:
            """The statements the handler ran for one window, handed over as the bus does."""
            async with conn.transaction():
                uow = UnitOfWork(conn=conn, service="archive", correlation_id="")
                conn.statements.clear()
                await handlers.archive_events(
                    context_on(pool), [(uow.caused_by(e), e, None) for e in envelopes]
                )
                return list(conn.statements)

        # twice the same event in one window (past the inbox, e.g. two archive consumers)
        [insert] = await window(*first, first[2])
        assert "unnest" in insert
        # a window with events a previous one archived already
        assert len(await window(*first[3:], *second)) == 1
        assert await store.archive_events(conn, [*second, *first]) == 0
        assert await store.archive_events(conn, []) == 0
    finally:
        await conn.close()
    assert await archived_ids(pool) == [e.event_id for e in [*first, *second]]
    async with pool.acquire() as c:
        rows = await c.fetch("SELECT event_id, envelope FROM archived_events")
    kept = {r["event_id"]: Envelope.model_validate_json(r["envelope"]) for r in rows}
    assert kept == {e.event_id: e for e in [*first, *second]}


@dataclass
class SpyArchive:
    """The archive's batch handler, recording the event ids of each call. A call holding the
    `gate` ping waits until the gate opens: what is published meanwhile piles up in the
    consumer's buffer, to be taken as one window."""

    calls: list[list[uuid.UUID]] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def many(self, events: Sequence[Delivery]) -> None:
        self.calls.append([env.event_id for _, env, _ in events])
        if any(env.payload.get("note") == "gate" for _, env, _ in events):
            self.entered.set()
            await self.gate.wait()
        await handlers.archive_events(ARCHIVE_CONTEXT, events)


async def archive_node(bus: Bus) -> tuple[BusNode, asyncpg.Pool, SpyArchive]:
    """An archive consumer bound with "#", its batch handler spied on."""
    batch = definition.handlers[EVERY_EVENT]
    assert isinstance(batch, Batch) and batch.handle is handlers.archive_events
    assert isinstance(ARCHIVE, BatchHandler)
    spy = SpyArchive()
    node, pool = await bus.node({"#": BatchHandler(spy.many)}, start=False, inbox=definition.inbox)
    await migrate(pool, [MIGRATIONS])
    await node.start()
    return node, pool, spy


async def hold_a_window(
    bus: Bus, node: BusNode, spy: SpyArchive, envelopes: list[Envelope]
) -> Envelope:
    """Have `envelopes` delivered as one window, behind a gate ping (returned)."""
    publisher = await bus.publisher()
    gate = ping(0, note="gate")
    await publisher.publish(gate.event_type, message_from_envelope(gate))
    await asyncio.wait_for(spy.entered.wait(), 5)
    await publisher.publish_many([(e.event_type, message_from_envelope(e)) for e in envelopes])
    await eventually(lambda: len(consumer_of(node)._buffer), len(envelopes))
    spy.gate.set()
    return gate


async def test_a_burst_of_events_is_archived_by_one_call_each_once(bus: Bus) -> None:
    node, pool, spy = await archive_node(bus)
    burst = [*history(uuid.uuid4().hex[:6]), ping(1), ping(2)]
    # the same event twice in the window: the window hands it over once
    gate = await hold_a_window(bus, node, spy, [*burst, burst[1]])
    wanted = [gate.event_id, *(e.event_id for e in burst)]
    await eventually(lambda: archived_ids(pool), wanted)  # in delivery order
    assert spy.calls == [[gate.event_id], wanted[1:]]

    # delivered again in a later window (a redelivery, a replay): handled again, and the
    # archive's key on the event id keeps it to one row
    await (await bus.publisher()).publish(burst[0].event_type, message_from_envelope(burst[0]))
    await eventually(lambda: spy.calls[-1], [burst[0].event_id])
    await eventually(lambda: consumer_of(node).stats.handled, len(wanted) + 1)
    assert await archived_ids(pool) == wanted
    # and no inbox row was written for any of them: the archive keeps none (definition.inbox)
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


async def test_a_consumer_without_an_inbox_parks_what_a_handler_emits(bus: Bus) -> None:
    """Without an inbox a redelivered event runs again: an emit would go out twice, so a
    handler that emits fails, its transaction rolled back, and the event is parked."""

    async def emits(uow: UnitOfWork, env: Envelope, payload: Any) -> None:
        uow.emit(Pinged(seq=1), aggregate_id=env.aggregate_id)

    node, pool = await bus.node({"#": emits}, inbox=False)
    event = ping(7)
    await (await bus.publisher()).publish(event.event_type, message_from_envelope(event))
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert p.event_id == str(event.event_id) and "keeps no inbox" in p.error
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_poison_event_in_a_window_leaves_the_others_archived(bus: Bus) -> None:
    node, pool, spy = await archive_node(bus)
    ok = [ping(i) for i in (1, 2, 4, 5)]
    # PostgreSQL stores no NUL character in text or jsonb: this one can never be archived
    poison = ping(3, note="a NUL \x00 character")
    window = [ok[0], ok[1], poison, ok[2], ok[3]]
    gate = await hold_a_window(bus, node, spy, window)

    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)
    assert p.event_id == str(poison.event_id) and p.attempts == 3
    assert "UntranslatableCharacterError" in p.error
    assert await archived_ids(pool) == [gate.event_id, *(e.event_id for e in ok)]
    in_window = [e.event_id for e in window]
    # the window in one call (rolled back), then again one event per savepoint
    assert spy.calls[:7] == [[gate.event_id], in_window, *([i] for i in in_window)]
    assert all(call == [poison.event_id] for call in spy.calls[7:])  # its retries


# -- GET /events ---------------------------------------------------------------------------------
async def test_filters_by_type_correlation_aggregate_and_time(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    h = history("f")
    _product, created_a, created_b, confirmed_a, cancelled_b = h
    await archive(pool, *h)

    def found(body: dict[str, Any]) -> list[str]:
        return [e["event_id"] for e in body["events"]]

    assert found(await find(client)) == ids(h)
    assert found(await find(client, type="order.created")) == ids([created_a, created_b])
    assert found(await find(client, type="order.*")) == ids(h[1:])
    assert found(await find(client, correlation_id="f-A")) == ids([created_a, confirmed_a])
    assert found(await find(client, aggregate_id="o-b")) == ids([created_b, cancelled_b])
    since, until = (T0 + timedelta(minutes=1)).isoformat(), (T0 + timedelta(minutes=3)).isoformat()
    assert found(await find(client, since=since, until=until)) == ids([created_a, created_b])
    assert found(await find(client, type="order.created", correlation_id="f-B")) == ids([created_b])
    assert found(await find(client, correlation_id="nobody")) == []


async def test_pages_in_archive_order(pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    h = history("p")
    await archive(pool, *h)
    seen: list[str] = []
    after, pages = 0, 0
    while True:
        body = await find(client, limit=2, after=after)
        seen += [e["event_id"] for e in body["events"]]
        pages += 1
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == ids(h)
    assert pages == 3
    page = await find(client, limit=5)
    assert page["next_after"] is None  # exactly one full page: no empty page to fetch
    positions = [e["position"] for e in page["events"]]
    assert positions == sorted(positions)


async def test_an_event_shows_its_envelope_and_archive_position(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    env = history("g")[3]
    await archive(pool, env)
    r = await client.get(f"/events/{env.event_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in env.model_dump(mode="json")} == env.model_dump(mode="json")
    assert body["position"] >= 1 and body["archived_at"]

    r = await client.get(f"/events/{uuid.uuid4()}", headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "params",
    [{"type": "Order Created"}, {"since": T0.isoformat(), "until": (T0 - timedelta(1)).isoformat()},
     {"limit": 0}, {"after": -1}],
)  # fmt: skip
async def test_rejects_a_malformed_query(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    r = await client.get("/events", params=params, headers=ADMIN)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


async def test_is_for_admins_only(client: httpx.AsyncClient, target: AbstractQueue) -> None:
    assert (await client.get("/events", headers=CUSTOMER)).status_code == 403
    assert (await client.get("/events")).status_code == 401
    r = await client.post("/replay", json={"service": target.name, "limit": 1}, headers=CUSTOMER)
    assert r.status_code == 403


# -- POST /replay --------------------------------------------------------------------------------
async def replay(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/replay", json=body, headers=ADMIN)


async def test_replays_exactly_the_matching_events_in_archive_order_with_their_ids(
    pool: asyncpg.Pool, client: httpx.AsyncClient, target: AbstractQueue
) -> None:
    h = history("r")
    await archive(pool, *h)
    r = await replay(client, service=target.name, type="order.*", correlation_id="r-B", limit=100)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 2, "replayed": 2}

    got = await drain(target)
    wanted = [h[2], h[4]]  # order.created and order.cancelled of correlation B
    assert [m.message_id for m in got] == ids(wanted)
    assert [m.type for m in got] == ["order.created", "order.cancelled"]
    assert [m.correlation_id for m in got] == ["r-B", "r-B"]
    assert [registry.decode(m.body)[0] for m in got] == wanted


async def test_replays_a_time_range_up_to_the_limit(
    pool: asyncpg.Pool, client: httpx.AsyncClient, target: AbstractQueue
) -> None:
    h = history("t")
    await archive(pool, *h)
    since = (T0 + timedelta(minutes=1)).isoformat()
    r = await replay(client, service=target.name, since=since, limit=2)
    assert r.json() == {"matched": 2, "replayed": 2}
    assert [m.message_id for m in await drain(target)] == ids(h[1:3])


async def test_a_dry_run_counts_and_sends_nothing(
    pool: asyncpg.Pool, client: httpx.AsyncClient, target: AbstractQueue
) -> None:
    await archive(pool, *history("d"))
    r = await replay(client, service=target.name, type="order.created", limit=100, dry_run=True)
    assert r.json() == {"matched": 2, "replayed": 0}
    assert await drain(target) == []


async def test_replaying_to_an_unknown_service_is_404(
    pool: asyncpg.Pool, client: httpx.AsyncClient, target: AbstractQueue
) -> None:
    h = history("u")
    await archive(pool, *h)
    r = await replay(client, service=f"nosuch_{uuid.uuid4().hex[:8]}", limit=10)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"
    # the broker closed the throwaway channel, not the publisher's: a replay still goes out
    r = await replay(client, service=target.name, limit=10)
    assert r.json() == {"matched": 5, "replayed": 5}
    assert [m.message_id for m in await drain(target)] == ids(h)


@pytest.mark.parametrize(
    "body",
    [{"limit": 10}, {"service": "orders.parked", "limit": 10}, {"service": "x", "limit": 0},
     {"service": "x", "limit": 100_001}, {"service": "x", "limit": 1, "surprise": True}],
)  # fmt: skip
async def test_rejects_a_malformed_replay(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/replay", json=body, headers=ADMIN)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
