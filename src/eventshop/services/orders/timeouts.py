"""The timeout scanner: cancels the orders still running when their deadline passes.

No event says "time is up", so a background task of every orders process looks for running
orders past their deadline (every `timeout_scan_interval_s`) and applies the saga's TimedOut
step to each, in one transaction per batch: append + read model + outbox, as a handler would.
The rows are taken FOR UPDATE SKIP LOCKED, so several orders processes split the work and
never wait on an order that a consumer is advancing at that moment (it is looked at again on
the next scan, and the saga ignores a timeout that arrives after a final state).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from eventshop.platform.observability.logging import get_logger
from eventshop.platform.uow import UnitOfWork
from eventshop.services.orders import domain, handlers, store
from eventshop.services.orders.settings import OrdersSettings

log = get_logger(__name__)


class TimeoutScanner:
    def __init__(
        self, pool: asyncpg.Pool, settings: OrdersSettings, *, service: str = "orders"
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._service = service

    async def scan_once(self) -> int:
        """Time out one batch of orders past their deadline; how many were cancelled."""
        cancelled = 0
        async with UnitOfWork.begin(self._pool, service=self._service) as batch:
            due = await store.lock_orders_past_deadline(
                batch.conn, self._settings.timeout_scan_batch
            )
            for order in due:
                # each order's events carry the correlation id of the request that placed it
                uow = UnitOfWork(
                    conn=batch.conn,
                    service=self._service,
                    correlation_id=order.correlation_id,
                    pending=batch.pending,
                    committed_hooks=batch.committed_hooks,  # run once the batch commits
                )
                emitted = len(batch.pending)
                try:
                    async with batch.conn.transaction():  # a savepoint: one bad order stays alone
                        decision = await handlers.advance(
                            uow, order.order_id, domain.TimedOut(at=order.checked_at)
                        )
                except Exception:
                    del batch.pending[emitted:]
                    log.exception("orders.timeout_failed", order_id=order.order_id)
                    continue
                if decision is not None and decision.record:
                    cancelled += 1
        if cancelled:
            log.info("orders.timed_out", count=cancelled)
        return cancelled

    async def run(self) -> None:
        """Scan until cancelled; a failed scan (database away) is logged and tried again."""
        while True:
            try:
                cancelled = await self.scan_once()
            except Exception as exc:
                log.warning("orders.timeout_scan_failed", error=repr(exc))
                cancelled = 0
            if cancelled < self._settings.timeout_scan_batch:  # else: more are due, go on at once
                await asyncio.sleep(self._settings.timeout_scan_interval_s)


def start_scanner(
    pool: asyncpg.Pool, settings: OrdersSettings, *, service: str = "orders"
) -> Callable[[], Awaitable[None]]:
    """Run the scanner in the background; returns the function that stops it."""
    task = asyncio.create_task(
        TimeoutScanner(pool, settings, service=service).run(), name="orders:timeouts"
    )

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
