"""orders' background jobs: the timeout scanner and the projections' live subscriptions.

No event says "time is up", so a job of every orders process looks for running orders past
their deadline (every `timeout_scan_interval_s`) and times them out (handlers.time_out_due_orders).
The projections orders_by_user and sales_per_sku follow the event log (projections.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from eventshop.platform.eventstore.projections import start_projections
from eventshop.platform.observability.logging import get_logger
from eventshop.services.orders import handlers, projections, store

if TYPE_CHECKING:
    from eventshop.services.orders.service import Context

log = get_logger(__name__)


async def time_out_orders(ctx: Context) -> None:
    """Scan until cancelled; a failed scan (database away) is logged and tried again."""
    while True:
        try:
            cancelled = await handlers.time_out_due_orders(ctx)
        except Exception as exc:
            log.warning("orders.timeout_scan_failed", error=repr(exc))
            cancelled = 0
        if cancelled < ctx.settings.timeout_scan_batch:  # else: more are due, go on at once
            await asyncio.sleep(ctx.settings.timeout_scan_interval_s)


async def run_projections(ctx: Context) -> None:
    """Each projection's live subscription (as start_projections runs them), until cancelled."""
    stop = start_projections(
        ctx.pool,
        store.events,
        projections.PROJECTIONS,
        batch=ctx.settings.projection_batch,
        poll_s=ctx.settings.projection_poll_s,
    )
    try:
        await asyncio.Event().wait()  # until the job is cancelled
    finally:
        await stop()
