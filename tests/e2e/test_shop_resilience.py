"""The shop keeps its promises while its services stop and restart (docs/DESIGN.md §3, §5)."""

from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest

from eventshop.services import PORTS
from eventshop.tooling import supervise
from tests.support.polling import eventually
from tests.support.shop import Shop, User

pytestmark = pytest.mark.e2e


async def test_an_order_placed_while_payments_is_stopped_completes_when_it_is_back(
    shop: Shop, platform: supervise.Layout
) -> None:
    sku = await shop.product(stock=3)
    user = await shop.register()
    supervise.stop_service(platform, "payments")
    try:
        oid = await shop.place(user, [(sku, 1)])
        # inventory reserves; the saga waits for a payment nobody is processing
        await eventually(
            lambda: shop.order(user, oid),
            lambda o: o["status"] == "AWAITING_PAYMENT",
            timeout=30,
            interval=0.1,
        )
    finally:
        supervise.start_service(platform, "payments")
    await supervise.wait_ready(["payments"])
    assert (await shop.final(user, oid))["status"] == "CONFIRMED"


async def test_restarting_every_service_during_300_orders_changes_no_outcome(
    shop: Shop, platform: supervise.Layout
) -> None:
    rng = random.Random(7)
    skus = [await shop.product(stock=10_000, price_minor=300) for _ in range(3)]
    # 30 shoppers, 10 orders each: under the fraud rules' velocity limit (20 a minute)
    users = await asyncio.gather(*(shop.register() for _ in range(30)))
    plans = [
        (users[i % 30], rng.choice(skus), "tok_decline" if i % 10 == 0 else "tok_visa")
        for i in range(300)
    ]

    async def place_all() -> list[str]:
        sem = asyncio.Semaphore(8)

        async def one(user: User, sku: str, token: str) -> str:
            async with sem:
                return await shop.place(user, [(sku, 1)], token=token)

        return list(await asyncio.gather(*(one(*p) for p in plans)))

    async def restart_all() -> None:
        for service in [s for s in PORTS if s != "gateway"]:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(supervise.restart_service, platform, service)
            await supervise.wait_ready([service])

    placed, _ = await asyncio.gather(place_all(), restart_all())
    finals = await asyncio.gather(
        *(shop.final(p[0], oid, timeout=90) for p, oid in zip(plans, placed, strict=True))
    )
    for (_, _, token), order in zip(plans, finals, strict=True):
        expected = (
            ("CANCELLED", "payment_declined") if token == "tok_decline" else ("CONFIRMED", None)
        )
        assert (order["status"], order.get("reason")) == expected, order


async def test_a_crashed_service_is_restarted_by_the_supervisor(
    shop: Shop, platform: supervise.Layout
) -> None:
    async def new_pid() -> int:
        return int(supervise.service_pid(platform, "inventory") or 0)

    # a pid of 0 ("not running": just restarted by another test, still STARTING) must never
    # reach os.kill, which would kill this test's whole process group
    before = await eventually(new_pid, lambda pid: pid > 0, timeout=60, interval=0.1)
    os.kill(before, signal.SIGKILL)

    await eventually(new_pid, lambda pid: pid not in (0, before), timeout=30, interval=0.1)
    assert all((await supervise.wait_ready(["inventory"])).values())
    # and it works: an order needs inventory
    sku = await shop.product(stock=1)
    user = await shop.register()
    assert (await shop.final(user, await shop.place(user, [(sku, 1)])))["status"] == "CONFIRMED"
