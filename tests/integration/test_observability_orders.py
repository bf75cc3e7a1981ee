"""orders' saga metrics against the real PostgreSQL: an outcome is counted once, when the step
that made the order final commits; never for a step rolled back, never for a late event.

Real: PostgreSQL (a random schema, migrated), the orders routes (httpx's ASGI transport, the
identity headers the gateway sets), its handlers run in units of work as the bus runs them,
its timeout scanner's pass. The bus node is never started.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from eventshop.contracts import EventPayload, new_envelope
from eventshop.contracts.catalog import ProductCreated
from eventshop.contracts.inventory import InventoryRejected
from eventshop.platform import eventstore
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.db import migrate
from eventshop.platform.service import build_app
from eventshop.platform.settings import PlatformSettings
from eventshop.services.orders import handlers
from eventshop.services.orders.service import definition
from eventshop.services.orders.settings import OrdersSettings
from tests.conftest import SchemaFactory
from tests.integration.services.test_orders import orders_context
from tests.support.identity import ProvenIdentity
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

WHO = {"X-User-Id": "u-obs", "X-User-Role": "customer", "X-User-Email": "u-obs@example.com"}


def outcomes(reason: str) -> float:
    labels = {"outcome": "cancelled", "reason": reason}
    return REGISTRY.get_sample_value("eventshop_saga_outcomes_total", labels) or 0.0


def durations(reason: str) -> float:
    labels = {"outcome": "cancelled", "reason": reason}
    return REGISTRY.get_sample_value("eventshop_saga_duration_seconds_count", labels) or 0.0


async def handle(pool: asyncpg.Pool, event: EventPayload, *, fail_after: bool = False) -> None:
    """The event's orders handler in its own unit of work, as the bus runs it."""
    env = new_envelope(event.event_type, event.schema_version, "agg", event.model_dump(mode="json"))
    handler = definition.bind(orders_context(pool))[event.event_type]
    async with UnitOfWork.begin(pool, service="orders") as uow:
        await handler(uow.caused_by(env), env, event)
        if fail_after:
            raise RuntimeError("the transaction rolls back after the saga step")


async def test_a_saga_outcome_is_counted_once_when_its_final_step_commits(
    make_schema: SchemaFactory, settings: PlatformSettings
) -> None:
    _, pool = await make_schema("orders")
    await migrate(pool, [eventstore.MIGRATIONS, "eventshop.services.orders.migrations"])
    sku = f"OBS-{uuid.uuid4().hex[:6]}"
    await handle(pool, ProductCreated(sku=sku, name="Mug", price_minor=500, currency="EUR"))

    async def place(timeout_s: float) -> str:
        app = build_app(definition, orders_context(pool, OrdersSettings(timeout_s=timeout_s)))
        transport = httpx.ASGITransport(app=app)
        proven = ProvenIdentity(app.state.identity_key)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://orders", auth=proven
        ) as c:
            r = await c.post("/orders", json={"lines": [{"sku": sku, "quantity": 1}]}, headers=WHO)
        assert r.status_code == 202, r.text
        return str(r.json()["order_id"])

    order_id = await place(timeout_s=60)
    rejected = InventoryRejected(order_id=order_id, reason="out_of_stock", skus=(sku,))
    before, before_n = outcomes("out_of_stock"), durations("out_of_stock")

    with pytest.raises(RuntimeError):
        await handle(pool, rejected, fail_after=True)
    assert outcomes("out_of_stock") == before  # the step was rolled back: nothing happened

    await handle(pool, rejected)
    assert outcomes("out_of_stock") == before + 1
    assert durations("out_of_stock") == before_n + 1

    await handle(pool, rejected)  # late: the order is already final
    assert outcomes("out_of_stock") == before + 1

    # the timeout scanner's steps are counted too, once its batch commits
    timed_out_before = outcomes("timeout")
    await place(timeout_s=0)
    scanner = orders_context(pool, OrdersSettings(timeout_s=0))
    await eventually(lambda: handlers.time_out_due_orders(scanner), 1, timeout=5)
    assert outcomes("timeout") == timed_out_before + 1
    assert await handlers.time_out_due_orders(scanner) == 0
    assert outcomes("timeout") == timed_out_before + 1
