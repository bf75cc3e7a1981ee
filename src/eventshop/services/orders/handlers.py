"""orders' event handlers: each translates an integration event into the saga's own terms and
advances the order (lock, load its stream, decide, append + read model + outbox)."""

from __future__ import annotations

from eventshop.contracts import Envelope
from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.contracts.inventory import InventoryRejected, InventoryReserved
from eventshop.contracts.payments import PaymentFailed, PaymentSucceeded
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.uow import UnitOfWork
from eventshop.services.orders import domain, metrics, store

log = get_logger(__name__)

#: payments' failure reasons in the order's terms (a provider that never answered is, for the
#: customer, a payment that did not go through)
FAILURE_REASONS: dict[str, domain.PaymentFailureReason] = {
    "declined": "payment_declined",
    "fraud": "fraud",
    "provider_error": "payment_declined",
}


async def keep_price(
    uow: UnitOfWork, env: Envelope, event: ProductCreated | ProductUpdated
) -> None:
    price = domain.Price(
        sku=event.sku,
        name=event.name,
        price_minor=event.price_minor,
        currency=event.currency,
        active=event.active,
    )
    await store.keep_price(uow.conn, price, as_of=env.occurred_at)


async def stock_reserved(uow: UnitOfWork, env: Envelope, event: InventoryReserved) -> None:
    await advance(uow, event.order_id, domain.StockReserved())


async def stock_rejected(uow: UnitOfWork, env: Envelope, event: InventoryRejected) -> None:
    await advance(uow, event.order_id, domain.StockRejected(reason=event.reason, skus=event.skus))


async def payment_succeeded(uow: UnitOfWork, env: Envelope, event: PaymentSucceeded) -> None:
    fact = domain.PaymentSucceeded(
        payment_id=event.payment_id, amount_minor=event.amount_minor, currency=event.currency
    )
    await advance(uow, event.order_id, fact)


async def payment_failed(uow: UnitOfWork, env: Envelope, event: PaymentFailed) -> None:
    fact = domain.PaymentFailed(
        payment_id=event.payment_id, reason=FAILURE_REASONS[event.reason], detail=event.detail
    )
    await advance(uow, event.order_id, fact)


async def advance(
    uow: UnitOfWork, order_id: str, event: domain.SagaEvent
) -> domain.Decision | None:
    """One saga step for one order, in `uow`'s transaction; None if there is no such order."""
    if not await store.lock_order(uow.conn, order_id):
        # every order's row is committed with its order.created, so this is not a race: the
        # event is about an order of another deployment (or a wiped one). Nothing to do.
        log.warning("orders.unknown_order", order_id=order_id, fact=event.type_name())
        return None
    order = await store.load_order(uow.conn, order_id)
    if order is None:
        raise domain.UnknownOrderStreamError(f"order {order_id} has a read model but no stream")
    decision = domain.decide(order, event)
    if not decision.record:
        log.info(
            "orders.nothing_to_do",
            order_id=order_id,
            status=order.status.value,
            fact=event.type_name(),
        )
        return decision
    await store.record_decision(
        uow.conn,
        order,
        decision,
        correlation_id=uow.correlation_id or None,
        causation_id=uow.causation_id,
    )
    for outgoing in decision.emit:
        uow.emit(outgoing, aggregate_id=order_id)
    if (count_outcome := metrics.saga_finished(order, decision.state)) is not None:
        uow.after_commit(count_outcome)
    log.info(
        "orders.advanced",
        order_id=order_id,
        fact=event.type_name(),
        status_from=order.status.value,
        status_to=decision.state.status.value,
    )
    return decision
