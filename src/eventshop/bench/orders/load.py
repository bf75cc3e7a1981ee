"""The order benchmark's load generator: what each order asks for, when it is sent, the POST.

Closed loop (no rate): `concurrency` shoppers, each placing its next order as soon as the
previous POST is answered. Open loop: orders due at Poisson or even arrivals at `rate`/s,
whatever the platform does; an order's time counts from when it was due.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from eventshop.bench.orders.config import OrdersBenchConfig
from eventshop.bench.orders.shop import Shop
from eventshop.tooling.shopclient import API


@dataclass
class OrderRecord:
    index: int
    correlation_id: str
    body: bytes
    token: str
    key: str
    #: when the order was due (open loop) or its first POST began (closed loop)
    start: float = 0.0
    first_send: float = 0.0
    answered: float = 0.0
    order_id: str | None = None
    attempts: int = 0
    error: str | None = None


def plans(
    cfg: OrdersBenchConfig, shop: Shop, run: str, phase: str, rng: random.Random
) -> list[OrderRecord]:
    """`cfg.orders` orders: 1..max_lines distinct skus, 1..2 units each, shoppers in turn."""
    records = []
    for i in range(cfg.orders):
        skus = rng.sample(shop.skus, rng.randint(1, cfg.max_lines))
        body = orjson.dumps(
            {
                "lines": [{"sku": s, "quantity": rng.randint(1, 2)} for s in skus],
                "payment_token": "tok_visa",
            }
        )
        records.append(
            OrderRecord(
                index=i,
                correlation_id=f"bench-{run}-{phase}-{i:06d}",
                body=body,
                token=shop.tokens[i % len(shop.tokens)],
                key=str(uuid.uuid4()),
            )
        )
    return records


async def place(placer: aiohttp.ClientSession, rec: OrderRecord) -> None:
    """POST one order until it is accepted (202) or refused for good; retries 429/503 and
    transport errors, with the same Idempotency-Key (so never a second order)."""
    headers = {
        "Authorization": f"Bearer {rec.token}",
        "Idempotency-Key": rec.key,
        "X-Correlation-ID": rec.correlation_id,
        "Content-Type": "application/json",
    }
    for attempt in range(50):
        rec.attempts += 1
        if attempt == 0:
            rec.first_send = time.monotonic()
        try:
            async with placer.post(API + "/orders", data=rec.body, headers=headers) as r:
                status, text = r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
            continue
        if status == 202:
            rec.answered = time.monotonic()
            rec.order_id = str(orjson.loads(text)["order_id"])
            rec.error = None
            return
        rec.error = f"{status}: {text[:200]}"
        if status in (429, 503):
            await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
            continue
        return
    return


def start_placing(
    records: Sequence[OrderRecord],
    cfg: OrdersBenchConfig,
    rate: float | None,
    rng: random.Random,
    t0: float,
    send: Callable[[OrderRecord], Coroutine[Any, Any, None]],
) -> asyncio.Future[Any]:
    """`send` every record, in a closed loop (`rate` None) or an open one starting at `t0`;
    the future is done when every record has been sent (and answered, or given up)."""
    if rate is None:
        pending = iter(records)

        async def worker() -> None:
            for rec in pending:
                rec.start = time.monotonic()
                await send(rec)

        return asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
    due = 0.0
    for rec in records:
        rec.start = t0 + due
        due += rng.expovariate(rate) if cfg.arrivals == "poisson" else 1.0 / rate

    async def scheduler() -> None:
        tasks = []
        for rec in records:
            delay = rec.start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(rec)))
        await asyncio.gather(*tasks)

    return asyncio.ensure_future(scheduler())
