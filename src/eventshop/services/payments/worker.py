"""The charge worker: calls the provider for pending payments (and refunds of cancelled orders)
outside of any consumer, so a slow provider never holds up the events behind it.

A job goes through three short steps, no row lock ever held across the provider call:
1. claim: mark a batch of rows charging/refunding with a claim id and a lease; commit;
2. call the provider (up to `charge_concurrency` calls in flight, each bounded by a timeout);
3. record the outcome where the claim still holds, with its events, in one unit of work.

A process that dies in step 2 leaves its rows charging; another worker takes them over when
the lease runs out and calls again with the same idempotency key, so nothing is charged twice.
Several payments processes share the work (the claim is FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Literal

import asyncpg

from eventshop.contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.uow import UnitOfWork
from eventshop.services.payments import store
from eventshop.services.payments.adapters import PaymentProvider, ProviderError
from eventshop.services.payments.domain import Status
from eventshop.services.payments.settings import PaymentsSettings

log = get_logger(__name__)


class ChargeWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        settings: PaymentsSettings,
        *,
        service: str = "payments",
    ) -> None:
        self._pool = pool
        self._provider = provider
        self._settings = settings
        self._service = service
        self._in_flight: set[asyncio.Task[None]] = set()

    # -- driving --------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim what is due (up to the concurrency bound) and see every job through; how many."""
        jobs = await self._claim(self._settings.charge_concurrency)
        await asyncio.gather(*(self._do(job) for job in jobs))
        return len(jobs)

    async def run(self) -> None:
        """Keep up to `charge_concurrency` jobs in flight until cancelled; a slow call holds one
        slot, not the loop."""
        while True:
            free = self._settings.charge_concurrency - len(self._in_flight)
            jobs: list[store.Job] = []
            if free > 0:
                try:
                    jobs = await self._claim(free)
                except Exception as exc:  # the database is away: wait a little longer
                    log.warning("payments.claim_failed", error=repr(exc))
                    await asyncio.sleep(1.0)
            for job in jobs:
                task = asyncio.create_task(
                    self._do(job), name=f"payments:{job.kind}:{job.payment_id}"
                )
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if not jobs:
                await asyncio.sleep(self._settings.charge_poll_s)

    def start(self, *, grace_s: float = 5.0) -> Callable[[], Awaitable[None]]:
        """Run in the background; returns the function that stops it (calls in flight get
        `grace_s` to finish, then are cancelled: their leases run out and others take over)."""
        loop = asyncio.create_task(self.run(), name="payments:charge-worker")

        async def stop() -> None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            if self._in_flight:
                _, pending = await asyncio.wait(set(self._in_flight), timeout=grace_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

        return stop

    async def _claim(self, limit: int) -> list[store.Job]:
        async with self._pool.acquire() as conn:
            return await store.claim_work(conn, limit, self._settings.charge_lease_s)

    async def _do(self, job: store.Job) -> None:
        try:
            if job.kind == "charge":
                await self._charge(job)
            else:
                await self._refund(job)
        except Exception:
            # the database is away, most likely: the row keeps its claim until the lease runs
            # out, then it is taken over and the provider asked again with the same key
            log.exception("payments.job_failed", payment_id=job.payment_id, kind=job.kind)

    # -- charging ---------------------------------------------------------------------------------
    async def _charge(self, job: store.Job) -> None:
        try:
            charge = await asyncio.wait_for(
                self._provider.charge(
                    idempotency_key=job.payment_id,
                    token=job.payment_token,
                    amount_minor=job.amount_minor,
                    currency=job.currency,
                ),
                self._settings.provider_timeout_s,
            )
        except (ProviderError, TimeoutError) as exc:
            await self._no_answer(job, exc)
            return
        async with self._unit_of_work(job, caused_by=job.causation_id) as uow:
            if not charge.captured:
                if await store.record_failure(uow.conn, job, "declined", charge.decline_code):
                    uow.emit(
                        _failed(job, "declined", charge.decline_code), aggregate_id=job.payment_id
                    )
                return
            status = await store.record_capture(uow.conn, job, charge.reference)
            if status is None:
                return  # our lease ran out and another worker took over: it records the outcome
            uow.emit(
                PaymentSucceeded(
                    payment_id=job.payment_id,
                    order_id=job.order_id,
                    amount_minor=job.amount_minor,
                    currency=job.currency,
                ),
                aggregate_id=job.payment_id,
            )
        log.info("payments.captured", payment_id=job.payment_id, order_id=job.order_id)
        if status is Status.REFUNDING:  # the order was cancelled while we were charging it
            await self._refund(replace(job, kind="refund", charge_ref=charge.reference))

    async def _no_answer(self, job: store.Job, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if job.attempts < self._settings.charge_max_attempts:
            log.warning("payments.provider_retry", payment_id=job.payment_id, error=error)
            async with self._pool.acquire() as conn:
                await store.retry_later(conn, job, self._settings.charge_retry_delay_s, error)
            return
        log.error("payments.provider_gave_up", payment_id=job.payment_id, error=error)
        async with self._unit_of_work(job, caused_by=job.causation_id) as uow:
            if await store.record_failure(uow.conn, job, "provider_error", error):
                uow.emit(_failed(job, "provider_error", error), aggregate_id=job.payment_id)

    # -- refunding --------------------------------------------------------------------------------
    async def _refund(self, job: store.Job) -> None:
        assert job.charge_ref is not None, "only a captured charge is refunded"
        try:
            refund_ref = await asyncio.wait_for(
                self._provider.refund(
                    idempotency_key=f"refund:{job.payment_id}",
                    charge_reference=job.charge_ref,
                    amount_minor=job.amount_minor,
                    currency=job.currency,
                ),
                self._settings.provider_timeout_s,
            )
        except (ProviderError, TimeoutError) as exc:
            # a refund is owed whatever happens: it is tried again, with no limit
            log.warning("payments.refund_retry", payment_id=job.payment_id, error=repr(exc))
            async with self._pool.acquire() as conn:
                await store.retry_later(conn, job, self._settings.charge_retry_delay_s, repr(exc))
            return
        async with self._unit_of_work(job, caused_by=job.cancel_event_id) as uow:
            if await store.record_refund(uow.conn, job, refund_ref):
                uow.emit(
                    PaymentRefunded(
                        payment_id=job.payment_id,
                        order_id=job.order_id,
                        amount_minor=job.amount_minor,
                        currency=job.currency,
                    ),
                    aggregate_id=job.payment_id,
                )
        log.info("payments.refunded", payment_id=job.payment_id, order_id=job.order_id)

    @asynccontextmanager
    async def _unit_of_work(
        self, job: store.Job, *, caused_by: str | None
    ) -> AsyncIterator[UnitOfWork]:
        """A unit of work whose events join the order's chain (its correlation id and cause)."""
        async with UnitOfWork.begin(
            self._pool,
            service=self._service,
            correlation_id=job.correlation_id,
            causation_id=caused_by,
            traceparent=job.traceparent,
        ) as uow:
            yield uow


def _failed(
    job: store.Job, reason: Literal["declined", "provider_error"], detail: str
) -> PaymentFailed:
    return PaymentFailed(
        payment_id=job.payment_id, order_id=job.order_id, reason=reason, detail=detail
    )
