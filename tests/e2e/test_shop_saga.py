"""Every path of the order saga, end to end over the gateway's HTTP API (docs/DESIGN.md §3)."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from eventshop.contracts import new_envelope
from eventshop.contracts.payments import PaymentFailed, PaymentSucceeded
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.tooling import broker
from tests.support.polling import eventually
from tests.support.shop import API, Shop

pytestmark = pytest.mark.e2e


async def test_confirmed(shop: Shop) -> None:
    sku = await shop.product(stock=5, price_minor=2_500)
    user = await shop.register()
    oid = await shop.place(user, [(sku, 2)])
    order = await shop.final(user, oid)
    assert order["status"] == "CONFIRMED"
    stock = await eventually(
        lambda: shop.stock(sku), lambda s: s["sold"] == 2, timeout=30, interval=0.1
    )
    assert (stock["on_hand"], stock["reserved"]) == (3, 0)
    payments = await shop.payments(user)
    assert [p["status"] for p in payments if p["order_id"] == oid] == ["captured"]

    async def points() -> int:
        r = await shop.client.get(f"{API}/loyalty/points", headers=user.auth)
        return int(r.json()["points"])

    # 5,000 minor units = 50 points
    assert await eventually(points, 50, timeout=30, interval=0.1) == 50

    async def notices() -> list[str]:
        r = await shop.client.get(f"{API}/notifications", headers=user.auth)
        body = r.json()
        return sorted(
            n["kind"] for n in (body["notifications"] if isinstance(body, dict) else body)
        )

    await eventually(
        notices,
        lambda kinds: "order_confirmed" in kinds and "welcome" in kinds,
        timeout=30,
        interval=0.1,
    )


async def test_out_of_stock(shop: Shop) -> None:
    sku = await shop.product(stock=1)
    user = await shop.register()
    order = await shop.final(user, await shop.place(user, [(sku, 2)]))
    assert (order["status"], order["reason"]) == ("CANCELLED", "out_of_stock")
    assert (await shop.stock(sku))["on_hand"] == 1


async def test_payment_declined_releases_stock(shop: Shop) -> None:
    sku = await shop.product(stock=3)
    user = await shop.register()
    order = await shop.final(user, await shop.place(user, [(sku, 2)], token="tok_decline"))
    assert (order["status"], order["reason"]) == ("CANCELLED", "payment_declined")
    stock = await eventually(
        lambda: shop.stock(sku), lambda s: s["reserved"] == 0, timeout=30, interval=0.1
    )
    assert (stock["on_hand"], stock["sold"]) == (3, 0)


async def test_fraud_releases_stock(shop: Shop) -> None:
    sku = await shop.product(stock=3)
    user = await shop.register(domain="fraud.test")
    order = await shop.final(user, await shop.place(user, [(sku, 1)]))
    assert (order["status"], order["reason"]) == ("CANCELLED", "fraud")
    stock = await eventually(
        lambda: shop.stock(sku), lambda s: s["reserved"] == 0, timeout=30, interval=0.1
    )
    assert stock["on_hand"] == 3


async def test_timeout_compensates_and_refunds_the_late_capture(shop: Shop) -> None:
    sku = await shop.product(stock=2)
    user = await shop.register()
    oid = await shop.place(user, [(sku, 1)], token="tok_slow")
    order = await shop.final(user, oid, timeout=30)
    assert (order["status"], order["reason"]) == ("CANCELLED", "timeout")
    stock = await eventually(
        lambda: shop.stock(sku), lambda s: s["reserved"] == 0, timeout=30, interval=0.1
    )
    assert stock["on_hand"] == 2

    async def payment_status() -> list[str]:
        return [p["status"] for p in await shop.payments(user) if p["order_id"] == oid]

    # the provider captures after the order timed out; payments refunds it
    await eventually(payment_status, ["refunded"], timeout=40, interval=0.1)


async def test_late_and_duplicate_events_after_the_final_state_change_nothing(shop: Shop) -> None:
    sku = await shop.product(stock=2)
    user = await shop.register()
    oid = await shop.place(user, [(sku, 1)])
    assert (await shop.final(user, oid))["status"] == "CONFIRMED"
    history = await shop.client.get(f"{API}/orders/{oid}/history", headers=user.auth)
    before = history.json()

    late_failure = new_envelope(
        "payment.failed",
        1,
        oid,
        PaymentFailed(payment_id=str(uuid.uuid4()), order_id=oid, reason="declined").model_dump(
            mode="json"
        ),
    )
    duplicate_success = new_envelope(
        "payment.succeeded",
        1,
        oid,
        PaymentSucceeded(
            payment_id=str(uuid.uuid4()), order_id=oid, amount_minor=1_000, currency="EUR"
        ).model_dump(mode="json"),
    )
    # sent as payments itself would send them: its broker user, named in user_id
    conn = await aio_pika.connect(broker.amqp_url("payments"))
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("eventshop.events", ensure=False)
        for env in (late_failure, duplicate_success, duplicate_success):
            message = message_from_envelope(env)
            message.user_id = "payments"
            await exchange.publish(message, routing_key=env.event_type, mandatory=True)
    finally:
        await conn.close()
    # the events were handled (the inbox of orders has them) and changed nothing

    async def handled() -> bool:
        import asyncpg

        c = await asyncpg.connect("postgresql://root@127.0.0.1:5432/eventshop")
        try:
            n = await c.fetchval(
                "SELECT count(*) FROM orders.inbox WHERE event_id = ANY($1::uuid[])",
                [late_failure.event_id, duplicate_success.event_id],
            )
            return bool(n == 2)
        finally:
            await c.close()

    await eventually(handled, True, timeout=30, interval=0.1)
    assert (await shop.order(user, oid))["status"] == "CONFIRMED"
    after = await shop.client.get(f"{API}/orders/{oid}/history", headers=user.auth)
    assert after.json() == before


async def test_two_hundred_orders_race_for_fifty_units(shop: Shop) -> None:
    sku = await shop.product(stock=50, price_minor=100)
    users = await asyncio.gather(*(shop.register() for _ in range(20)))
    placed = await asyncio.gather(*(shop.place(users[i % 20], [(sku, 1)]) for i in range(200)))
    finals = await asyncio.gather(
        *(shop.final(users[i % 20], oid, timeout=60) for i, oid in enumerate(placed))
    )
    statuses = [o["status"] for o in finals]
    assert statuses.count("CONFIRMED") == 50
    assert all(o["reason"] == "out_of_stock" for o in finals if o["status"] == "CANCELLED")
    stock = await eventually(
        lambda: shop.stock(sku), lambda s: s["reserved"] == 0, timeout=30, interval=0.1
    )
    assert (stock["on_hand"], stock["sold"]) == (0, 50)
