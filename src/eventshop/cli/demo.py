"""The shopping demo: the platform working for real, over its public HTTP API.

It starts the platform (if it is not running), creates a catalogue and stock as an admin,
registers shoppers, and places a few hundred orders concurrently through the gateway. Some
must run out of stock (a rare sku), some are declined by the payment provider (`tok_decline`),
some are flagged as fraud (shoppers of a blocked e-mail domain), and some time out (a payment
provider slower than the order timeout: the order is cancelled, stock released and the late
capture refunded). It shows progress, waits for every order to reach a final state, prints a
summary, checks the invariants of docs/DESIGN.md §3, and ends with one JSON line.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventshop.platform.bus.node import connect
from eventshop.tooling.invariants import InvariantReport, check_invariants
from eventshop.tooling.shopclient import (
    ADMIN,
    ADMIN_PASSWORD,
    call,
    create_product,
    log_in,
    restock,
)

PASSWORD = "demo-password-1"


@dataclass
class Shopper:
    email: str
    token: str = ""
    orders: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What one order asks for, and what the demo expects of it."""

    shopper: Shopper
    lines: list[dict[str, Any]]
    token: str
    expect: str


async def _setup_catalog(
    client: httpx.AsyncClient, admin: str, run: str, say: Callable[[str], None]
) -> tuple[list[str], str]:
    skus = [f"{run}-SKU-{i:03d}" for i in range(20)]
    rare = f"{run}-RARE"
    for i, sku in enumerate([*skus, rare]):
        await create_product(client, admin, sku, f"Demo product {i}", 500 + 250 * i)
    for sku in skus:
        await restock(client, admin, sku, 1000)
    await restock(client, admin, rare, 10)
    say(f"catalogue: {len(skus) + 1} products, {rare} with only 10 units")
    return skus, rare


def _plans(
    shoppers: list[Shopper],
    fraudsters: list[Shopper],
    skus: list[str],
    rare: str,
    n: int,
    rng: random.Random,
) -> list[Plan]:
    plans: list[Plan] = []
    n_rare, n_decline, n_fraud, n_slow = n // 8, n // 10, n // 15, max(3, n // 30)
    for _ in range(n_rare):
        plans.append(Plan(rng.choice(shoppers), [{"sku": rare, "quantity": 1}], "tok_visa", "rare"))
    for _ in range(n_decline):
        plans.append(
            Plan(
                rng.choice(shoppers),
                [{"sku": rng.choice(skus), "quantity": 1}],
                "tok_decline",
                "payment_declined",
            )
        )
    for _ in range(n_fraud):
        plans.append(
            Plan(
                rng.choice(fraudsters),
                [{"sku": rng.choice(skus), "quantity": 1}],
                "tok_visa",
                "fraud",
            )
        )
    for _ in range(n_slow):
        plans.append(
            Plan(
                rng.choice(shoppers),
                [{"sku": rng.choice(skus), "quantity": 1}],
                "tok_slow",
                "timeout",
            )
        )
    while len(plans) < n:
        lines = [
            {"sku": s, "quantity": rng.randint(1, 3)} for s in rng.sample(skus, rng.randint(1, 3))
        ]
        plans.append(Plan(rng.choice(shoppers), lines, "tok_visa", "CONFIRMED"))
    rng.shuffle(plans)
    return plans


async def run_demo(
    orders: int = 300,
    concurrency: int = 16,
    database_url: str = "postgresql://root@127.0.0.1:5432/eventshop",
    console: Console | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    say = console.print
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency + 8)

    async def correlate(request: httpx.Request) -> None:
        # every request starts its own chain; the prefix lets the summary find this run's events
        request.headers["X-Correlation-ID"] = f"demo-{run}-{uuid.uuid4().hex[:12]}"

    async with httpx.AsyncClient(
        timeout=15.0, limits=limits, event_hooks={"request": [correlate]}
    ) as client:
        admin = await log_in(client, ADMIN, ADMIN_PASSWORD, "Admin")
        skus, rare = await _setup_catalog(client, admin, run, say)
        shoppers = [Shopper(f"shopper{i}.{run}@example.com") for i in range(20)]
        fraudsters = [Shopper(f"mallory{i}.{run}@fraud.test") for i in range(4)]
        tokens = await asyncio.gather(
            *(log_in(client, s.email, PASSWORD) for s in shoppers + fraudsters)
        )
        for s, t in zip(shoppers + fraudsters, tokens, strict=True):
            s.token = t
        say(f"shoppers: {len(shoppers)} (and {len(fraudsters)} at a blocked domain)")
        plans = _plans(shoppers, fraudsters, skus, rare, orders, rng)

        progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        placed_ids: dict[str, Plan] = {}
        with progress:
            placing = progress.add_task("placed", total=len(plans))
            final_task = progress.add_task("final state", total=len(plans))
            queue: asyncio.Queue[Plan] = asyncio.Queue()
            for p in plans:
                queue.put_nowait(p)

            async def worker() -> None:
                while not queue.empty():
                    plan = queue.get_nowait()
                    key = str(uuid.uuid4())
                    r = await call(
                        client,
                        "POST",
                        "/orders",
                        token=plan.shopper.token,
                        json={"lines": plan.lines, "payment_token": plan.token},
                        headers={"Idempotency-Key": key},
                        retry_on=(422, 429, 503),
                    )
                    oid = r.json()["order_id"]
                    plan.shopper.orders.append(oid)
                    placed_ids[oid] = plan
                    progress.advance(placing)

            finals: dict[str, dict[str, Any]] = {}

            async def watch() -> None:
                while len(finals) < len(plans):
                    for s in shoppers + fraudsters:
                        if not s.orders:
                            continue
                        r = await call(client, "GET", "/orders?limit=500", token=s.token)
                        for o in r.json()["orders"] if isinstance(r.json(), dict) else r.json():
                            if o["order_id"] in placed_ids and o["status"] in (
                                "CONFIRMED",
                                "CANCELLED",
                            ):
                                finals[o["order_id"]] = o
                    progress.update(final_task, completed=len(finals))
                    await asyncio.sleep(0.3)

            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            try:
                await asyncio.wait_for(watcher, timeout=120)
            except TimeoutError:
                say("[red]some orders did not reach a final state in 120 s[/]")

    outcomes = Counter(
        o["status"] if o["status"] == "CONFIRMED" else f"CANCELLED:{o.get('reason')}"
        for o in finals.values()
    )
    report = await _settled_invariants(database_url, list(placed_ids))
    summary = await _summary(database_url, run, list(placed_ids))
    cancelled = {k.split(":", 1)[1]: v for k, v in outcomes.items() if k.startswith("CANCELLED:")}
    result = {
        "orders": len(plans),
        "final": len(finals),
        "confirmed": outcomes.get("CONFIRMED", 0),
        "cancelled": cancelled,
        **summary,
        "invariants_ok": report.ok,
        "violations": report.violations[:10],
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result


async def _settled_invariants(
    database_url: str, order_ids: list[str], timeout_s: float = 40.0
) -> InvariantReport:
    """Compensations (refunds of late captures, releases) end after the final state: wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await check_invariants(database_url, order_ids=order_ids)
        if report.ok or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.5)


async def _summary(database_url: str, run: str, order_ids: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM archive.archived_events WHERE correlation_id LIKE $1",
            f"demo-{run}%",
        )
        notices = await conn.fetchval(
            "SELECT count(*) FROM notifications.notifications WHERE ref = ANY($1::text[])",
            order_ids,
        )
        points = await conn.fetchval(
            "SELECT coalesce(sum(points), 0) FROM loyalty.awards WHERE order_id = ANY($1::text[])",
            order_ids,
        )
    finally:
        await conn.close()
    parked = await _parked_total()
    return {
        "events_published": int(events),
        "notifications_sent": int(notices),
        "points_awarded": int(points),
        "parked": parked,
    }


async def _parked_total() -> int:
    import aio_pika

    from eventshop.tooling.supervise import SERVICES

    total = 0
    from eventshop.platform.settings import PlatformSettings

    # the operator's user; the broker may be restarting under the demo (it is meant to survive
    # that): wait for it a while rather than fail the count
    deadline = time.monotonic() + 90
    while True:
        try:
            conn = await connect(PlatformSettings().amqp_url)
            break
        except (OSError, aio_pika.exceptions.AMQPConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    try:
        for service in SERVICES:
            channel = await conn.channel()
            try:
                q = await channel.declare_queue(f"{service}.parked", passive=True)
                total += q.declaration_result.message_count or 0
            except Exception:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await conn.close()
    return total
