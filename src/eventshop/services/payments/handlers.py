"""payments' event handlers. They never call the provider: a provider call can take seconds
(or, with "tok_slow", ten), and a consumer's transaction holds a whole batch of events. The
handlers only decide and record; the charge worker (worker.py) does the calls."""

from __future__ import annotations

import uuid

from eventshop.contracts import Envelope
from eventshop.contracts.orders import OrderCancelled, PaymentRequested
from eventshop.contracts.payments import PaymentFailed
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.uow import UnitOfWork
from eventshop.services.payments import domain, store

log = get_logger(__name__)


async def take_payment_request(
    uow: UnitOfWork, env: Envelope, event: PaymentRequested, *, rules: domain.FraudRules
) -> None:
    """Refuse it as fraud at once, or queue it for the charge worker."""
    recent = await store.recent_requests(uow.conn, event.user_id, rules.velocity_window_s)
    attempt = domain.PaymentAttempt(
        amount_minor=event.amount_minor, email=event.email, recent_requests=recent
    )
    fraud = domain.fraud_check(rules, attempt)
    payment = store.NewPayment(
        payment_id=str(uuid.uuid4()),
        order_id=event.order_id,
        user_id=event.user_id,
        email=event.email,
        amount_minor=event.amount_minor,
        currency=event.currency,
        payment_token=event.payment_token,
        correlation_id=uow.correlation_id or None,
        causation_id=uow.causation_id,
        traceparent=uow.traceparent,
    )
    if not await store.record_request(uow.conn, payment, fraud=fraud):
        # the same request again (under another event id), or the order was cancelled before
        # it asked to be paid (a tombstone): either way there is nothing to charge
        log.info("payments.request_ignored", order_id=event.order_id)
        return
    if fraud is not None:
        log.info("payments.fraud", order_id=event.order_id, detail=fraud)
        uow.emit(
            PaymentFailed(
                payment_id=payment.payment_id,
                order_id=event.order_id,
                reason="fraud",
                detail=fraud,
            ),
            aggregate_id=payment.payment_id,
        )


async def cancel_payment(uow: UnitOfWork, env: Envelope, event: OrderCancelled) -> None:
    """Compensate: never charge a cancelled order, refund it if it was (or gets) captured."""
    cause = str(env.event_id)
    state = await store.request_cancellation(uow.conn, event.order_id, cause)
    if state is None:
        if await store.leave_tombstone(uow.conn, event.order_id, event.user_id, event.email, cause):
            log.info("payments.tombstone", order_id=event.order_id)
            return
        # a payment request committed between the two statements: cancel that one
        state = await store.request_cancellation(uow.conn, event.order_id, cause)
        if state is None:
            raise RuntimeError(f"the payment row of order {event.order_id} vanished")
    action = domain.on_cancel(state.status, charge_attempted=state.attempts > 0)
    if action is domain.OnCancel.VOID:
        await store.void(uow.conn, event.order_id)
    # REFUND and REFUND_AFTER_CAPTURE: the row is marked; the worker refunds it (a provider call)
    log.info("payments.cancel_noted", order_id=event.order_id, action=action.value)
