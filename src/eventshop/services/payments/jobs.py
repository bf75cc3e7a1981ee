"""payments' background job: the charge loop. It calls the provider for pending payments (and
refunds of cancelled orders) outside of any consumer, so a slow provider never holds up the
events behind it.

A payment goes through three short steps, no row lock ever held across the provider call:
1. claim: mark a batch of rows charging/refunding with a claim id and a lease; commit. The loop
   claims every `charge_poll_s`, and `charge_gather_s` after a commit of its own process has
   queued work (`Resources.work_queued`, set by the handlers after their commit): a payment
   request on the saga's path does not wait for the poll, and the requests committed in the
   same few milliseconds go in one claim, so their answers are settled and published together;
2. call the provider (up to `charge_concurrency` calls in flight, each bounded by a timeout);
3. record the outcome where the claim still holds, with its events, in one unit of work
   (handlers.py: `settle_charges`, `retry_or_fail_charge`, `settle_refund`, `retry_refund_later`).
   Charges' answers go through a `Settler` (platform/grouping.py): whatever answers have come in
   while the last group was being recorded are recorded together, in one transaction (ADR 0016).

A process that dies in step 2 leaves its rows charging; another one takes them over when the
lease runs out and calls again with the same idempotency key, so nothing is charged twice.
Several payments processes share the work (the claim is FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import replace
from typing import TYPE_CHECKING

from eventshop.platform.grouping import GroupCommit
from eventshop.platform.observability.logging import get_logger
from eventshop.services.payments import handlers, store
from eventshop.services.payments.adapters import Charge, ProviderError
from eventshop.services.payments.store import ClaimedPayment

if TYPE_CHECKING:
    from eventshop.services.payments.service import Context

log = get_logger(__name__)


#: the provider's answers to charges, recorded in groups: an answer waits for the group being
#: recorded to commit, then goes with every answer that came in meanwhile. Under load that is one
#: transaction for many payments; alone, an answer is recorded at once (ADR 0016, ADR 0019).
Settler = GroupCommit[tuple[ClaimedPayment, Charge], bool]

#: no bound on a group: the answers in hand are at most `charge_concurrency`
_UNBOUNDED = 1_000_000


def _settler() -> Settler:
    return GroupCommit(max_group=_UNBOUNDED)


async def _settle(ctx: Context, settler: Settler, claimed: ClaimedPayment, charge: Charge) -> bool:
    """`handlers.settle_charges` of this one answer, in the next group."""
    write = functools.partial(handlers.settle_charges, ctx)
    return await settler.submit((claimed, charge), write)


async def charge_payments(ctx: Context) -> None:
    """Keep up to `charge_concurrency` provider calls in flight until cancelled; a slow call
    holds one slot, not the loop.

    When it is cancelled (the service stops), the calls in flight get `charge_stop_grace_s` to
    finish, then are cancelled too: their leases run out and another process takes them over.
    A claim on its way back when the stop comes is waited for, and its payments are seen
    through like those in flight: its transaction may have committed, and rows claimed by no
    one's task would wait out their whole lease (30 s), their orders timing out meanwhile.
    """
    settings = ctx.settings
    in_flight: set[asyncio.Task[None]] = set()
    settler = _settler()
    queued = ctx.resources.work_queued

    def see_through(claimed: list[ClaimedPayment]) -> None:
        for payment in claimed:
            task = asyncio.create_task(
                _see_through(ctx, payment, settler),
                name=f"payments:{payment.kind}:{payment.payment_id}",
            )
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    try:
        while True:
            free = settings.charge_concurrency - len(in_flight)
            claimed: list[ClaimedPayment] = []
            if free > 0:
                queued.clear()  # what is queued from now on wakes the wait below
                claiming = asyncio.ensure_future(_claim(ctx, free))
                try:
                    claimed = await asyncio.shield(claiming)
                except asyncio.CancelledError:
                    see_through(await _claimed_anyway(claiming))
                    raise
                except Exception as exc:  # the database is away: wait a little longer
                    log.warning("payments.claim_failed", error=repr(exc))
                    await asyncio.sleep(1.0)
            see_through(claimed)
            if free > 0 and len(claimed) >= free:
                continue  # the claim was cut at the free slots: more may be due now
            if free > 0:
                # until the next poll, or a commit of this process that queues work (a payment
                # request, a refund); then a moment more (`charge_gather_s`), so that one claim
                # takes the requests of the windows committing meanwhile with it
                woken = False
                with contextlib.suppress(TimeoutError):
                    woken = await asyncio.wait_for(queued.wait(), settings.charge_poll_s)
                if woken and settings.charge_gather_s:
                    await asyncio.sleep(settings.charge_gather_s)
            else:  # every slot busy: a call in flight has to end first
                await asyncio.sleep(settings.charge_poll_s)
    finally:
        await _let_finish(in_flight, settings.charge_stop_grace_s)
        await settler.close()


async def _claimed_anyway(claiming: asyncio.Future[list[ClaimedPayment]]) -> list[ClaimedPayment]:
    """What a claim the stop interrupted took after all (nothing if it failed)."""
    try:
        return await claiming
    except Exception:
        return []


async def charge_due_payments(ctx: Context) -> int:
    """One pass: claim what is due (up to the concurrency bound) and see every one through;
    how many were claimed."""
    claimed = await _claim(ctx, ctx.settings.charge_concurrency)
    settler = _settler()
    try:
        await asyncio.gather(*(_see_through(ctx, payment, settler) for payment in claimed))
    finally:
        await settler.close()
    return len(claimed)


async def _let_finish(in_flight: set[asyncio.Task[None]], grace_s: float) -> None:
    if not in_flight:
        return
    _, pending = await asyncio.wait(set(in_flight), timeout=grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _claim(ctx: Context, limit: int) -> list[ClaimedPayment]:
    async with ctx.pool.acquire() as conn:
        return await store.claim_work(conn, limit, ctx.settings.charge_lease_s)


async def _see_through(ctx: Context, payment: ClaimedPayment, settler: Settler) -> None:
    try:
        if payment.kind == "charge":
            await _charge(ctx, payment, settler)
        else:
            await _refund(ctx, payment)
    except Exception:
        # the database is away, most likely: the row keeps its claim until the lease runs
        # out, then it is taken over and the provider asked again with the same key
        log.exception("payments.job_failed", payment_id=payment.payment_id, kind=payment.kind)


async def _charge(ctx: Context, payment: ClaimedPayment, settler: Settler) -> None:
    try:
        charge = await asyncio.wait_for(
            ctx.resources.provider.charge(
                idempotency_key=payment.payment_id,
                token=payment.payment_token,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
            ),
            ctx.settings.provider_timeout_s,
        )
    except (ProviderError, TimeoutError) as exc:
        await handlers.retry_or_fail_charge(ctx, payment, f"{type(exc).__name__}: {exc}")
        return
    if await _settle(ctx, settler, payment, charge):
        # the order was cancelled while it was being charged: refund it now, same claim
        await _refund(ctx, replace(payment, kind="refund", charge_ref=charge.reference))


async def _refund(ctx: Context, payment: ClaimedPayment) -> None:
    assert payment.charge_ref is not None, "only a captured charge is refunded"
    try:
        refund_ref = await asyncio.wait_for(
            ctx.resources.provider.refund(
                idempotency_key=f"refund:{payment.payment_id}",
                charge_reference=payment.charge_ref,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
            ),
            ctx.settings.provider_timeout_s,
        )
    except (ProviderError, TimeoutError) as exc:
        await handlers.retry_refund_later(ctx, payment, repr(exc))
        return
    await handlers.settle_refund(ctx, payment, refund_ref)
