"""Observability through the real bus and database: one trace across the outbox, the relay and
the consumer (with the database work), the log lines of a handled event, the counters and
gauges a scrape of /metrics shows, what runs after a commit, and the gateway's platform-wide
readiness.

What is real: RabbitMQ (the session's vhost), PostgreSQL (random schemas), Redis (db 15, a
random key prefix), the runtime's own routes (/metrics, /health/*) and the platform's bus
nodes. Spans go to an in-memory exporter on this process's tracer provider (one a process):
each test looks only at the trace it started. Log lines go to a string buffer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from eventshop.contracts import Envelope, registry
from eventshop.contracts.selfcheck import Pinged, Ponged
from eventshop.platform.bus import Handler, Subscription, UnitOfWork
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.topology import declare_service_queues
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import create_pool, migrate
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.sql_spans import TracedConnection
from eventshop.platform.observability.tracing import A_CORRELATION_ID, RootSampler, trace_id_of
from eventshop.platform.runtime import health_routes, metrics_route
from eventshop.platform.service import AnyContext, ServiceContext, build_app
from eventshop.platform.settings import PlatformSettings
from eventshop.services.gateway import service as gateway_service
from eventshop.services.gateway.adapters.upstream import Upstreams
from eventshop.services.gateway.settings import GatewaySettings
from tests.conftest import SchemaFactory
from tests.integration.helpers import (
    PINGED,
    PONGED,
    TEST_MIGRATIONS,
    Bus,
    commit_pings,
    consumer_of,
    effects_of,
    fetchval,
    ping,
    record_effect,
)
from tests.support.logs import captured_logs, lines_of
from tests.support.loopback import serving
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/15"

_EXPORTER = InMemorySpanExporter()
_INSTALLED = False


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans of this process (the runtime's sampling); tests filter by trace id."""
    global _INSTALLED
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=ParentBased(root=RootSampler(1.0))))
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not _INSTALLED:
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        _INSTALLED = True
    return _EXPORTER


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """structlog (and the standard library's logging) as a service configures them, JSON, into
    a buffer; restored afterwards."""
    with captured_logs("obs-test") as buffer:
        yield buffer


async def traced_node(
    bus: Bus,
    settings: PlatformSettings,
    make_schema: SchemaFactory,
    handlers: dict[str, Handler],
    pools: list[asyncpg.Pool],
) -> tuple[BusNode, asyncpg.Pool]:
    """A consuming node whose pool is the runtime's (statements are spans under a trace)."""
    service = Bus.service_name("traced")
    schema, _ = await make_schema(service)
    pool = await create_pool(
        settings.database_url, schema, max_size=5, connection_class=TracedConnection
    )
    pools.append(pool)
    await migrate(pool, [TEST_MIGRATIONS])
    subscription = Subscription(service, handlers, tuple(settings.retry_delays_ms))
    node = BusNode(
        service=service,
        schema=schema,
        pool=pool,
        registry=registry,
        settings=settings,
        subscription=subscription,
    )
    bus.nodes.append(node)
    bus.delete_at_end(subscription.queues)
    await node.start()
    return node, pool


@pytest.fixture
async def pools() -> AsyncIterator[list[asyncpg.Pool]]:
    made: list[asyncpg.Pool] = []
    yield made
    for pool in made:
        await pool.close()


def of_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


# -- traces ---------------------------------------------------------------------------------------


async def test_one_trace_joins_the_request_the_relays_the_consumer_and_its_database_work(
    bus: Bus,
    settings: PlatformSettings,
    make_schema: SchemaFactory,
    spans: InMemorySpanExporter,
    pools: list[asyncpg.Pool],
) -> None:
    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        await record_effect(uow, env, payload)
        uow.emit(Ponged(seq=payload.seq), aggregate_id=env.aggregate_id)

    producer, producer_pool = await bus.node(None)
    _, pool = await traced_node(bus, settings, make_schema, {PINGED: on_ping}, pools)
    tap = await bus.tap(PONGED)
    correlation_id = f"corr-{uuid.uuid4().hex[:8]}"

    # the request: its unit of work takes the current span's trace context
    with trace.get_tracer("test").start_as_current_span("POST /pings", kind=SpanKind.SERVER) as r:
        async with UnitOfWork.begin(
            producer_pool, service=producer.service, correlation_id=correlation_id
        ) as uow:
            sent = uow.emit(Pinged(seq=7), aggregate_id="agg-7")
    request = r.get_span_context()
    assert trace_id_of(sent.traceparent) == f"{request.trace_id:032x}"
    stored = await fetchval(
        producer_pool, "SELECT traceparent FROM outbox WHERE event_id = $1", sent.event_id
    )
    assert stored == sent.traceparent  # the context survives the outbox

    await eventually(lambda: len(tap.by_id(str(sent.event_id))) + len(tap.messages) > 0)
    pong = tap.messages[0]
    assert trace_id_of(str((pong.headers or {})["traceparent"])) == f"{request.trace_id:032x}"

    def names() -> list[str]:
        return [s.name for s in of_trace(spans, request.trace_id)]

    # spans are exported in batches: wait for every one the assertions below name
    await eventually(
        names, lambda n: {"publish selfcheck.pinged", "publish selfcheck.ponged"} <= set(n)
    )
    by_id = {s.context.span_id: s for s in of_trace(spans, request.trace_id)}

    def one(name: str) -> ReadableSpan:
        [span] = [s for s in by_id.values() if s.name == name]
        return span

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None
        return by_id[span.parent.span_id]

    publish_ping = one("publish selfcheck.pinged")
    handle = one("handle selfcheck.pinged")
    publish_pong = one("publish selfcheck.ponged")
    insert = one("INSERT effects")
    assert publish_ping.kind is SpanKind.PRODUCER and parent(publish_ping).name == "POST /pings"
    assert handle.kind is SpanKind.CONSUMER and parent(handle) is publish_ping
    assert insert.kind is SpanKind.CLIENT and parent(insert) is handle
    assert publish_pong.kind is SpanKind.PRODUCER and parent(publish_pong) is handle
    # causal order on the clock too
    chain = [one("POST /pings"), publish_ping, handle, insert, publish_pong]
    starts = [s.start_time or 0 for s in chain]
    assert starts == sorted(starts)
    for span in (publish_ping, handle, publish_pong):
        assert span.attributes is not None
        assert span.attributes[A_CORRELATION_ID] == correlation_id
    assert insert.attributes is not None and "INSERT INTO effects" in str(
        insert.attributes["db.statement"]
    )
    # the pong's header names the consumer side's publish span: the next hop continues it
    pong_parent = str((pong.headers or {})["traceparent"]).split("-")[2]
    assert pong_parent == f"{publish_pong.context.span_id:016x}"
    assert await effects_of(pool, sent.event_id) == 1


async def test_events_without_trace_context_make_no_spans(
    bus: Bus,
    settings: PlatformSettings,
    make_schema: SchemaFactory,
    spans: InMemorySpanExporter,
    pools: list[asyncpg.Pool],
) -> None:
    node, pool = await traced_node(bus, settings, make_schema, {PINGED: record_effect}, pools)
    spans.clear()
    envs = [ping(i) for i in range(20)]
    publisher = await bus.publisher()
    for env in envs:
        await publisher.publish(env.event_type, message_from_envelope(env))
    await eventually(lambda: consumer_of(node).stats.handled, 20)
    assert [s.name for s in spans.get_finished_spans() if "selfcheck" in s.name] == []
    assert await fetchval(pool, "SELECT count(*) FROM effects") == 20


# -- logs -----------------------------------------------------------------------------------------


async def test_every_log_line_written_while_handling_an_event_carries_its_ids(
    bus: Bus,
    settings: PlatformSettings,
    make_schema: SchemaFactory,
    spans: InMemorySpanExporter,
    pools: list[asyncpg.Pool],
    log_lines: io.StringIO,
) -> None:
    log = get_logger("test.handler")
    attempts: list[str] = []

    def helper(n: int) -> None:  # deeper in the call stack, no context passed
        log.info("helper.called", n=n)

    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        attempts.append(str(env.event_id))
        log.info("handler.started", seq=payload.seq)
        helper(payload.seq)
        logging.getLogger("some.library").warning("library says %s", "hello")
        await record_effect(uow, env, payload)
        if payload.note == "fail-once" and attempts.count(str(env.event_id)) == 1:
            log.warning("handler.failing")
            raise RuntimeError("transient")
        log.info("handler.done")

    _, pool = await traced_node(bus, settings, make_schema, {PINGED: on_ping}, pools)
    correlation_id = f"corr-{uuid.uuid4().hex[:8]}"
    with trace.get_tracer("test").start_as_current_span("POST /pings"):
        async with UnitOfWork.begin(
            pool, service="producer", correlation_id=correlation_id, causation_id="request-1"
        ) as uow:
            plain = uow.emit(Pinged(seq=1), aggregate_id="a")
            flaky = uow.emit(Pinged(seq=2, note="fail-once"), aggregate_id="a")
    # the node's own relay publishes them (its pool is the producer's here); handled twice
    await eventually(lambda: effects_of(pool, flaky.event_id), 1, timeout=15)
    await eventually(lambda: effects_of(pool, plain.event_id), 1)

    lines = lines_of(log_lines)
    for env in (plain, flaky):
        mine = [line for line in lines if line.get("event_id") == str(env.event_id)]
        events = [line["event"] for line in mine]
        # (the plain one runs twice when it shares a window with the failing one: the window
        # is rolled back and run again one event per savepoint)
        assert events.count("handler.started") >= (2 if env is flaky else 1), events
        assert "helper.called" in events and "handler.done" in events
        assert "library says hello" in events
        if env is flaky:
            assert "handler.failing" in events and "consumer.retry" in events
        for line in mine:
            assert line["correlation_id"] == correlation_id, line
            assert line["causation_id"] == "request-1", line
            assert line["event_type"] == PINGED, line
            assert line["service"] == "obs-test", line
            assert line["trace_id"] == trace_id_of(env.traceparent), line
    # and no line of the handler ran outside that context
    for line in lines:
        if line["event"] in ("handler.started", "helper.called", "handler.done"):
            assert line.get("correlation_id") == correlation_id, line


# -- metrics --------------------------------------------------------------------------------------


async def scrape(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def bare_context(
    name: str, settings: PlatformSettings, pool: asyncpg.Pool, node: BusNode
) -> AnyContext:
    """A context with no settings or resources of the service's own: what health and /metrics
    read (the platform's pool and bus node)."""
    return ServiceContext(
        name=name, platform=settings, settings=None, resources=None, pool=pool, bus=node
    )


def service_app(ctx: AnyContext) -> FastAPI:
    """A service's HTTP app as the runtime finishes it: health routes and /metrics."""
    app = FastAPI()
    health_routes(app, ctx)
    metrics_route(app, ctx)
    return app


async def test_metrics_count_handled_retried_and_parked_events_and_read_queues_and_outbox(
    bus: Bus, settings: PlatformSettings
) -> None:
    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        if payload.note == "poison":
            raise RuntimeError("never works")
        await record_effect(uow, env, payload)

    node, pool = await bus.node({PINGED: on_ping})
    service = node.service
    app = service_app(bare_context(service, settings, pool, node))
    queues = consumer_of(node).queues
    before = await scrape(app)
    assert value(before, "eventshop_queue_consumers", service=service, queue=service) == 1
    assert value(before, "eventshop_up", service=service, dependency="broker") == 1
    assert value(before, "eventshop_up", service=service, dependency="database") == 1

    publisher = await bus.publisher()
    good = [ping(i) for i in range(3)]
    for env in good:
        await publisher.publish(env.event_type, message_from_envelope(env))
    await eventually(lambda: consumer_of(node).stats.handled, 3)
    handled = await scrape(app)
    typed = {"service": service, "event_type": PINGED}
    assert value(handled, "eventshop_events_handled_total", **typed) == 3
    assert value(handled, "eventshop_handler_duration_seconds_count", **typed) == 3
    assert value(handled, "eventshop_events_retried_total", **typed) == 0

    poison = ping(99, note="poison")
    await publisher.publish(poison.event_type, message_from_envelope(poison))
    # and one that is not even an event: parked at once, no retry
    await publisher.publish(
        queues.main, aio_pika.Message(b"not json", message_id="junk-1"), to_queue=True
    )
    await eventually(lambda: consumer_of(node).stats.parked, 2, timeout=10)
    parked = await scrape(app)
    assert value(parked, "eventshop_events_failed_total", **typed) == 3  # every attempt
    assert value(parked, "eventshop_events_retried_total", **typed) == 2  # the ladder's rungs
    assert value(parked, "eventshop_events_parked_total", **typed, reason="handler_failed") == 1
    assert (
        value(
            parked,
            "eventshop_events_parked_total",
            service=service,
            event_type="unknown",
            reason="rejected",
        )
        == 1
    )
    assert value(parked, "eventshop_events_handled_total", **typed) == 3  # unchanged
    assert value(parked, "eventshop_queue_messages", service=service, queue=queues.parked) == 2
    assert value(parked, "eventshop_queue_messages", service=service, queue=queues.main) == 0

    # redelivered duplicates are counted as such, not as handled
    await publisher.publish(good[0].event_type, message_from_envelope(good[0]))
    await eventually(lambda: consumer_of(node).stats.duplicates, 1)
    dup = await scrape(app)
    assert value(dup, "eventshop_events_duplicate_total", service=service) == 1
    assert value(dup, "eventshop_events_handled_total", **typed) == 3


async def test_outbox_backlog_and_the_age_of_its_oldest_row_are_read_when_scraped(
    bus: Bus, settings: PlatformSettings
) -> None:
    node, pool = await bus.node(None, start=False)  # no relay: the rows stay unsent
    app = service_app(bare_context(node.service, settings, pool, node))
    empty = await scrape(app)
    assert value(empty, "eventshop_outbox_backlog", service=node.service) == 0
    assert value(empty, "eventshop_outbox_oldest_age_seconds", service=node.service) == 0
    await commit_pings(pool, node.service, [Pinged(seq=i) for i in range(5)])
    async with pool.acquire() as conn:  # as if written two minutes ago
        await conn.execute("UPDATE outbox SET created_at = now() - interval '120 s'")
    await commit_pings(pool, node.service, [Pinged(seq=9)])
    backlog = await scrape(app)
    assert value(backlog, "eventshop_outbox_backlog", service=node.service) == 6
    assert 119 < value(backlog, "eventshop_outbox_oldest_age_seconds", service=node.service) < 600


# -- after the commit -----------------------------------------------------------------------------


async def test_what_runs_after_a_commit_runs_once_and_never_after_a_rollback(
    bus: Bus, settings: PlatformSettings
) -> None:
    after: list[str] = []

    async def on_ping(uow: UnitOfWork, env: Envelope, payload: Pinged) -> None:
        await record_effect(uow, env, payload)
        uow.after_commit(lambda: after.append(str(env.event_id)))
        if payload.note == "poison":
            raise RuntimeError("never works")

    node, _ = await bus.node({PINGED: on_ping}, start=False)
    assert node.subscription is not None
    # the queue first, then the events, then the consumer: it finds them waiting, and takes
    # them in one window (one transaction, rolled back when the poison fails, then one
    # savepoint per event): the hooks of what was rolled back must not run
    await declare_service_queues(
        await bus.connection(), settings.exchange, node.subscription.queues
    )
    envs = [ping(i, note="poison" if i == 2 else "") for i in range(5)]
    publisher = await bus.publisher()
    for env in envs:
        await publisher.publish(env.event_type, message_from_envelope(env))
    await node.start()
    await eventually(lambda: consumer_of(node).stats.parked, 1, timeout=10)
    good = sorted(str(e.event_id) for e in envs if e.payload["note"] != "poison")
    assert sorted(after) == good  # each once, the poison's never

    producer, producer_pool = await bus.node(None, start=False)

    async with UnitOfWork.begin(producer_pool, service=producer.service) as uow:
        uow.after_commit(lambda: after.append("committed"))
    with pytest.raises(RuntimeError):
        async with UnitOfWork.begin(producer_pool, service=producer.service) as uow:
            uow.after_commit(lambda: after.append("rolled back"))
            raise RuntimeError("no")
    assert after.count("committed") == 1 and "rolled back" not in after


# -- readiness ------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_gateways_ready_reports_every_service_of_the_platform(
    bus: Bus, settings: PlatformSettings
) -> None:
    gateway_node, gateway_pool = await bus.node(None)
    orders_node, orders_pool = await bus.node({PINGED: record_effect})
    orders_app = service_app(bare_context("orders", settings, orders_pool, orders_node))
    async with contextlib.AsyncExitStack() as stack:
        [orders_url] = await stack.enter_async_context(serving(orders_app))
        upstreams = Upstreams.at(
            {"orders": orders_url, "loyalty": f"http://127.0.0.1:{closed_port()}"},
            timeout_s=5.0,
            connect_timeout_s=1.0,
            identity_key=settings.identity_key(),
        )
        stack.push_async_callback(upstreams.aclose)  # before the orders server stops
        redis = Redis.from_url(REDIS_URL)
        stack.push_async_callback(redis.aclose)
        gw_settings = GatewaySettings(redis_prefix=f"obs-{uuid.uuid4().hex[:8]}:")
        resources = gateway_service.Resources(
            redis=redis, gateway=gateway_service.assemble(gw_settings, redis, upstreams)
        )
        ctx = ServiceContext(
            name="gateway",
            platform=settings,
            settings=gw_settings,
            resources=resources,
            pool=gateway_pool,
            bus=gateway_node,
        )
        app = build_app(gateway_service.definition, ctx)
        health_routes(app, ctx)  # as the runtime does: the gateway's own ready is kept
        c = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        )
        r = await c.get("/health/ready")
        body = r.json()
        assert r.status_code == 200, body  # the gateway itself can serve
        assert body["checks"] == {"database": True, "broker": True, "cache": True}
        services = body["platform"]["services"]
        assert body["platform"]["status"] == "degraded"
        assert services["gateway"]["ready"] is True
        assert services["orders"]["ready"] is True
        assert services["orders"]["checks"]["consumers"] is True
        assert services["loyalty"] == {"ready": False, "error": "ClientConnectorError"}
        whole = await c.get("/health/ready", params={"scope": "platform"})
        assert whole.status_code == 503
        assert (await c.get("/health/live")).status_code == 200


async def test_a_service_is_not_ready_while_its_consumer_is_detached(
    bus: Bus, settings: PlatformSettings
) -> None:
    node, pool = await bus.node({PINGED: record_effect})
    app = service_app(bare_context(node.service, settings, pool, node))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        assert (await c.get("/health/ready")).status_code == 200
        await consumer_of(node).stop()
        r = await c.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["consumers"] is False
        after = await scrape(app)
    assert value(after, "eventshop_queue_consumers", service=node.service, queue=node.service) == 0
