"""loyalty awards a window's confirmed orders in one call (ADR 0016): two statements whatever
the window's size, and every PointsAwarded says the balance right after its own award, as one
award at a time would.

Real: PostgreSQL (a random schema per test, migrated) and the service's own bound handler,
called as the consumer calls it: one transaction, each event its own unit of work.
"""

from __future__ import annotations

import pytest

from eventshop.platform.service import AnyContext
from tests.integration.services.test_loyalty import awarded, confirmed
from tests.support import services

pytestmark = pytest.mark.integration

SERVICE = "loyalty"
MIGRATIONS = "eventshop.services.loyalty.migrations"


async def test_a_window_of_awards_costs_two_statements_and_each_says_its_own_balance(
    context: AnyContext,
) -> None:
    ann, bob = "user-ann", "user-bob"
    first = confirmed(ann, 10_00)
    window = [
        first,
        confirmed(bob, 5_00),
        confirmed(ann, 20_00),
        first,  # the same order again (re-published): awarded once
        confirmed(ann, 1_00),
    ]
    ran = await services.deliver_window(context, window)
    assert len(ran) == 2, ran
    later = [confirmed(bob, 7_00), first]
    assert len(await services.deliver_window(context, later)) == 2
    got = [(p.user_id, p.order_id, p.points, p.balance) for _, p in await awarded(context.pool)]
    assert got == [
        (ann, first.order_id, 10, 10),
        (bob, window[1].order_id, 5, 5),
        (ann, window[2].order_id, 20, 30),
        (ann, window[4].order_id, 1, 31),
        (bob, later[0].order_id, 7, 12),
    ]
