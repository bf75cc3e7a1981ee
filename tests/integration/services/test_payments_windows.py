"""payments screens a window's payment requests in one call, and its charge job records the
provider's answers in batches (ADR 0016). Screening costs three statements whatever the
window's size, and judges each request as one at a time would: the velocity rule counts the
requests before it in the same window, a duplicate or a tombstoned order is ignored, a fraud is
refused at once. The answers each keep their order's chain.

Real: PostgreSQL (a random schema per test, migrated), the service's own bound handler called
as the consumer calls it (one transaction, each event its own unit of work), and its charge job
against the simulated provider.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventshop.contracts.orders import PaymentRequested
from eventshop.platform.service import AnyContext
from eventshop.services.payments import handlers, jobs
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


async def test_the_charge_jobs_answers_are_recorded_together_each_in_its_orders_chain(
    context: AnyContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve payments claimed at once, the provider answering at once (a decline among them):
    the answers that come in while a batch is being recorded go in the next one, so far fewer
    transactions than payments, and each event still names its own order's chain."""
    batches: list[int] = []
    settle = handlers.settle_charges

    async def counted(ctx: AnyContext, outcomes: Any) -> list[bool]:
        batches.append(len(outcomes))
        return await settle(ctx, outcomes)

    monkeypatch.setattr(handlers, "settle_charges", counted)
    reqs = [
        request(user_id=f"u-{i}", token="tok_decline" if i == 5 else "tok_visa") for i in range(12)
    ]
    causes = [await deliver(context, r, correlation_id=f"corr-{i}") for i, r in enumerate(reqs)]
    assert await jobs.charge_due_payments(context) == 12
    assert sum(batches) == 12 and len(batches) <= 3, batches
    for i, (req, cause) in enumerate(zip(reqs, causes, strict=True)):
        row = await payment_of(context.pool, req.order_id)
        [said] = await outbox(context.pool, req.order_id)
        assert row["status"] == ("failed" if i == 5 else "captured")
        assert said.event_type == ("payment.failed" if i == 5 else "payment.succeeded")
        assert (said.correlation_id, said.causation_id) == (f"corr-{i}", str(cause.event_id))
