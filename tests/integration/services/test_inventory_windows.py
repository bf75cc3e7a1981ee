"""inventory takes a window's run of order.created and order.confirmed in one call (ADR 0016):
five statements whatever the run's length, and the stock and the reservations end as the same
events one at a time leave them, short stock and duplicates included.

Real: PostgreSQL (a random schema per test, migrated) and the service's own bound handler,
called as the consumer calls it: one transaction, each event its own unit of work.
"""

from __future__ import annotations

import asyncpg
import pytest

from eventshop.contracts import EventPayload
from eventshop.platform.bus import BatchHandler
from eventshop.platform.service import AnyContext
from eventshop.services.inventory.service import definition
from tests.integration.services import test_inventory as inventory_tests
from tests.integration.services.test_inventory import (
    confirmed,
    created,
    deliver,
    levels,
    new_order_id,
    outbox,
    restock,
)
from tests.support import services

pytestmark = pytest.mark.integration

SERVICE = inventory_tests.SERVICE
MIGRATIONS = inventory_tests.MIGRATIONS


def test_reserving_and_selling_share_one_batch_handler(context: AnyContext) -> None:
    bound = definition.bind(context)
    assert bound["order.created"] is bound["order.confirmed"]
    assert isinstance(bound["order.created"], BatchHandler)


async def statuses(pool: asyncpg.Pool, order_ids: list[str]) -> list[str | None]:
    rows = await pool.fetch(
        "SELECT order_id, status FROM reservations WHERE order_id = ANY($1::text[])", order_ids
    )
    found = {r["order_id"]: r["status"] for r in rows}
    return [found.get(o) for o in order_ids]


async def test_a_run_costs_five_statements_whatever_its_length(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    await restock(context, "MUG", 100)
    await restock(context, "TEE", 100)
    few = [new_order_id() for _ in range(2)]
    many = [new_order_id() for _ in range(12)]
    ran_few = await services.deliver_window(context, [created(o, ("MUG", 1)) for o in few])
    ran_many = await services.deliver_window(
        context, [created(o, ("MUG", 2), ("TEE", 1)) for o in many]
    )
    ran_sell = await services.deliver_window(
        context, [confirmed(o, ("MUG", 2), ("TEE", 1)) for o in many]
    )
    # claim, (lock the confirmed orders' reservations,) lock the stock, move it, set statuses
    assert (len(ran_few), len(ran_many), len(ran_sell)) == (4, 4, 4), ran_few
    assert await levels(pool, "MUG") == (100 - 2 - 24, 2, 24, 100)
    assert await levels(pool, "TEE") == (100 - 12, 0, 12, 100)
    assert await statuses(pool, few + many) == ["reserved"] * 2 + ["committed"] * 12


async def test_a_window_ends_the_stock_as_one_event_at_a_time_would(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    """The same story twice, on two skus of its own each time: one event per transaction, then
    as windows; the stock, the reservations and the events emitted end the same."""

    async def story(tag: str, as_window: bool) -> tuple[object, ...]:
        mug, tee = f"MUG-{tag}", f"TEE-{tag}"
        await restock(context, mug, 5)
        await restock(context, tee, 1)
        first, second, third, late, dup = (new_order_id() for _ in range(5))
        windows: list[list[EventPayload]] = [
            [
                created(first, (mug, 2), (tee, 1)),
                created(second, (tee, 1)),  # the tee is gone: rejected, nothing reserved
                created(third, (mug, 3)),  # takes the last mugs
                created(late, (mug, 1)),  # none left: rejected
                created(dup, (mug, 0 + 1)),  # none left either
                confirmed(first, (mug, 2), (tee, 1)),  # its own reservation, same window
            ],
            [
                created(first, (mug, 2), (tee, 1)),  # again: a duplicate reserves nothing
                confirmed(third, (mug, 3)),
                confirmed(third, (mug, 3)),  # again: sold once
                confirmed(second, (tee, 1)),  # never reserved: nothing to sell
            ],
        ]
        before = len(await outbox(pool))
        for window in windows:
            if as_window:
                await services.deliver_window(context, window)
            else:
                for event in window:
                    await deliver(context, event)
        # what was emitted, the skus named as this story's own
        emitted = [
            (t, p.model_dump_json(exclude={"order_id"}).replace(tag, ""))
            for t, p in (await outbox(pool))[before:]
        ]
        ids = [first, second, third, late, dup]
        return (
            await levels(pool, mug),
            await levels(pool, tee),
            await statuses(pool, ids),
            emitted,
        )

    one_at_a_time = await story("single", as_window=False)
    as_windows = await story("window", as_window=True)
    assert as_windows == one_at_a_time
    assert one_at_a_time[:3] == (
        (0, 0, 5, 5),
        (0, 0, 1, 1),
        ["committed", "rejected", "committed", "rejected", "rejected"],
    )
