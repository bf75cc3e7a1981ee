"""`eventshop events ...` against the real PostgreSQL: a random schema migrated as orders',
filled with orders moved through the saga by orders' own handlers, read by the commands
(typer's runner, in this process; `--schema` points them at the test's schema).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from eventshop.cli.main import app
from eventshop.contracts.common import Line
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.db import create_pool, migrate
from eventshop.platform.eventstore import MIGRATIONS
from eventshop.platform.settings import PlatformSettings
from eventshop.services.orders import domain, handlers, store
from tests.conftest import SchemaFactory

pytestmark = pytest.mark.integration

PRICES = {"MUG": domain.Price("MUG", "Mug", 1_250, "EUR")}


async def place(pool: asyncpg.Pool, *steps: domain.SagaEvent, paid: bool = False) -> str:
    """An order, taken through `steps` (and paid, its own payment in full, when `paid`)."""
    order_id = str(uuid.uuid4())
    decision = domain.place(
        order_id=order_id,
        user_id="u-1",
        email="u-1@example.com",
        wanted=[Line(sku="MUG", quantity=2)],
        prices=PRICES,
        payment_token="tok_visa",
        now=datetime.now(UTC),
        timeout=timedelta(seconds=30),
    )
    async with UnitOfWork.begin(pool, service="orders") as uow:
        await store.record_new_orders(uow.conn, [(decision, uow.correlation_id)])
    if paid:
        payment = domain.PaymentSucceeded(
            payment_id=domain.payment_id_for(order_id), amount_minor=2_500, currency="EUR"
        )
        steps = (*steps, payment)
    for step in steps:
        async with UnitOfWork.begin(pool, service="orders") as uow:
            await handlers.advance(uow, order_id, step)
    return order_id


@pytest.fixture
async def filled(make_schema: SchemaFactory, settings: PlatformSettings) -> tuple[str, list[str]]:
    schema, pool = await make_schema("cli")
    await migrate(pool, [MIGRATIONS, "eventshop.services.orders.migrations"])
    confirmed = await place(pool, domain.StockReserved(), paid=True)
    cancelled = await place(pool, domain.StockRejected(reason="out_of_stock", skus=("MUG",)))
    return schema, [confirmed, cancelled]


def events(schema: str, settings: PlatformSettings, *args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(
        app,
        ["events", "--schema", schema, *args],
        env={"EVENTSHOP_DATABASE_URL": settings.database_url, "COLUMNS": "160"},
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_stream_tail_and_history(filled: tuple[str, list[str]], settings: PlatformSettings) -> None:
    schema, (confirmed, cancelled) = filled
    shown = events(schema, settings, "stream", f"order-{confirmed}", "--json")
    assert shown.exit_code == 0, shown.output
    assert [e["event_type"] for e in json.loads(shown.stdout)] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentRequested",
        "PaymentSucceeded",
        "OrderConfirmed",
    ]
    table = events(schema, settings, "stream", f"order-{confirmed}", "--from-version", "3")
    assert table.exit_code == 0 and "PaymentSucceeded" in table.stderr
    assert "OrderPlaced" not in table.stderr
    missing = events(schema, settings, "stream", "order-nope")
    assert missing.exit_code == 1 and "no events" in missing.stderr

    tail = events(schema, settings, "tail", "--last", "3", "--json")
    assert tail.exit_code == 0, tail.output
    last = json.loads(tail.stdout)
    assert [e["global_position"] for e in last] == [6, 7, 8]
    assert [e["stream_id"] for e in last] == [f"order-{cancelled}"] * 3
    placed = events(schema, settings, "tail", "--from-position", "0", "--type", "OrderPlaced")
    assert placed.exit_code == 0 and placed.stderr.count("OrderPlaced") == 2

    timeline = events(schema, settings, "history", confirmed, "--version", "3", "--json")
    assert timeline.exit_code == 0, timeline.output
    body = json.loads(timeline.stdout)
    assert [s["status_after"] for s in body["timeline"]] == [
        "PENDING",
        "PENDING",
        "AWAITING_PAYMENT",
        "AWAITING_PAYMENT",
        "CONFIRMED",
    ]
    assert (body["as_of"]["status"], body["as_of"]["version"]) == ("AWAITING_PAYMENT", 3)
    pretty = events(schema, settings, "history", cancelled)
    assert pretty.exit_code == 0 and "CANCELLED (out_of_stock)" in pretty.stderr


def test_projections_rebuild_and_check(
    filled: tuple[str, list[str]], settings: PlatformSettings
) -> None:
    schema, (confirmed, _) = filled
    before = events(schema, settings, "projections")
    assert before.exit_code == 0 and "not set up" in before.stderr

    asked = events(schema, settings, "rebuild", "sales_per_sku")  # nobody says yes: no swap
    assert asked.exit_code == 1 and "swap it in" in asked.stderr, asked.output
    assert "not set up" in events(schema, settings, "projections").stderr
    rebuilt = events(schema, settings, "rebuild", "sales_per_sku", "--yes")
    assert rebuilt.exit_code == 0, rebuilt.output
    (report,) = json_lines(rebuilt.stdout)
    assert report["swapped"] and report["position"] == 8
    assert report["events"] == 4  # 2 placed, 1 confirmed, 1 cancelled
    assert "rebuild sales_per_sku" in rebuilt.stderr  # the progress bar's label

    verified = events(schema, settings, "rebuild", "sales_per_sku", "--verify-only")
    assert verified.exit_code == 0, verified.output
    (check,) = json_lines(verified.stdout)
    assert (check["differences"], check["swapped"]) == (0, False)
    after = events(schema, settings, "projections")
    assert "sales_per_sku" in after.stderr and "not set up" in after.stderr  # orders_by_user
    unknown = events(schema, settings, "rebuild", "nope")
    assert unknown.exit_code == 2 and "orders_by_user, sales_per_sku" in unknown.stderr

    ok = events(schema, settings, "check")
    assert ok.exit_code == 0, ok.output
    assert json_lines(ok.stdout) == [{"orders": 2, "differing": []}]
    asyncio.run(_tamper(settings.database_url, schema, confirmed))
    bad = events(schema, settings, "check")
    assert bad.exit_code == 1
    assert json_lines(bad.stdout) == [{"orders": 2, "differing": [confirmed]}]
    assert "status: stream says 'CONFIRMED'" in bad.stderr


async def _tamper(dsn: str, schema: str, order_id: str) -> None:
    pool = await create_pool(dsn, schema, max_size=1)
    try:
        await pool.execute("UPDATE orders SET status = 'PENDING' WHERE order_id = $1", order_id)
    finally:
        await pool.close()


def test_a_schema_without_an_event_store_is_explained(
    settings: PlatformSettings, random_name: Any
) -> None:
    schema = random_name("nostore")
    try:
        result = events(schema, settings, "tail")
        assert result.exit_code == 2
        assert "has no event store" in result.stderr
    finally:
        asyncio.run(_drop(settings.database_url, schema))


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
