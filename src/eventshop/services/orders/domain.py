"""The order and its saga (docs/DESIGN.md §3): pure, no I/O.

An order is event-sourced: its stream holds *domain* events in orders' own words (`OrderPlaced`,
`StockReserved`, ...), distinct from the *integration* events it publishes (eventshop.contracts,
`order.created`, ...), so the stream can say more, or differently, without changing a contract.

The saga is `decide(order, event) -> Decision(state, record, emit)`:

    PENDING          --StockReserved-->    AWAITING_PAYMENT, emit payment.requested
    PENDING          --StockRejected-->    CANCELLED(out_of_stock | unknown_sku),
                                           emit order.cancelled (stock_reserved=false)
    AWAITING_PAYMENT --PaymentSucceeded--> CONFIRMED, emit order.confirmed
    AWAITING_PAYMENT --PaymentFailed-->    CANCELLED(payment_declined | fraud),
                                           emit order.cancelled (stock_reserved=true)
    any non-final    --TimedOut-->         CANCELLED(timeout),
                                           emit order.cancelled (stock_reserved as it was)

`record` is what to append to the stream: the fact that came in, then the decision it led to
(`PaymentRequested`, `OrderConfirmed`, `OrderCancelled`). `state` is those events folded by
`evolve`, which also rebuilds an order from its stream, so a decision's state and a replay's
can't disagree. Anything else (a late or duplicate fact, an event out of place) does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from eventshop.contracts import EventPayload
from eventshop.contracts import orders as integration
from eventshop.contracts.common import Line
from eventshop.contracts.orders import CancelReason


class Status(StrEnum):
    PENDING = "PENDING"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


FINAL: frozenset[Status] = frozenset({Status.CONFIRMED, Status.CANCELLED})
RUNNING: frozenset[Status] = frozenset(Status) - FINAL


# -- domain events: what the order's stream records -----------------------------------------------
class DomainEvent(BaseModel):
    """A fact in an order's stream; its class name is its type in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


class OrderPlaced(DomainEvent):
    order_id: str
    user_id: str
    email: str
    lines: tuple[Line, ...] = Field(min_length=1)
    total_minor: int = Field(ge=0)
    currency: str
    payment_token: str
    placed_at: datetime
    #: when the saga gives up and cancels it (docs/DESIGN.md §3: final within its timeout)
    deadline: datetime


class StockReserved(DomainEvent):
    """Inventory reserved every line."""


class StockRejected(DomainEvent):
    """Inventory could not reserve the lines."""

    reason: Literal["out_of_stock", "unknown_sku"]
    skus: tuple[str, ...] = ()


class PaymentRequested(DomainEvent):
    """The order asked payments to charge it, as payment `payment_id` (None in streams written
    before the order named its payment)."""

    amount_minor: int = Field(ge=0)
    currency: str
    payment_token: str
    payment_id: str | None = None


class PaymentSucceeded(DomainEvent):
    """Payments captured the order's payment.

    v2 records the captured amount as money (amount and currency); v1 had the amount only, and
    reads as v2 with `currency` None, "not recorded" (eventshop.services.orders.eventlog).
    """

    schema_version: ClassVar[int] = 2

    payment_id: str
    amount_minor: int = Field(ge=0)
    currency: str | None = None


PaymentFailureReason = Literal["payment_declined", "fraud"]


class PaymentFailed(DomainEvent):
    """Payments did not take the payment, in the order's terms (declined or fraud)."""

    payment_id: str
    reason: PaymentFailureReason
    detail: str = ""


class TimedOut(DomainEvent):
    """The order's deadline passed while it was still running."""

    at: datetime


class OrderConfirmed(DomainEvent):
    pass


class OrderCancelled(DomainEvent):
    reason: CancelReason
    #: whether stock was held for it when it was cancelled (inventory releases it)
    stock_reserved: bool


#: every domain event type by its name in the store
DOMAIN_EVENTS: dict[str, type[DomainEvent]] = {
    cls.type_name(): cls
    for cls in (
        OrderPlaced,
        StockReserved,
        StockRejected,
        PaymentRequested,
        PaymentSucceeded,
        PaymentFailed,
        TimedOut,
        OrderConfirmed,
        OrderCancelled,
    )
}

#: the facts from outside that move the saga
SagaEvent = StockReserved | StockRejected | PaymentSucceeded | PaymentFailed | TimedOut


# -- the aggregate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    email: str
    lines: tuple[Line, ...]
    total_minor: int
    currency: str
    payment_token: str
    placed_at: datetime
    deadline: datetime
    status: Status = Status.PENDING
    reason: CancelReason | None = None
    stock_reserved: bool = False
    payment_id: str | None = None
    #: the payment it asked for: the only one whose result it accepts
    requested_payment_id: str | None = None
    #: how many events of its stream this state reflects (the expected version of the next append)
    version: int = 0

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


class Decision(NamedTuple):
    state: Order
    #: domain events to append to the order's stream (empty: nothing happened)
    record: tuple[DomainEvent, ...]
    #: integration events to publish, in this order
    emit: tuple[EventPayload, ...]


class UnknownOrderStreamError(Exception):
    """A stream that does not start with OrderPlaced: the store is corrupt, not the message."""


def evolve(order: Order | None, event: DomainEvent) -> Order:
    """The order after `event`; `evolve(None, OrderPlaced(...))` starts one."""
    if order is None:
        if not isinstance(event, OrderPlaced):
            raise UnknownOrderStreamError(f"a stream must start with OrderPlaced, not {event!r}")
        return Order(
            order_id=event.order_id,
            user_id=event.user_id,
            email=event.email,
            lines=event.lines,
            total_minor=event.total_minor,
            currency=event.currency,
            payment_token=event.payment_token,
            placed_at=event.placed_at,
            deadline=event.deadline,
            version=1,
        )
    version = order.version + 1  # one replace per event: each costs a few µs, and a load
    match event:  # replays the whole stream
        case StockReserved():
            return replace(order, version=version, stock_reserved=True)
        case PaymentRequested():
            return replace(
                order,
                version=version,
                status=Status.AWAITING_PAYMENT,
                requested_payment_id=event.payment_id,
            )
        case PaymentSucceeded() | PaymentFailed():
            return replace(order, version=version, payment_id=event.payment_id)
        case OrderConfirmed():
            return replace(order, version=version, status=Status.CONFIRMED)
        case OrderCancelled():
            return replace(order, version=version, status=Status.CANCELLED, reason=event.reason)
        case _:  # facts that change no field: StockRejected, TimedOut (their decision does)
            return replace(order, version=version)


def replay(events: Iterable[DomainEvent]) -> Order | None:
    """Rebuild an order from its stream (None for an empty stream)."""
    order: Order | None = None
    for event in events:
        order = evolve(order, event)
    return order


def timeline(events: Iterable[DomainEvent]) -> list[tuple[DomainEvent, Order]]:
    """Each event of a stream with the order as it was right after it (its history)."""
    steps: list[tuple[DomainEvent, Order]] = []
    order: Order | None = None
    for event in events:
        order = evolve(order, event)
        steps.append((event, order))
    return steps


def decide(order: Order, event: SagaEvent) -> Decision:
    """The saga's step: the new state, what to record and what to publish."""
    record = _transition(order, event)
    state = order
    emit: list[EventPayload] = []
    for recorded in record:
        state = evolve(state, recorded)
        announcement = _announce(state, recorded)
        if announcement is not None:
            emit.append(announcement)
    return Decision(state, record, tuple(emit))


def _transition(order: Order, event: SagaEvent) -> tuple[DomainEvent, ...]:
    if order.is_final:
        return ()  # late or duplicate: a final order never changes
    match event:
        case StockReserved() if order.status == Status.PENDING:
            request = PaymentRequested(
                amount_minor=order.total_minor,
                currency=order.currency,
                payment_token=order.payment_token,
                payment_id=payment_id_for(order.order_id),
            )
            return (event, request)
        case StockRejected() if order.status == Status.PENDING:
            return (event, OrderCancelled(reason=event.reason, stock_reserved=False))
        case PaymentSucceeded() if order.status == Status.AWAITING_PAYMENT:
            _check_payment(order, event.payment_id, event.amount_minor, event.currency)
            return (event, OrderConfirmed())
        case PaymentFailed() if order.status == Status.AWAITING_PAYMENT:
            _check_payment(order, event.payment_id)
            return (event, OrderCancelled(reason=event.reason, stock_reserved=True))
        case TimedOut() if event.at >= order.deadline:
            # compensate what was done: inventory releases a reservation, payments refunds
            # a payment captured (or still being charged) when it sees order.cancelled
            cancel = OrderCancelled(reason="timeout", stock_reserved=order.stock_reserved)
            return (event, cancel)
        case _:
            return ()  # a duplicate (stock reserved twice) or out of place: nothing to do


class ForeignPaymentError(ValueError):
    """A payment result that is not about the payment the order asked for: another payment id,
    or another amount or currency than the order's."""


#: payment ids are named by the order (uuid5 of its id in this namespace): the same on a retry
PAYMENT_IDS = uuid.UUID("6f1e2f57-5b0e-4d0c-9a43-3c1b1c0e8a51")


def payment_id_for(order_id: str) -> str:
    return str(uuid.uuid5(PAYMENT_IDS, order_id))


def _check_payment(
    order: Order, payment_id: str, amount_minor: int | None = None, currency: str | None = None
) -> None:
    wrong = []
    if order.requested_payment_id is not None and payment_id != order.requested_payment_id:
        wrong.append(f"payment {payment_id!r}, asked for {order.requested_payment_id!r}")
    if amount_minor is not None and amount_minor != order.total_minor:
        wrong.append(f"amount {amount_minor}, the order's is {order.total_minor}")
    if currency is not None and currency != order.currency:
        wrong.append(f"currency {currency!r}, the order's is {order.currency!r}")
    if wrong:
        raise ForeignPaymentError(f"order {order.order_id}: " + "; ".join(wrong))


def _announce(order: Order, event: DomainEvent) -> EventPayload | None:
    """The integration event that tells the others about a decision, if it is one."""
    match event:
        case PaymentRequested():
            return integration.PaymentRequested(
                order_id=order.order_id,
                user_id=order.user_id,
                email=order.email,
                amount_minor=event.amount_minor,
                currency=event.currency,
                payment_token=event.payment_token,
                payment_id=event.payment_id,
            )
        case OrderConfirmed():
            return integration.OrderConfirmed(
                order_id=order.order_id,
                user_id=order.user_id,
                email=order.email,
                total_minor=order.total_minor,
                currency=order.currency,
                lines=order.lines,
            )
        case OrderCancelled():
            return integration.OrderCancelled(
                order_id=order.order_id,
                user_id=order.user_id,
                email=order.email,
                reason=event.reason,
                stock_reserved=event.stock_reserved,
                lines=order.lines,
            )
        case _:
            return None


# -- placing an order -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    """One sku in the local price list."""

    sku: str
    name: str
    price_minor: int
    currency: str
    active: bool = True


class OrderRejectedError(Exception):
    """The order can't be placed as asked (the caller's mistake, not a fault)."""


class UnknownSkuError(OrderRejectedError):
    def __init__(self, skus: Sequence[str]) -> None:
        self.skus = tuple(skus)
        super().__init__(f"unknown or inactive sku: {', '.join(self.skus)}")


class MixedCurrencyError(OrderRejectedError):
    def __init__(self, currencies: Iterable[str]) -> None:
        self.currencies = tuple(sorted(set(currencies)))
        super().__init__(
            f"the lines are priced in several currencies ({', '.join(self.currencies)});"
            " an order takes one"
        )


def price_lines(
    wanted: Sequence[Line], prices: Mapping[str, Price]
) -> tuple[tuple[Line, ...], int, str]:
    """The lines with their unit prices, the total and the currency, from the price list."""
    unknown = [w.sku for w in wanted if w.sku not in prices or not prices[w.sku].active]
    if unknown:
        raise UnknownSkuError(unknown)
    currencies = {prices[w.sku].currency for w in wanted}
    if len(currencies) != 1:
        raise MixedCurrencyError(currencies)
    lines = tuple(
        Line(sku=w.sku, quantity=w.quantity, unit_price_minor=prices[w.sku].price_minor)
        for w in wanted
    )
    total = sum(line.quantity * (line.unit_price_minor or 0) for line in lines)
    return lines, total, currencies.pop()


def place(
    *,
    order_id: str,
    user_id: str,
    email: str,
    wanted: Sequence[Line],
    prices: Mapping[str, Price],
    payment_token: str,
    now: datetime,
    timeout: timedelta,
) -> Decision:
    """A new order, priced from the local price list; raises OrderRejectedError."""
    lines, total, currency = price_lines(wanted, prices)
    placed = OrderPlaced(
        order_id=order_id,
        user_id=user_id,
        email=email,
        lines=lines,
        total_minor=total,
        currency=currency,
        payment_token=payment_token,
        placed_at=now,
        deadline=now + timeout,
    )
    created = integration.OrderCreated(
        order_id=order_id,
        user_id=user_id,
        email=email,
        lines=lines,
        total_minor=total,
        currency=currency,
    )
    return Decision(evolve(None, placed), (placed,), (created,))
