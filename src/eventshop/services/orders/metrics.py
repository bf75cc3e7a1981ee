"""orders' saga metrics, exposed at /metrics with the platform's:

    eventshop_saga_outcomes_total{outcome, reason}      orders that reached a final state
    eventshop_saga_duration_seconds{outcome, reason}    from placing to that final state

outcome is confirmed or cancelled; reason is the cancellation's (out_of_stock,
payment_declined, fraud, timeout, ...) or "none". Counted after the commit of the step that
made the order final (`uow.after_commit`), so a batch that is rolled back and run again never
counts an outcome twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from eventshop.services.orders.domain import Order

SAGA_OUTCOMES = Counter(
    "eventshop_saga_outcomes_total",
    "Orders that reached a final state, by outcome and reason",
    ["outcome", "reason"],
)
SAGA_SECONDS = Histogram(
    "eventshop_saga_duration_seconds",
    "Time from placing an order to its final state",
    ["outcome", "reason"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)


def saga_finished(before: Order, after: Order) -> Callable[[], None] | None:
    """What to count once the step from `before` to `after` commits; None if not final."""
    if before.is_final or not after.is_final:
        return None
    outcome, reason = after.status.value.lower(), after.reason or "none"

    def count() -> None:
        SAGA_OUTCOMES.labels(outcome, reason).inc()
        placed = before.placed_at
        placed = placed if placed.tzinfo is not None else placed.replace(tzinfo=UTC)
        seconds = (datetime.now(UTC) - placed).total_seconds()
        SAGA_SECONDS.labels(outcome, reason).observe(max(0.0, seconds))

    return count
