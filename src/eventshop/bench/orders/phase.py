"""One phase of the order benchmark: its orders placed and followed to their final states,
what the machine and the database did meanwhile, then the run settled (invariants, events)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventshop.bench.orders.config import BenchError, OrdersBenchConfig
from eventshop.bench.orders.load import OrderRecord, place, plans, start_placing
from eventshop.bench.orders.measure import (
    PgStats,
    Snapshot,
    outbox_backlog,
    pg_stats,
    saga_steps,
    snapshot,
)
from eventshop.bench.orders.shop import Shop
from eventshop.bench.orders.watcher import Final, FinalWatcher
from eventshop.tooling.invariants import InvariantReport, check_invariants


@dataclass
class PhaseResult:
    name: str
    mode: str
    records: list[OrderRecord]
    watcher_finals: dict[str, Final]
    t0: float
    placed_at: float
    before: Snapshot
    after: Snapshot
    pg_before: PgStats
    pg_after: PgStats
    events: dict[str, int]
    invariants: InvariantReport
    offered_rate: float | None
    outbox_unsent: dict[str, int] = field(default_factory=dict)
    #: milliseconds between the saga's steps, per step (measure.saga_step_times)
    saga_steps: dict[str, list[float]] = field(default_factory=dict)


async def run_phase(
    *,
    name: str,
    cfg: OrdersBenchConfig,
    shop: Shop,
    run: str,
    rate: float | None,
    placer: aiohttp.ClientSession,
    watcher: FinalWatcher,
    conn: asyncpg.Connection,
    console: Console,
    rng: random.Random,
) -> PhaseResult:
    records = plans(cfg, shop, run, name, rng)
    mode = (
        f"open loop, {rate:.1f} orders/s offered ({cfg.arrivals})"
        if rate
        else f"closed loop, concurrency {cfg.concurrency}"
    )
    console.print(f"[bold]{name}[/]: {cfg.orders} orders, {mode}")
    pg_before = await pg_stats(conn)
    before = await snapshot(conn)
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        placing = progress.add_task("placed", total=len(records))
        finishing = progress.add_task("final", total=len(records))
        t0 = time.monotonic()

        async def send(rec: OrderRecord) -> None:
            await place(placer, rec)
            progress.advance(placing)

        placing_done = start_placing(records, cfg, rate, rng, t0, send)

        async def follow() -> None:
            deadline: float | None = None
            while True:
                ids = [r.order_id for r in records if r.order_id]
                done = sum(1 for oid in ids if oid in watcher.finals)
                progress.update(finishing, completed=done)
                if watcher.lost is not None:
                    raise BenchError(f"the broker connection was lost: {watcher.lost}")
                if placing_done.done():
                    if done >= len(ids):
                        return
                    deadline = deadline or time.monotonic() + cfg.final_timeout_s
                    if time.monotonic() > deadline:
                        console.print(
                            f"[red]{len(ids) - done} orders not final "
                            f"{cfg.final_timeout_s:.0f} s after the last POST[/]"
                        )
                        return
                await asyncio.sleep(0.2)

        try:
            await asyncio.gather(placing_done, follow())
        except BaseException:
            placing_done.cancel()
            raise
        placed_at = max((r.answered for r in records if r.order_id), default=t0)

    order_ids = [r.order_id for r in records if r.order_id]
    invariants, events = await _settle(conn, cfg, records, order_ids, console)
    after = await snapshot(conn)
    # statistics: wait until every backend has published its own, then correct for idle time
    wait = cfg.stats_wait_s - (time.monotonic() - after.at)
    if wait > 0:
        await asyncio.sleep(wait)
    pg_after = await pg_stats(conn)
    unsent = await outbox_backlog(conn)
    steps = await saga_steps(conn, [r.correlation_id for r in records if r.order_id])
    if unsent:
        console.print(f"[red]events left unsent in outboxes: {unsent} (a relay not publishing?)[/]")
    return PhaseResult(
        name=name,
        mode=mode,
        records=records,
        watcher_finals=dict(watcher.finals),
        t0=t0,
        placed_at=placed_at,
        before=before,
        after=after,
        pg_before=pg_before,
        pg_after=pg_after,
        events=events,
        invariants=invariants,
        offered_rate=rate,
        outbox_unsent=unsent,
        saga_steps=steps,
    )


async def _settle(
    conn: asyncpg.Connection,
    cfg: OrdersBenchConfig,
    records: Sequence[OrderRecord],
    order_ids: list[str],
    console: Console,
    timeout_s: float = 60.0,
) -> tuple[InvariantReport, dict[str, int]]:
    """Wait until the run's work is over: invariants hold (points awarded, compensations done)
    and the archive has stopped receiving the run's events; return both."""
    correlation_ids = [r.correlation_id for r in records]
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] | None = None
    while True:
        report = await check_invariants(cfg.database_url, order_ids=order_ids)
        rows = await conn.fetch(
            "SELECT event_type, count(*) AS n FROM archive.archived_events"
            " WHERE correlation_id = ANY($1::text[]) GROUP BY event_type",
            correlation_ids,
        )
        events = {str(r["event_type"]): int(r["n"]) for r in rows}
        if (report.ok and events == last) or time.monotonic() > deadline:
            if not report.ok:
                console.print(f"[red]invariants still violated after {timeout_s:.0f} s[/]")
            return report, events
        last = events
        await asyncio.sleep(1.0)
