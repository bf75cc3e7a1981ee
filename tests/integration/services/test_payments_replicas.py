"""Two replicas of payments, each handling a window of two payment requests in one transaction,
for the same two customers in opposite orders (real PostgreSQL; the service's own handlers):
each request takes its customer's velocity lock (the fraud rule counts a customer's recent
requests under it). With the window's locks taken first in one order (`lock_first`, ADR 0012)
both windows commit; without it, PostgreSQL finds a deadlock."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventshop.contracts import EventPayload
from eventshop.contracts.orders import OrderCancelled
from eventshop.platform.service import AnyContext
from eventshop.services.payments import handlers
from eventshop.services.payments.service import definition
from tests.integration.services.test_payments import request
from tests.support.services import deliver, handle_window, statements_run

pytestmark = pytest.mark.integration

SERVICE = "payments"
MIGRATIONS = "eventshop.services.payments.migrations"


def cancellation(order_id: str, user_id: str, *, stock_reserved: bool) -> OrderCancelled:
    """orders' cancellation of `order_id` (timed out), as payments receives it."""
    return OrderCancelled(
        order_id=order_id,
        user_id=user_id,
        email=f"{user_id}@example.com",
        reason="timeout",
        stock_reserved=stock_reserved,
        lines=(),
    )


def windows() -> tuple[list[EventPayload], list[EventPayload]]:
    return (
        [request(user_id="ann"), request(user_id="bob")],
        [request(user_id="bob"), request(user_id="ann")],
    )


async def test_windows_of_two_replicas_lock_in_one_order_and_never_deadlock(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    one, other = windows()
    await asyncio.gather(
        handle_window(context, one, first=True),
        handle_window(context, other, first=True),
    )
    assert await pool.fetchval("SELECT count(*) FROM payments") == 4
    assert definition.lock_first is handlers.lock_window  # what the runtime gives the window


async def test_without_it_the_same_windows_deadlock(context: AnyContext) -> None:
    one, other = windows()
    results = await asyncio.gather(
        handle_window(context, one, first=False),
        handle_window(context, other, first=False),
        return_exceptions=True,
    )
    assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results


async def test_a_cancellation_and_a_request_of_one_order_lock_its_row_first(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    """The payment rows a window touches are locked by the hook too (a cancellation's)."""
    paid = request(user_id="cy")
    await deliver(context, paid)
    cancel = cancellation(paid.order_id, "cy", stock_reserved=True)
    async with pool.acquire() as holder, holder.transaction():
        await handlers.lock_window(holder, [cancel])
        async with pool.acquire() as other:
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute(
                    "SELECT 1 FROM payments WHERE order_id = $1 FOR UPDATE NOWAIT", paid.order_id
                )


async def test_a_window_of_cancellations_takes_no_velocity_lock(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    """No payment request in the window: no user to screen, and no statement over an empty
    list of users (a round trip for nothing)."""
    cancel = cancellation("o-none", "dee", stock_reserved=False)
    async with pool.acquire() as conn, conn.transaction():
        with statements_run(conn) as ran:
            await handlers.lock_window(conn, [cancel])
            await handlers.lock_window(conn, [request(user_id="dee")])
    assert len(ran) == 3, ran  # the cancellation's row lock; then the request's two
    assert "FOR UPDATE" in ran[0] and "advisory" not in ran[0]
    assert "pg_advisory_xact_lock" in ran[1] and "FOR UPDATE" in ran[2]
