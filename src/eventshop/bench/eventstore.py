"""The event store benchmark (`eventshop bench eventstore`), on the real PostgreSQL.

What it measures, each phase repeated `rounds` times in one run and reported as the median
(min-max beside it), in schemas of its own (random names, dropped at the end; the rebuild has
one to itself, so its log holds only orders, as orders' store does):

1. appends/s: each append its own transaction (BEGIN, append, COMMIT), one event or ten, by
   1, 4 and 16 concurrent writers (each on its own connection, each to its own streams, so
   no conflicts: what is measured is the store, not retries). Appends to one store take
   turns from the append to the commit (docs/adr/0005): concurrency buys group commit and
   overlapped round trips, not parallel appends;
2. stream load: a stream of 10 and of 1,000 events folded into a state, from the first event
   and from a snapshot one event behind the head; and orders' own load of a confirmed order
   (5 events), with and without a snapshot;
3. projection rebuild: the log filled with `orders` synthetic orders as the orders service
   writes them (5 events each; one in five cancelled), each projection's live tables caught
   up (as on a running platform), then the projection rebuilt from position zero (shadow
   tables, compare with the live ones, swap): events applied per second, the whole rebuild
   timed (set-up, bulk, final catch-up, comparison and swap).

The command prints a table to stderr and one JSON object on the last line of stdout.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from eventshop.contracts.common import Line
from eventshop.platform.db import PLATFORM_MIGRATIONS, create_pool, migrate
from eventshop.platform.eventstore import (
    MIGRATIONS,
    NewEvent,
    PostgresEventStore,
    RecordedEvent,
    Snapshot,
    load_state,
)
from eventshop.platform.eventstore.projections import CatchUp
from eventshop.platform.eventstore.rebuild import rebuild
from eventshop.platform.settings import PlatformSettings

ORDERS_MIGRATIONS = "eventshop.services.orders.migrations"
# an event of about the size of orders' OrderPlaced (~300 bytes of JSON)
PAYLOAD = {
    "sku": "SKU-000123",
    "quantity": 3,
    "unit_price_minor": 1_250,
    "currency": "EUR",
    "note": "x" * 200,
}


@dataclass(frozen=True)
class BenchConfig:
    settings: PlatformSettings
    rounds: int = 3
    appends: int = 2_000
    concurrency: tuple[int, ...] = (1, 4, 16)
    loads: int = 200
    orders: int = 20_000
    rebuild_batch: int = 5_000

    @property
    def schema(self) -> str:
        return f"bench_es_{uuid.uuid4().hex[:8]}"


def _median(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


# -- appends ------------------------------------------------------------------------------------
async def _append_round(
    pool: asyncpg.Pool, store: PostgresEventStore, appends: int, writers: int, size: int
) -> float:
    """Appends/s for `appends` appends of `size` events by `writers` concurrent writers."""
    run = uuid.uuid4().hex[:6]
    batch = [NewEvent("Benched", PAYLOAD) for _ in range(size)]
    share = [appends // writers + (1 if w < appends % writers else 0) for w in range(writers)]

    async def writer(w: int, count: int) -> None:
        versions = [0] * 10
        async with pool.acquire() as conn:
            for i in range(count):
                s = i % 10
                async with conn.transaction():
                    await store.append(conn, f"a-{run}-{w}-{s}", versions[s], batch)
                versions[s] += size

    started = time.perf_counter()
    await asyncio.gather(*(writer(w, n) for w, n in enumerate(share)))
    return appends / (time.perf_counter() - started)


async def bench_appends(
    pool: asyncpg.Pool, store: PostgresEventStore, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in (1, 10):
        for writers in cfg.concurrency:
            rates = [
                await _append_round(pool, store, cfg.appends, writers, size)
                for _ in range(cfg.rounds)
            ]
            key = f"{size}_event{'s' if size > 1 else ''}_x{writers}"
            results[key] = {
                "appends_per_s": _median(rates),
                "events_per_s": _median([r * size for r in rates]),
            }
            say(
                f"appends of {size:>2} event(s), {writers:>2} writers:"
                f" {statistics.median(rates):>8,.0f} appends/s"
            )
    return results


# -- loads --------------------------------------------------------------------------------------
def _fold(state: dict[str, Any] | None, event: RecordedEvent) -> dict[str, Any]:
    state = state or {"count": 0, "units": 0, "last": None}
    return {
        "count": state["count"] + 1,
        "units": state["units"] + int(event.payload["quantity"]),
        "last": event.payload,
    }


class _Codec:
    schema_version = 1

    def encode(self, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def decode(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


async def _timed(work: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    """Milliseconds per call, `times` calls (one after another)."""
    spent: list[float] = []
    for _ in range(times):
        started = time.perf_counter()
        await work()
        spent.append((time.perf_counter() - started) * 1_000)
    return spent


async def bench_loads(
    pool: asyncpg.Pool, store: PostgresEventStore, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    codec = _Codec()
    async with pool.acquire() as conn:
        for length in (10, 1_000):
            sid = f"load-{length}-{uuid.uuid4().hex[:6]}"
            for first in range(0, length, 100):
                n = min(100, length - first)
                await store.append(conn, sid, first, [NewEvent("Benched", PAYLOAD)] * n)
            behind = (await load_state(store, conn, sid, _fold, to_version=length - 1)).state
            assert behind is not None
            await store.save_snapshot(conn, Snapshot(sid, length - 1, 1, behind))
            full = await load_state(store, conn, sid, _fold)
            fast = await load_state(store, conn, sid, _fold, codec)
            assert full.state == fast.state and fast.replayed == 1

            async def replay(sid: str = sid) -> None:
                await load_state(store, conn, sid, _fold)

            async def from_snapshot(sid: str = sid) -> None:
                await load_state(store, conn, sid, _fold, codec)

            for label, work in (("replayed", replay), ("snapshot", from_snapshot)):
                rounds = [
                    statistics.median(await _timed(work, cfg.loads)) for _ in range(cfg.rounds)
                ]
                results[f"{length}_events_{label}_ms"] = _median(rounds)
                say(f"load {length:>5} events, {label:<9}: {statistics.median(rounds):7.3f} ms")
        results.update(await _bench_order_load(conn, cfg, say))
    return results


async def _bench_order_load(
    conn: asyncpg.Connection, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    from eventshop.services.orders import eventlog
    from eventshop.services.orders import store as orders

    async with conn.transaction():
        (order_id,) = await _write_orders(conn, orders.events, 1, cancel_every=0)
    sid = orders.stream_of(order_id)
    order = await orders.load_order(conn, order_id)
    assert order is not None and order.version == 5
    await orders.events.save_snapshot(
        conn, Snapshot(sid, 5, eventlog.CODEC.schema_version, eventlog.CODEC.encode(order))
    )
    results: dict[str, Any] = {}
    for label, codec in (("replayed", None), ("snapshot", eventlog.CODEC)):

        async def load(codec: Any = codec) -> None:
            await load_state(orders.events, conn, sid, orders.fold, codec)

        rounds = [statistics.median(await _timed(load, cfg.loads)) for _ in range(cfg.rounds)]
        results[f"order_5_events_{label}_ms"] = _median(rounds)
        say(f"load an order (5 events), {label:<9}: {statistics.median(rounds):7.3f} ms")
    return results


# -- projection rebuild -------------------------------------------------------------------------
async def _write_orders(
    conn: asyncpg.Connection, store: PostgresEventStore, count: int, *, cancel_every: int = 5
) -> list[str]:
    """`count` orders as the orders service records them: placed, reserved, paid, confirmed
    (one in `cancel_every` declined and cancelled), one append per order."""
    from eventshop.services.orders import domain

    prices = {
        f"SKU-{i:03d}": domain.Price(f"SKU-{i:03d}", f"Product {i}", 500 + i * 10, "EUR")
        for i in range(50)
    }
    now = datetime.now(UTC)
    ids: list[str] = []
    for n in range(count):
        order_id = str(uuid.uuid4())
        wanted = [
            Line(sku=f"SKU-{(n + k * 7) % 50:03d}", quantity=1 + (n + k) % 3) for k in range(2)
        ]
        placed = domain.place(
            order_id=order_id,
            user_id=f"user-{n % 500}",
            email=f"user-{n % 500}@example.com",
            wanted=wanted,
            prices=prices,
            payment_token="tok_visa",
            now=now,
            timeout=timedelta(seconds=30),
        )
        reserved = domain.decide(placed.state, domain.StockReserved())
        if cancel_every and n % cancel_every == 0:
            fact: domain.SagaEvent = domain.PaymentFailed(
                payment_id=f"p-{n}", reason="payment_declined"
            )
        else:
            fact = domain.PaymentSucceeded(
                payment_id=f"p-{n}", amount_minor=placed.state.total_minor, currency="EUR"
            )
        paid = domain.decide(reserved.state, fact)
        record = (*placed.record, *reserved.record, *paid.record)
        await store.append(
            conn,
            f"order-{order_id}",
            0,
            [NewEvent(e.type_name(), e.model_dump(mode="json"), e.schema_version) for e in record],
            metadata={"correlation_id": order_id, "causation_id": None},
        )
        ids.append(order_id)
    return ids


async def bench_rebuild(
    pool: asyncpg.Pool, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    from eventshop.services.orders import projections
    from eventshop.services.orders import store as orders

    started = time.perf_counter()
    async with pool.acquire() as conn:
        for first in range(0, cfg.orders, 200):
            async with conn.transaction():
                await _write_orders(conn, orders.events, min(200, cfg.orders - first))
        head = await orders.events.head(conn)
    say(f"wrote {cfg.orders:,} orders ({head:,} events) in {time.perf_counter() - started:.1f} s")
    results: dict[str, Any] = {"log_events": head}
    for projection in projections.PROJECTIONS:
        # as on a running platform: the live projection is up to date when the rebuild starts
        live = CatchUp(pool, orders.events, projection, batch=cfg.rebuild_batch)
        await live.setup()
        await live.catch_up()
        rates: list[float] = []
        scans: list[float] = []
        applied = 0
        for _ in range(cfg.rounds):
            report = await rebuild(pool, orders.events, projection, batch=cfg.rebuild_batch)
            rates.append(report.rate)
            scans.append(report.position / report.seconds)
            applied = report.events
        results[projection.name] = {
            "events_applied": applied,
            "events_per_s": _median(rates),
            "log_positions_per_s": _median(scans),
        }
        say(
            f"rebuild {projection.name}: {applied:,} events,"
            f" {statistics.median(rates):,.0f} events/s"
        )
    return results


# -- the run ------------------------------------------------------------------------------------
async def run_bench(cfg: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Appends and loads in one schema; the rebuild in another, whose log is only orders'."""
    schemas = [cfg.schema, cfg.schema]
    writers = max(cfg.concurrency)
    pools: list[asyncpg.Pool] = []
    try:
        for schema in schemas:
            pool = await create_pool(cfg.settings.database_url, schema, max_size=writers + 2)
            pools.append(pool)
            await migrate(pool, [PLATFORM_MIGRATIONS, MIGRATIONS, ORDERS_MIGRATIONS])
        async with pools[0].acquire() as conn:
            server = {
                "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
                "version": await conn.fetchval("SHOW server_version"),
            }
        store = PostgresEventStore()
        say(f"schemas {', '.join(schemas)}; {cfg.rounds} rounds per figure, medians")
        report: dict[str, Any] = {"schemas": schemas, "rounds": cfg.rounds, "server": server}
        report["appends"] = await bench_appends(pools[0], store, cfg, say)
        report["loads"] = await bench_loads(pools[0], store, cfg, say)
        report["rebuild"] = await bench_rebuild(pools[1], cfg, say)
        return report
    finally:
        for pool in pools:
            await pool.close()
        conn = await asyncpg.connect(cfg.settings.database_url)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def print_report(report: Mapping[str, Any], console: Any) -> None:
    from rich.table import Table

    def fig(m: Mapping[str, float], fmt: str) -> str:
        return f"{m['median']:{fmt}}  ({m['min']:{fmt}}-{m['max']:{fmt}})"

    appends = Table(title="appends (each its own transaction)")
    appends.add_column("events per append", justify="right")
    appends.add_column("writers", justify="right")
    appends.add_column("appends/s median (min-max)", justify="right")
    appends.add_column("events/s", justify="right")
    for key, value in report["appends"].items():
        size, writers = key.split("_")[0], key.split("_x")[1]
        appends.add_row(
            size, writers, fig(value["appends_per_s"], ",.0f"),
            f"{value['events_per_s']['median']:,.0f}",
        )  # fmt: skip
    console.print(appends)

    loads = Table(title="stream load (fold into a state)")
    loads.add_column("what")
    loads.add_column("ms median (min-max)", justify="right")
    for key, value in report["loads"].items():
        loads.add_row(key.removesuffix("_ms").replace("_", " "), fig(value, ".3f"))
    console.print(loads)

    rebuilds = Table(
        title=f"projection rebuild ({report['rebuild']['log_events']:,} events in the log)"
    )
    rebuilds.add_column("projection")
    rebuilds.add_column("events applied", justify="right")
    rebuilds.add_column("events/s median (min-max)", justify="right")
    rebuilds.add_column("log positions/s", justify="right")
    for name, value in report["rebuild"].items():
        if name == "log_events":
            continue
        rebuilds.add_row(
            name, f"{value['events_applied']:,}", fig(value["events_per_s"], ",.0f"),
            f"{value['log_positions_per_s']['median']:,.0f}",
        )  # fmt: skip
    console.print(rebuilds)
