"""Two replicas of loyalty, each handling a window of two confirmed orders in one transaction,
awarding points to the same two users in opposite orders (real PostgreSQL): with the window's
balances locked first in user order (`lock_first`, ADR 0012) both commit and every point is
counted; without it, PostgreSQL finds a deadlock. The same for users who have no balance yet,
whose rows the two windows would create in opposite orders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest

from eventshop.contracts.orders import OrderConfirmed
from eventshop.services.loyalty import domain, handlers, store
from eventshop.services.loyalty.service import definition
from tests.integration.services.test_loyalty import confirmed

pytestmark = pytest.mark.integration

SERVICE = "loyalty"
MIGRATIONS = "eventshop.services.loyalty.migrations"


async def window(pool: asyncpg.Pool, payloads: Sequence[OrderConfirmed], *, first: bool) -> None:
    """What WindowRunner does with a window: one transaction, the locks first (or not), then
    each event's award, in the window's order (slowly, so the two windows interleave)."""
    async with pool.acquire() as conn, conn.transaction():
        if first:
            await handlers.lock_window(conn, payloads)
        for p in payloads:
            await store.record_award(conn, p.order_id, p.user_id, domain.points_for(p.total_minor))
            await asyncio.sleep(0.3)


def windows(ann: str, bob: str) -> tuple[list[OrderConfirmed], list[OrderConfirmed]]:
    one = [confirmed(ann, 1_000), confirmed(bob, 2_000)]
    other = [confirmed(bob, 3_000), confirmed(ann, 4_000)]
    return one, other


async def existing_users(pool: asyncpg.Pool) -> tuple[str, str]:
    ann, bob = f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    async with pool.acquire() as conn:
        await store.record_award(conn, f"order-{ann}", ann, 1)
        await store.record_award(conn, f"order-{bob}", bob, 1)
    return ann, bob


def new_users() -> tuple[str, str]:
    return f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"


@pytest.mark.parametrize("users", ["existing", "new"])
async def test_windows_of_two_replicas_lock_in_one_order_and_never_deadlock(
    pool: asyncpg.Pool, users: str
) -> None:
    ann, bob = await existing_users(pool) if users == "existing" else new_users()
    before = 1 if users == "existing" else 0
    one, other = windows(ann, bob)
    await asyncio.gather(window(pool, one, first=True), window(pool, other, first=True))
    async with pool.acquire() as conn:
        assert (await store.balance_of(conn, ann))[0] == before + 10 + 40
        assert (await store.balance_of(conn, bob))[0] == before + 20 + 30
    assert definition.lock_first is handlers.lock_window  # what the runtime gives the window


@pytest.mark.parametrize("users", ["existing", "new"])
async def test_without_it_the_same_windows_deadlock(pool: asyncpg.Pool, users: str) -> None:
    ann, bob = await existing_users(pool) if users == "existing" else new_users()
    one, other = windows(ann, bob)
    results = await asyncio.gather(
        window(pool, one, first=False), window(pool, other, first=False), return_exceptions=True
    )
    assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results
