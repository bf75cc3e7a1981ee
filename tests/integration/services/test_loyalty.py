"""loyalty against the real PostgreSQL: its handler and its route.

Real: PostgreSQL (a random schema per test, migrated). The handler runs as the bus runs it (the
service's own handler table, bound to the service's context, one transaction with the outbox);
the route goes through httpx's ASGI transport. The bus node is never started.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from eventshop.contracts.loyalty import PointsAwarded
from eventshop.contracts.orders import OrderConfirmed
from eventshop.platform.service import AnyContext
from tests.support.services import deliver, outbox_events

pytestmark = pytest.mark.integration

SERVICE = "loyalty"
MIGRATIONS = "eventshop.services.loyalty.migrations"


def confirmed(user_id: str, total_minor: int, order_id: str | None = None) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id or f"order-{uuid.uuid4().hex[:12]}",
        user_id=user_id,
        email=f"{user_id}@example.com",
        total_minor=total_minor,
        currency="EUR",
        lines=(),
    )


async def awarded(pool: asyncpg.Pool) -> list[tuple[str, PointsAwarded]]:
    events = await outbox_events(pool)
    assert all(isinstance(e, PointsAwarded) for _, e in events)
    return [(t, e) for t, e in events if isinstance(e, PointsAwarded)]


async def test_a_confirmed_order_earns_points_and_says_so(
    context: AnyContext, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    first = await deliver(context, confirmed("ann", 12_345))
    await deliver(context, confirmed("ann", 1_000))

    r = await client.get("/points", headers={"X-User-Id": "ann"})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "ann"
    assert body["points"] == 123 + 10
    assert sorted(a["points"] for a in body["history"]) == [10, 123]

    events = await awarded(pool)
    assert [t for t, _ in events] == ["loyalty.points_awarded"] * 2
    assert (events[0][1].points, events[0][1].balance) == (123, 123)
    assert (events[1][1].user_id, events[1][1].balance) == ("ann", 133)
    assert first.event_type == "order.confirmed"


async def test_the_same_order_confirmed_twice_is_awarded_once(
    context: AnyContext, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    order = confirmed("bob", 5_000)
    await deliver(context, order)
    await deliver(context, order)  # another event id: the inbox would not stop it

    r = await client.get("/points", headers={"X-User-Id": "bob"})
    assert r.json()["points"] == 50
    assert len(r.json()["history"]) == 1
    assert [t for t, _ in await awarded(pool)] == ["loyalty.points_awarded"]


async def test_points_are_the_callers_own_and_need_a_caller(
    context: AnyContext, client: httpx.AsyncClient
) -> None:
    await deliver(context, confirmed("carl", 900))

    other = await client.get("/points", headers={"X-User-Id": "dora"})
    assert other.status_code == 200
    assert other.json() == {"user_id": "dora", "points": 0, "history": []}

    anonymous = await client.get("/points")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
