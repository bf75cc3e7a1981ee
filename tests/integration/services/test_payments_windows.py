"""payments screens a window's payment requests in one call (ADR 0016): three statements
whatever the window's size, and each request judged as one at a time would judge it: the
velocity rule counts the requests before it in the same window, a duplicate or a tombstoned
order is ignored, a fraud is refused at once.

Real: PostgreSQL (a random schema per test, migrated) and the service's own bound handler,
called as the consumer calls it: one transaction, each event its own unit of work.
"""

from __future__ import annotations

import pytest

from eventshop.contracts.orders import PaymentRequested
from eventshop.platform.service import AnyContext
from tests.integration.services import test_payments as payments_tests
from tests.integration.services.test_payments import (
    cancel,
    deliver,
    outbox,
    payment_of,
    request,
)
from tests.support import services

pytestmark = pytest.mark.integration

SERVICE = payments_tests.SERVICE
MIGRATIONS = payments_tests.MIGRATIONS
context = payments_tests.context
provider = payments_tests.provider


async def test_a_window_of_requests_is_judged_as_one_at_a_time_in_three_statements(
    context: AnyContext,
) -> None:
    """The same story for two users: one request per transaction, then as one window (the
    quick settings: more than 3 requests a minute is fraud)."""

    async def story(user: str, as_window: bool) -> list[tuple[str, str | None, list[str]]]:
        tombstoned = request(user_id=f"{user}-other")
        await deliver(context, cancel(tombstoned.order_id, user_id=tombstoned.user_id))
        first = request(user_id=user)
        window: list[PaymentRequested] = [
            first,
            request(user_id=user),
            first,  # again, under another event id: ignored
            tombstoned,  # cancelled before it asked: ignored
            request(user_id=user, amount=10_000_000),  # over the amount limit: fraud
            request(user_id=user),  # the fourth of the minute: fraud by velocity
            request(user_id=f"{user}-calm"),
        ]
        if as_window:
            assert len(await services.deliver_window(context, window)) == 3
        else:
            for event in window:
                await deliver(context, event)
        seen = []
        for event in window:
            row = await payment_of(context.pool, event.order_id)
            said = [e.event_type for e in await outbox(context.pool, event.order_id)]
            seen.append((row["status"], row["failure_reason"], said))
        return seen

    one_at_a_time = await story("single", as_window=False)
    as_window = await story("window", as_window=True)
    assert as_window == one_at_a_time
    assert [s[:2] for s in one_at_a_time] == [
        ("pending", None),
        ("pending", None),
        ("pending", None),
        ("voided", None),
        ("failed", "fraud"),
        ("failed", "fraud"),
        ("pending", None),
    ]
