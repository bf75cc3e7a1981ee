"""The shop the order benchmark places its orders in: shoppers logged in, the catalogue known
to catalog, inventory and orders, and enough stock; made once and reused by later runs."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from eventshop.bench.orders.config import BenchError, OrdersBenchConfig, Say
from eventshop.tooling import shopclient

PASSWORD = "bench-password-1"
SKU_PREFIX = "BENCH"


@dataclass
class Shop:
    admin: str
    tokens: list[str]
    skus: list[str]


def units_needed(cfg: OrdersBenchConfig) -> int:
    """Units of each sku the runs may take, with a wide margin (at least 3x the mean)."""
    orders = cfg.orders * (2 if cfg.half_rate else 1)
    mean = orders * (1 + cfg.max_lines) / 2 * 1.5 / cfg.products
    return math.ceil(3 * mean + 10 * math.sqrt(mean + 1) + 20)


async def setup_shop(
    client: httpx.AsyncClient, cfg: OrdersBenchConfig, say: Say
) -> tuple[Shop, dict[str, int]]:
    """Shoppers logged in, the catalogue known to catalog, inventory and orders, stock ample.

    Returns the shop and what it did (products created, skus restocked)."""
    admin = await shopclient.log_in(client, shopclient.ADMIN, shopclient.ADMIN_PASSWORD)
    limit = asyncio.Semaphore(16)

    async def bounded(coro: Any) -> Any:
        async with limit:
            return await coro

    tokens = list(
        await asyncio.gather(
            *(
                bounded(shopclient.log_in(client, f"bench-shopper-{i:03d}@example.com", PASSWORD))
                for i in range(cfg.users)
            )
        )
    )
    skus = [f"{SKU_PREFIX}-{i:04d}" for i in range(cfg.products)]

    async def create(i: int, sku: str) -> bool:
        return await shopclient.create_product(
            client, admin, sku, f"Bench product {i}", 500 + (i * 37) % 9_500
        )

    created = sum(await asyncio.gather(*(bounded(create(i, s)) for i, s in enumerate(skus))))
    # orders prices a line from its own price list, filled from product.created: wait for it
    deadline = time.monotonic() + 60
    conn = await asyncpg.connect(cfg.database_url)
    try:
        while True:
            known = await conn.fetchval(
                "SELECT count(*) FROM orders.prices WHERE sku = ANY($1::text[]) AND active", skus
            )
            if known == len(skus):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"orders knows only {known} of the {len(skus)} products")
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    need = units_needed(cfg)

    async def top_up(sku: str) -> bool:
        # inventory learns of a product from product.created: 404 until it has
        r = await shopclient.call(
            client, "GET", f"/stock/{sku}", token=admin, retry_on=(404, 429, 503)
        )
        available = int(r.json()["available"])
        if available >= need:
            return False
        await shopclient.restock(client, admin, sku, need - available + need)
        return True

    restocked = sum(await asyncio.gather(*(bounded(top_up(s)) for s in skus)))
    say(
        f"shop: {len(tokens)} shoppers logged in; {len(skus)} products ({created} new), "
        f"{restocked} restocked to at least {need} units"
    )
    return Shop(admin, tokens, skus), {"products_created": created, "skus_restocked": restocked}
