"""payments' use cases: the events it handles, the outcomes its charge job records, the reads
its HTTP routes make. Every event payments publishes is emitted here.

The event handlers never call the provider: a provider call can take seconds (or, with
"tok_slow", ten), and a consumer's transaction holds a whole batch of events. They only decide
and record; the charge job (jobs.py) makes the calls and hands each outcome to `settle_charges`,
`retry_or_fail_charge`, `settle_refund` or `retry_refund_later`, which record it where the
job's claim still holds, with its events, in the order's chain (its correlation id and cause).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import asyncpg

from eventshop.contracts import Envelope, EventPayload
from eventshop.contracts.orders import OrderCancelled, PaymentRequested
from eventshop.contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from eventshop.platform.bus import Delivery, UnitOfWork
from eventshop.platform.http import Identity, not_found
from eventshop.platform.observability.logging import get_logger
from eventshop.services.payments import domain, store
from eventshop.services.payments.adapters import Charge
from eventshop.services.payments.domain import Status
from eventshop.services.payments.store import ClaimedPayment

if TYPE_CHECKING:
    from eventshop.services.payments.service import Context

log = get_logger(__name__)


# -- events ---------------------------------------------------------------------------------------
async def lock_window(conn: asyncpg.Connection, payloads: Sequence[EventPayload]) -> None:
    """The users' velocity locks and the payment rows a window's handlers will take, locked
    first in one order (ADR 0012), so that replicas' windows never wait for each other in a
    cycle."""
    await store.lock_window(
        conn,
        [p.user_id for p in payloads if isinstance(p, PaymentRequested)],
        [p.order_id for p in payloads if isinstance(p, PaymentRequested | OrderCancelled)],
    )


async def screen_payments(ctx: Context, deliveries: Sequence[Delivery]) -> None:
    """Screen payment requests for fraud, a window's at once (ADR 0016): refuse each at once,
    or queue it for the charge job. In the order given, each request counted in the velocity of
    the ones after it, in three statements whatever the window's size."""
    rules = ctx.settings.fraud_rules()
    conn = deliveries[0][0].conn
    recent, known = await store.screen_inputs(
        conn,
        [e.user_id for _, _, e in deliveries],
        [e.order_id for _, _, e in deliveries],
        rules.velocity_window_s,
    )
    requests: list[tuple[UnitOfWork, store.NewPayment, str | None]] = []
    for uow, _, event in deliveries:
        if event.order_id in known:
            # the same request again (under another event id), or the order was cancelled
            # before it asked to be paid (a tombstone): either way there is nothing to charge
            log.info("payments.request_ignored", order_id=event.order_id)
            continue
        known.add(event.order_id)
        attempt = domain.PaymentAttempt(
            amount_minor=event.amount_minor,
            email=event.email,
            recent_requests=recent.get(event.user_id, 0),
        )
        recent[event.user_id] = recent.get(event.user_id, 0) + 1
        payment = store.NewPayment(
            payment_id=event.payment_id or str(uuid.uuid4()),
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
        requests.append((uow, payment, domain.fraud_check(rules, attempt)))
    recorded = await store.record_requests(conn, [(p, fraud) for _, p, fraud in requests])
    for uow, payment, fraud in requests:
        if payment.order_id not in recorded:  # a tombstone committed meanwhile (no window lock)
            log.info("payments.request_ignored", order_id=payment.order_id)
            continue
        if fraud is None:  # queued for the charge job: wake it once this commits
            uow.after_commit(ctx.resources.work_queued.set)
        else:
            log.info("payments.fraud", order_id=payment.order_id, detail=fraud)
            uow.emit(
                PaymentFailed(
                    payment_id=payment.payment_id,
                    order_id=payment.order_id,
                    reason="fraud",
                    detail=fraud,
                ),
                aggregate_id=payment.payment_id,
            )


async def cancel_payment(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: OrderCancelled
) -> None:
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
    elif action in (domain.OnCancel.REFUND, domain.OnCancel.REFUND_AFTER_CAPTURE):
        # the row is marked; the charge job refunds it: wake it once this commits
        uow.after_commit(ctx.resources.work_queued.set)
    log.info("payments.cancel_noted", order_id=event.order_id, action=action.value)


# -- the charge job's outcomes --------------------------------------------------------------------
async def settle_charges(
    ctx: Context, outcomes: Sequence[tuple[ClaimedPayment, Charge]]
) -> list[bool]:
    """Record the provider's answers to charges, several at once in one transaction (ADR 0016):
    payment.succeeded, or payment.failed (declined), each in its order's chain. The captures
    are one UPDATE, the events one outbox insert.

    For each: True if the capture is to be refunded right away (the order was cancelled while
    it was being charged: the row went straight to refunding, under the same claim).
    """
    async with UnitOfWork.begin(ctx.pool, service=ctx.name) as batch:
        captured = await store.record_captures(
            batch.conn, [(c, charge.reference) for c, charge in outcomes if charge.captured]
        )
        refund_now: list[bool] = []
        for claimed, charge in outcomes:
            uow = _in_chain(batch, claimed, caused_by=claimed.causation_id)
            if not charge.captured:
                if await store.record_failure(uow.conn, claimed, "declined", charge.decline_code):
                    uow.emit(
                        _failed(claimed, "declined", charge.decline_code),
                        aggregate_id=claimed.payment_id,
                    )
                refund_now.append(False)
                continue
            status = captured.get(claimed.payment_id)
            if status is None:  # our lease ran out and another process took over: it records it
                refund_now.append(False)
                continue
            uow.emit(_settled(PaymentSucceeded, claimed), aggregate_id=claimed.payment_id)
            refund_now.append(status is Status.REFUNDING)
    for claimed, charge in outcomes:  # once committed
        if charge.captured and claimed.payment_id in captured:
            # every payment: debug, as orders' steps are (orders.advanced)
            log.debug("payments.captured", payment_id=claimed.payment_id, order_id=claimed.order_id)
    return refund_now


async def retry_or_fail_charge(ctx: Context, claimed: ClaimedPayment, error: str) -> None:
    """The provider gave no answer to a charge: give it back to be tried again later or, after
    its last attempt, fail it (payment.failed, provider_error)."""
    settings = ctx.settings
    if claimed.attempts < settings.charge_max_attempts:
        log.warning("payments.provider_retry", payment_id=claimed.payment_id, error=error)
        async with ctx.pool.acquire() as conn:
            await store.retry_later(conn, claimed, settings.charge_retry_delay_s, error)
        return
    log.error("payments.provider_gave_up", payment_id=claimed.payment_id, error=error)
    async with _in_the_orders_chain(ctx, claimed, caused_by=claimed.causation_id) as uow:
        if await store.record_failure(uow.conn, claimed, "provider_error", error):
            uow.emit(_failed(claimed, "provider_error", error), aggregate_id=claimed.payment_id)


async def settle_refund(ctx: Context, claimed: ClaimedPayment, refund_ref: str) -> None:
    """Record a refund the provider made: payment.refunded, caused by the order's cancellation."""
    async with _in_the_orders_chain(ctx, claimed, caused_by=claimed.cancel_event_id) as uow:
        if await store.record_refund(uow.conn, claimed, refund_ref):
            uow.emit(_settled(PaymentRefunded, claimed), aggregate_id=claimed.payment_id)
    log.info("payments.refunded", payment_id=claimed.payment_id, order_id=claimed.order_id)


async def retry_refund_later(ctx: Context, claimed: ClaimedPayment, error: str) -> None:
    """The provider gave no answer to a refund: a refund is owed whatever happens, so it is
    given back to be tried again, with no limit."""
    log.warning("payments.refund_retry", payment_id=claimed.payment_id, error=error)
    async with ctx.pool.acquire() as conn:
        await store.retry_later(conn, claimed, ctx.settings.charge_retry_delay_s, error)


def _in_chain(batch: UnitOfWork, claimed: ClaimedPayment, *, caused_by: str | None) -> UnitOfWork:
    """A unit of work of `batch`'s transaction whose events join the order's chain (see
    `_in_the_orders_chain`); they are written when the batch's block ends."""
    return UnitOfWork(
        conn=batch.conn,
        service=batch.service,
        correlation_id=claimed.correlation_id or str(uuid.uuid4()),
        causation_id=caused_by,
        traceparent=claimed.traceparent,
        pending=batch.pending,
        committed_hooks=batch.committed_hooks,
    )


@asynccontextmanager
async def _in_the_orders_chain(
    ctx: Context, claimed: ClaimedPayment, *, caused_by: str | None
) -> AsyncIterator[UnitOfWork]:
    """A unit of work whose events join the order's chain: the job emits long after the event
    that asked for it was handled, so its correlation id, cause and trace were kept on the row."""
    async with UnitOfWork.begin(ctx.pool, service=ctx.name) as batch:
        yield _in_chain(batch, claimed, caused_by=caused_by)


def _settled(
    kind: type[PaymentSucceeded] | type[PaymentRefunded], claimed: ClaimedPayment
) -> PaymentSucceeded | PaymentRefunded:
    """The fact that a claimed payment's money moved (captured, or given back)."""
    return kind(
        payment_id=claimed.payment_id,
        order_id=claimed.order_id,
        amount_minor=claimed.amount_minor,
        currency=claimed.currency,
    )


def _failed(
    claimed: ClaimedPayment, reason: Literal["declined", "provider_error"], detail: str
) -> PaymentFailed:
    return PaymentFailed(
        payment_id=claimed.payment_id, order_id=claimed.order_id, reason=reason, detail=detail
    )


# -- queries --------------------------------------------------------------------------------------
async def payments_of(ctx: Context, user_id: str, limit: int) -> list[asyncpg.Record]:
    """The user's payments, newest first."""
    async with ctx.pool.acquire() as conn:
        return await store.payments_of(conn, user_id, limit)


async def payment_seen_by(ctx: Context, who: Identity, payment_id: str) -> asyncpg.Record:
    """A payment of the caller's own (any, for an admin); 404 for any other."""
    async with ctx.pool.acquire() as conn:
        row = await store.get_payment(conn, payment_id)
    if row is None or not (who.is_admin or row["user_id"] == who.user_id):
        raise not_found("payment")
    return row
