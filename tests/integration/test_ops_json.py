"""The operator's commands with --json against the real RabbitMQ and PostgreSQL, and the data
functions they print (eventshop.ops), which a dashboard calls.

Parking lots are queues of a random service name on the session's vhost, filled with messages
as the consumer parks them; status reads that service with the broker and the database real
and its HTTP address down; the event store is a random schema migrated as orders'. Every
command runs in this process (typer's runner) and its stdout is parsed whole by json.loads.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import pytest
from typer.testing import CliRunner

from eventshop.cli.main import app
from eventshop.ops import events as ops_events
from eventshop.ops.parked import UnknownParkingLotError, parked_filter, parked_of
from eventshop.ops.status import platform_status
from eventshop.platform.bus.topology import ServiceQueues
from eventshop.platform.bus.wire import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILURE,
    H_PARKED_AT,
    H_ROUTING_KEY,
)
from eventshop.platform.db import migrate
from eventshop.platform.eventstore import MIGRATIONS
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.orders import domain
from tests.conftest import SchemaFactory
from tests.integration.test_eventstore_cli import place

pytestmark = pytest.mark.integration


def run(settings: PlatformSettings, *args: str, **env: str) -> Any:
    return CliRunner().invoke(
        app,
        list(args),
        env={
            "EVENTSHOP_AMQP_URL": settings.amqp_url,
            "EVENTSHOP_DATABASE_URL": settings.database_url,
            "EVENTSHOP_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
            "COLUMNS": "200",
            **env,
        },
    )


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it once closed


async def park(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> list[str]:
    """`n` messages in `queue`, as the consumer parks them (failures.py's headers)."""
    ids = []
    for i in range(n):
        event_id = str(uuid.uuid4())
        headers: dict[str, Any] = {
            H_ATTEMPT: 3,
            H_ERROR: f"ValueError: bad sku number {i}",
            H_FIRST_FAILURE: "2026-01-02T14:00:00+02:00",
            H_PARKED_AT: datetime.now(UTC).isoformat(),
            H_ROUTING_KEY: "order.created",
        }
        message = aio_pika.Message(
            json.dumps({"seq": i}).encode(),
            message_id=event_id,
            type="order.created" if i == 0 else "payment.failed",
            correlation_id=f"corr-{i}",
            headers=headers,
            content_type="application/json",
        )
        await channel.default_exchange.publish(message, routing_key=queue)
        ids.append(event_id)
    return ids


@pytest.fixture
async def lot(settings: PlatformSettings, random_name: Any) -> AsyncIterator[tuple[str, list[str]]]:
    """A service's queue (empty) and parking lot (two parked messages) on the test vhost."""
    service = random_name("opsjson")
    queues = ServiceQueues(service, (), tuple(settings.retry_delays_ms))
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        await channel.declare_queue(queues.main, durable=True)
        await channel.declare_queue(queues.parked, durable=True)
        ids = await park(channel, queues.parked, 2)
        yield service, ids
        for name in (queues.main, queues.parked):
            await channel.queue_delete(name)
    finally:
        await conn.close()


def test_dlq_list_and_show_print_the_parked_messages_as_json(
    settings: PlatformSettings, lot: tuple[str, list[str]]
) -> None:
    service, (first, second) = lot
    listed = run(settings, "dlq", "list", "--service", service, "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.stdout)
    assert [p["event_id"] for p in found] == [first, second]  # in the order they were parked
    one = found[0]
    assert one["service"] == service and one["event_type"] == "order.created"
    assert one["error"] == "ValueError: bad sku number 0" and one["attempts"] == 3
    assert one["correlation_id"] == "corr-0" and one["original_routing_key"] == "order.created"
    assert one["first_failure_at"] == "2026-01-02T12:00:00+00:00"  # UTC
    assert one["parked_at"].endswith("+00:00") and one["headers"][H_ERROR] == one["error"]
    assert "body" not in one

    filtered = run(settings, "dlq", "list", "-s", service, "--type", "payment.*", "--json")
    assert [p["event_id"] for p in json.loads(filtered.stdout)] == [second]

    shown = run(settings, "dlq", "show", second, "--service", service, "--json")
    assert shown.exit_code == 0, shown.output
    (whole,) = json.loads(shown.stdout)
    assert whole["event_id"] == second and whole["error"] == "ValueError: bad sku number 1"
    assert json.loads(whole["body"]) == {"seq": 1} and whole["body_bytes"] == len('{"seq": 1}')

    missing = run(settings, "dlq", "show", str(uuid.uuid4()), "--service", service, "--json")
    assert missing.exit_code == 1 and missing.stdout == ""  # exit code unchanged, no document
    nowhere = run(settings, "dlq", "list", "--service", f"nosuch_{uuid.uuid4().hex[:6]}", "--json")
    assert nowhere.exit_code == 2 and "no parking lot" in nowhere.stderr and nowhere.stdout == ""

    # they stay parked: what the dashboard reads is the same
    async def read() -> list[str]:
        conn = await aio_pika.connect(settings.amqp_url)
        try:
            with pytest.raises(UnknownParkingLotError):
                await parked_of(conn, ["nosuch_parking_lot"], None)
            return [p.event_id or "" for _, p in await parked_of(conn, [service], parked_filter())]
        finally:
            await conn.close()

    assert asyncio.run(read()) == [first, second]


async def test_status_reports_a_service_that_is_down_with_its_queues_and_outbox(
    settings: PlatformSettings, make_schema: SchemaFactory, lot: tuple[str, list[str]]
) -> None:
    service, _ = lot
    schema, pool = await make_schema("opsjson")
    await pool.execute(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, correlation_id, schema_version,"
        " occurred_at, body, created_at)"
        " VALUES ($1, 'order.created', 'o-1', 'c-1', 1, now(), '\\x7b7d', now() - interval '5s')",
        uuid.uuid4(),
    )
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        down = f"http://127.0.0.1:{a_closed_port()}"
        found = await platform_status(
            pool, conn, services=[service, schema], urls={service: down, schema: down},
            consuming=[service],
        )  # fmt: skip
    finally:
        await conn.close()
    consuming, with_outbox = found.of(service), found.of(schema)
    assert (consuming.live, consuming.ready, consuming.handled) == (False, False, None)
    assert (consuming.queue, consuming.consumers, consuming.parked) == (0, 0, 2)
    assert consuming.outbox is None  # no schema of that name
    assert (with_outbox.outbox, with_outbox.queue) == (1, None)
    assert with_outbox.outbox_oldest_s is not None and with_outbox.outbox_oldest_s >= 5
    doc = json.loads(json.dumps(found.to_json()))
    assert [r["service"] for r in doc["services"]] == [service, schema]


def test_status_json_says_down_for_every_service_it_cannot_reach(
    settings: PlatformSettings,
) -> None:
    down = f"http://127.0.0.1:{a_closed_port()}"
    urls = json.dumps(dict.fromkeys(PORTS, down))
    shown = run(settings, "status", "--json", EVENTSHOP_SERVICE_URLS=urls)
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)
    assert [r["service"] for r in rows] == list(PORTS)
    assert not any(r["ready"] or r["live"] for r in rows)
    # the session's vhost has none of the platform's queues: not read, not a crash
    assert rows[list(PORTS).index("inventory")]["queue"] is None


@pytest.fixture
async def store(make_schema: SchemaFactory) -> tuple[str, asyncpg.Pool, list[str]]:
    schema, pool = await make_schema("opsjson")
    await migrate(pool, [MIGRATIONS, "eventshop.services.orders.migrations"])
    confirmed = await place(pool, domain.StockReserved(), paid=True)
    cancelled = await place(pool, domain.StockRejected(reason="out_of_stock", skus=("MUG",)))
    return schema, pool, [confirmed, cancelled]


async def test_the_event_store_functions_read_what_was_appended(
    store: tuple[str, asyncpg.Pool, list[str]],
) -> None:
    _, pool, (confirmed, cancelled) = store
    stream = await ops_events.stream_events(pool, f"order-{confirmed}", to_version=2)
    assert [(e.version, e.event_type) for e in stream] == [(1, "OrderPlaced"), (2, "StockReserved")]
    log = await ops_events.log_events(pool, after=0, limit=3)
    assert [e.global_position for e in log.events] == [1, 2, 3] and not log.caught_up
    rest = await ops_events.log_events(pool, after=log.position)
    assert [e.global_position for e in rest.events] == [4, 5, 6, 7, 8] and rest.caught_up
    history = await ops_events.order_history(pool, cancelled, version=1)
    assert history is not None and history.as_of is not None
    assert [s.status for s in history.steps] == ["PENDING", "PENDING", "CANCELLED"]
    assert history.steps[-1].reason == "out_of_stock" and history.as_of.version == 1
    assert await ops_events.order_history(pool, "no-such-order") is None
    positions = await ops_events.projection_positions(pool)
    assert positions.head == 8 and all(p.position is None for p in positions.projections)


def test_events_commands_print_one_json_document_in_order(
    settings: PlatformSettings, store: tuple[str, asyncpg.Pool, list[str]]
) -> None:
    schema, _, (confirmed, cancelled) = store

    def events(*args: str) -> Any:
        done = run(settings, "events", "--schema", schema, *args)
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    stream = events("stream", f"order-{confirmed}", "--from-version", "1", "--json")
    assert [e["version"] for e in stream] == [2, 3, 4, 5]
    assert stream[-1]["event_type"] == "OrderConfirmed"
    assert all(e["recorded_at"].endswith("+00:00") and e["stream_id"] == f"order-{confirmed}"
               for e in stream)  # fmt: skip
    log = events("tail", "--from-position", "0", "--json")
    assert [e["global_position"] for e in log] == list(range(1, 9))
    placed = events("tail", "--from-position", "0", "--type", "OrderPlaced", "--json")
    assert [e["stream_id"] for e in placed] == [f"order-{confirmed}", f"order-{cancelled}"]
    history = events("history", cancelled, "--version", "1", "--json")
    assert history["order_id"] == cancelled and history["as_of_version"] == 1
    assert [
        (s["event_type"], s["status_after"], s["reason_after"]) for s in history["timeline"]
    ] == [
        ("OrderPlaced", "PENDING", None),
        ("StockRejected", "PENDING", None),
        ("OrderCancelled", "CANCELLED", "out_of_stock"),
    ]
    assert history["as_of"]["status"] == "PENDING"
    assert history["as_of"]["placed_at"].endswith("+00:00")
    projections = events("projections", "--json")
    assert projections["head"] == 8
    assert {p["projection"] for p in projections["projections"]} >= {"sales_per_sku"}
    missing = run(settings, "events", "--schema", schema, "stream", "order-nope", "--json")
    assert missing.exit_code == 1 and json.loads(missing.stdout) == []
