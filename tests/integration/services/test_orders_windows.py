"""orders takes a window's saga steps in one call (ADR 0016): however many events of stock
reserved or rejected and payment succeeded or failed a window holds, their orders are locked,
loaded, updated and appended to in four statements, and each order ends as it would have one
event at a time.

Real: PostgreSQL (a random schema per test, migrated), orders' routes (httpx ASGI transport) to
place the orders, and the service's own bound handler, called as the consumer calls it: one
transaction, each event with its own unit of work caused by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import httpx
import pytest

from eventshop.contracts import EventPayload
from eventshop.contracts.inventory import InventoryRejected
from eventshop.contracts.payments import PaymentFailed
from eventshop.platform.bus import BatchHandler
from eventshop.services.orders.domain import payment_id_for
from eventshop.services.orders.service import definition
from tests.integration.services import test_orders as orders_tests
from tests.integration.services.test_orders import (
    customer,
    orders_context,
    paid_in_full,
    place,
    read_model,
    reserved,
    stream_types,
)
from tests.support import services

pytestmark = pytest.mark.integration

SERVICE = orders_tests.SERVICE
MIGRATIONS = orders_tests.MIGRATIONS
make_client = orders_tests.make_client
client = orders_tests.client

SAGA_TYPES = ("inventory.reserved", "inventory.rejected", "payment.succeeded", "payment.failed")


async def deliver_window(pool: asyncpg.Pool, events: Sequence[EventPayload]) -> list[str]:
    return await services.deliver_window(orders_context(pool), events)


def test_the_four_saga_steps_share_one_handler() -> None:
    bound = definition.bind(orders_context(None))  # type: ignore[arg-type]
    assert len({id(bound[t]) for t in SAGA_TYPES}) == 1
    assert isinstance(bound["payment.succeeded"], BatchHandler)


async def test_a_window_of_steps_costs_four_statements_whatever_its_size(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    small = [await place(client, customer()) for _ in range(2)]
    large = [await place(client, customer()) for _ in range(12)]
    ran_small = await deliver_window(pool, [reserved(o) for o in small])
    ran_large = await deliver_window(pool, [reserved(o) for o in large])
    # lock the orders, load their streams, update their rows, append to their streams
    assert len(ran_small) == len(ran_large) == 4, ran_large
    outcomes = {await outcome(pool, o) for o in small + large}
    assert len(outcomes) == 1
    [(status, version, types, emitted)] = outcomes
    assert status == "AWAITING_PAYMENT" and version == len(types) > 1
    assert emitted == ("order.created", "payment.requested")


async def outcome(
    pool: asyncpg.Pool, order_id: str
) -> tuple[str, int, tuple[str, ...], tuple[str, ...]]:
    """An order's status and version, its stream's event types and what it put in the outbox."""
    row = await read_model(pool, order_id)
    emitted = await pool.fetch(
        "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY id", order_id
    )
    return (
        row["status"],
        row["version"],
        tuple(await stream_types(pool, order_id)),
        tuple(r["event_type"] for r in emitted),
    )


async def test_a_mixed_window_ends_each_order_as_one_event_at_a_time_would(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The same events, to two sets of orders: one at a time (a transaction each) and as one
    window; every order of the window ends as its twin did."""

    async def story(deliver_all: Callable[[list[EventPayload]], Awaitable[object]]) -> list[str]:
        to_pay, no_stock, declined, twice = [await place(client, customer()) for _ in range(4)]
        await deliver_all([reserved(to_pay), reserved(declined)])
        paid = await paid_in_full(pool, to_pay)
        await deliver_all([
            paid,
            InventoryRejected(order_id=no_stock, reason="out_of_stock", skus=("MUG",)),
            reserved(str(uuid.uuid4())),  # no such order here: nothing to do, the others go on
            PaymentFailed(
                payment_id=payment_id_for(declined), order_id=declined, reason="declined"
            ),
            reserved(twice),
            await paid_in_full(pool, twice),  # its second step, on the state the first left
            paid,  # again (the inbox would have stopped it): nothing to do
        ])  # fmt: skip
        return [to_pay, no_stock, declined, twice]

    async def one_at_a_time(events: list[EventPayload]) -> None:
        for event in events:
            await orders_tests.deliver(pool, event)

    async def as_one_window(events: list[EventPayload]) -> None:
        assert len(await deliver_window(pool, events)) == 4

    singles = await story(one_at_a_time)
    windowed = await story(as_one_window)
    expected = [await outcome(pool, o) for o in singles]
    assert [await outcome(pool, o) for o in windowed] == expected
    assert [e[0] for e in expected] == ["CONFIRMED", "CANCELLED", "CANCELLED", "CONFIRMED"]
