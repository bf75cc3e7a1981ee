"""The order saga as tables: state + event -> new state + recorded + emitted (docs/DESIGN.md §3).

Pure: no I/O, nothing faked; the orders in each state are built by replaying their history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from eventshop.contracts import EventPayload
from eventshop.contracts import orders as integration
from eventshop.contracts.common import Line
from eventshop.services.orders import domain
from eventshop.services.orders.domain import (
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    PaymentFailed,
    PaymentRequested,
    PaymentSucceeded,
    Status,
    StockRejected,
    StockReserved,
    TimedOut,
)

PLACED_AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DEADLINE = PLACED_AT + timedelta(seconds=30)
LINES = (
    Line(sku="SKU-A", quantity=2, unit_price_minor=1_250),
    Line(sku="SKU-B", quantity=1, unit_price_minor=500),
)
PLACED = OrderPlaced(
    order_id="o-1",
    user_id="u-1",
    email="ada@example.com",
    lines=LINES,
    total_minor=3_000,
    currency="EUR",
    payment_token="tok_visa",
    placed_at=PLACED_AT,
    deadline=DEADLINE,
)
#: the payment order o-1 asks for (named by the order, the same on every retry)
PAYMENT_ID = domain.payment_id_for("o-1")
REQUESTED = PaymentRequested(
    amount_minor=3_000, currency="EUR", payment_token="tok_visa", payment_id=PAYMENT_ID
)
SUCCEEDED = PaymentSucceeded(payment_id=PAYMENT_ID, amount_minor=3_000)
DECLINED = PaymentFailed(payment_id=PAYMENT_ID, reason="payment_declined", detail="card_declined")
FRAUD = PaymentFailed(
    payment_id=PAYMENT_ID, reason="fraud", detail="email domain fraud.test is blocked"
)
OUT_OF_STOCK = StockRejected(reason="out_of_stock", skus=("SKU-A",))
UNKNOWN_SKU = StockRejected(reason="unknown_sku", skus=("SKU-B",))
LATE = TimedOut(at=DEADLINE + timedelta(milliseconds=1))
EARLY = TimedOut(at=DEADLINE - timedelta(seconds=1))

HISTORIES: dict[str, tuple[domain.DomainEvent, ...]] = {
    "pending": (PLACED,),
    "awaiting_payment": (PLACED, StockReserved(), REQUESTED),
    "confirmed": (PLACED, StockReserved(), REQUESTED, SUCCEEDED, OrderConfirmed()),
    "cancelled_out_of_stock": (
        PLACED,
        OUT_OF_STOCK,
        OrderCancelled(reason="out_of_stock", stock_reserved=False),
    ),
    "cancelled_declined": (
        PLACED,
        StockReserved(),
        REQUESTED,
        DECLINED,
        OrderCancelled(reason="payment_declined", stock_reserved=True),
    ),
    "cancelled_timeout": (
        PLACED,
        StockReserved(),
        REQUESTED,
        LATE,
        OrderCancelled(reason="timeout", stock_reserved=True),
    ),
}


def order(state: str) -> domain.Order:
    built = domain.replay(HISTORIES[state])
    assert built is not None
    return built


def cancelled(reason: integration.CancelReason, stock_reserved: bool) -> integration.OrderCancelled:
    return integration.OrderCancelled(
        order_id="o-1",
        user_id="u-1",
        email="ada@example.com",
        reason=reason,
        stock_reserved=stock_reserved,
        lines=LINES,
    )


PAYMENT_REQUESTED = integration.PaymentRequested(
    order_id="o-1",
    user_id="u-1",
    email="ada@example.com",
    amount_minor=3_000,
    currency="EUR",
    payment_token="tok_visa",
    payment_id=PAYMENT_ID,
)
ORDER_CONFIRMED = integration.OrderConfirmed(
    order_id="o-1",
    user_id="u-1",
    email="ada@example.com",
    total_minor=3_000,
    currency="EUR",
    lines=LINES,
)


class Step(NamedTuple):
    """One row of the table: an order in `state` gets `event`."""

    state: str
    event: domain.SagaEvent
    status: Status
    reason: str | None
    recorded: tuple[domain.DomainEvent, ...]
    emitted: tuple[EventPayload, ...]


TRANSITIONS: list[Step] = [
    Step("pending", StockReserved(), Status.AWAITING_PAYMENT, None,
         (StockReserved(), REQUESTED), (PAYMENT_REQUESTED,)),
    Step("pending", OUT_OF_STOCK, Status.CANCELLED, "out_of_stock",
         (OUT_OF_STOCK, OrderCancelled(reason="out_of_stock", stock_reserved=False)),
         (cancelled("out_of_stock", False),)),
    Step("pending", UNKNOWN_SKU, Status.CANCELLED, "unknown_sku",
         (UNKNOWN_SKU, OrderCancelled(reason="unknown_sku", stock_reserved=False)),
         (cancelled("unknown_sku", False),)),
    Step("awaiting_payment", SUCCEEDED, Status.CONFIRMED, None,
         (SUCCEEDED, OrderConfirmed()), (ORDER_CONFIRMED,)),
    Step("awaiting_payment", DECLINED, Status.CANCELLED, "payment_declined",
         (DECLINED, OrderCancelled(reason="payment_declined", stock_reserved=True)),
         (cancelled("payment_declined", True),)),
    Step("awaiting_payment", FRAUD, Status.CANCELLED, "fraud",
         (FRAUD, OrderCancelled(reason="fraud", stock_reserved=True)),
         (cancelled("fraud", True),)),
    # timeouts from each non-final state: compensate exactly what was done
    Step("pending", LATE, Status.CANCELLED, "timeout",
         (LATE, OrderCancelled(reason="timeout", stock_reserved=False)),
         (cancelled("timeout", False),)),
    Step("awaiting_payment", LATE, Status.CANCELLED, "timeout",
         (LATE, OrderCancelled(reason="timeout", stock_reserved=True)),
         (cancelled("timeout", True),)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("state", "event", "status", "reason", "recorded", "emitted"),
    TRANSITIONS,
    ids=[f"{t.state}+{type(t.event).__name__}->{t.status.value}" for t in TRANSITIONS],
)
def test_transition(
    state: str,
    event: domain.SagaEvent,
    status: Status,
    reason: str | None,
    recorded: tuple[domain.DomainEvent, ...],
    emitted: tuple[EventPayload, ...],
) -> None:
    before = order(state)
    decision = domain.decide(before, event)
    assert decision.state.status == status
    assert decision.state.reason == reason
    assert decision.record == recorded
    assert decision.emit == emitted
    assert decision.state.version == before.version + len(recorded)
    # the state after deciding is the state a replay of the stream rebuilds
    assert domain.replay((*HISTORIES[state], *decision.record)) == decision.state


NOTHING_HAPPENS: list[tuple[str, domain.SagaEvent]] = [
    # a timeout before the deadline is not one
    ("pending", EARLY),
    ("awaiting_payment", EARLY),
    # duplicates and events out of place in running states
    ("awaiting_payment", StockReserved()),
    ("awaiting_payment", OUT_OF_STOCK),
    ("pending", SUCCEEDED),
    ("pending", DECLINED),
    # late or duplicate events after a final state
    *[
        (final, event)
        for final in (
            "confirmed",
            "cancelled_out_of_stock",
            "cancelled_declined",
            "cancelled_timeout",
        )
        for event in (StockReserved(), OUT_OF_STOCK, SUCCEEDED, DECLINED, FRAUD, LATE)
    ],
]


@pytest.mark.parametrize(
    ("state", "event"),
    NOTHING_HAPPENS,
    ids=[f"{s}+{type(e).__name__}" for s, e in NOTHING_HAPPENS],
)
def test_nothing_happens(state: str, event: domain.SagaEvent) -> None:
    before = order(state)
    decision = domain.decide(before, event)
    assert decision == domain.Decision(before, (), ())


def test_a_full_confirmed_run_emits_payment_requested_then_order_confirmed() -> None:
    placed = order("pending")
    step1 = domain.decide(placed, StockReserved())
    step2 = domain.decide(step1.state, SUCCEEDED)
    assert [type(e) for e in step1.emit + step2.emit] == [
        integration.PaymentRequested,
        integration.OrderConfirmed,
    ]
    assert step2.state.status == Status.CONFIRMED
    assert step2.state.payment_id == PAYMENT_ID
    assert step2.state.version == 5


def test_a_stream_must_start_with_order_placed() -> None:
    with pytest.raises(domain.UnknownOrderStreamError):
        domain.replay([StockReserved()])
    assert domain.replay([]) is None


def test_every_domain_event_round_trips_through_its_stored_form() -> None:
    for history in HISTORIES.values():
        for event in history:
            kind = domain.DOMAIN_EVENTS[event.type_name()]
            assert kind.model_validate(event.model_dump(mode="json")) == event


# -- a payment result must be about the payment the order asked for -----------------------------
@pytest.mark.parametrize(
    "result, wrong",
    [
        (PaymentSucceeded(payment_id="forged-by-loyalty", amount_minor=3_000), "payment"),
        (PaymentSucceeded(payment_id=PAYMENT_ID, amount_minor=1), "amount 1"),
        (PaymentSucceeded(payment_id=PAYMENT_ID, amount_minor=3_000, currency="USD"), "currency"),
        (PaymentFailed(payment_id="another", reason="payment_declined"), "payment"),
    ],
    ids=["other payment id", "other amount", "other currency", "failure of another payment"],
)
def test_a_foreign_payment_result_is_refused_and_changes_nothing(
    result: domain.SagaEvent, wrong: str
) -> None:
    before = order("awaiting_payment")
    with pytest.raises(domain.ForeignPaymentError, match=wrong):
        domain.decide(before, result)
    assert before.status == Status.AWAITING_PAYMENT


def test_the_order_remembers_which_payment_it_asked_for() -> None:
    assert order("awaiting_payment").requested_payment_id == PAYMENT_ID
    assert PAYMENT_ID == domain.payment_id_for("o-1") != domain.payment_id_for("o-2")


def test_an_order_that_asked_before_payments_were_named_still_checks_the_amount() -> None:
    legacy_request = REQUESTED.model_copy(update={"payment_id": None})
    before = domain.replay([PLACED, StockReserved(), legacy_request])
    assert before is not None and before.requested_payment_id is None
    confirmed = domain.decide(before, PaymentSucceeded(payment_id="any", amount_minor=3_000))
    assert confirmed.state.status == Status.CONFIRMED
    with pytest.raises(domain.ForeignPaymentError, match="amount"):
        domain.decide(before, PaymentSucceeded(payment_id="any", amount_minor=2_999))
