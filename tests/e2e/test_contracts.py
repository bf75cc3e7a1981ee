"""Every event the services publish in a run validates against its registered contract, is
published by the service that owns it, and the AsyncAPI document lists every event."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from eventshop.asyncapi import build_asyncapi
from eventshop.contracts import PRODUCERS, registry
from eventshop.platform.settings import PlatformSettings
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e

#: every event type the scenario below makes some service publish
EXPECTED = (
    "product.created",
    "stock.adjusted",
    "user.registered",
    "order.created",
    "inventory.reserved",
    "inventory.rejected",
    "payment.requested",
    "payment.succeeded",
    "payment.failed",
    "order.confirmed",
    "order.cancelled",
    "inventory.released",
    "notification.sent",
    "loyalty.points_awarded",
)


async def test_every_published_event_matches_its_contract(shop: Shop) -> None:
    conn = await aio_pika.connect(PlatformSettings().amqp_url)  # the operator's user
    try:
        channel = await conn.channel()
        tap = await channel.declare_queue(f"contract-tap-{uuid.uuid4().hex[:8]}", exclusive=True)
        await tap.bind("eventshop.events", routing_key="#")
        sku = await shop.product(stock=5)
        ok_user = await shop.register()
        bad_user = await shop.register(domain="fraud.test")
        orders = [
            (ok_user, await shop.place(ok_user, [(sku, 1)])),
            (ok_user, await shop.place(ok_user, [(sku, 1)], token="tok_decline")),
            (ok_user, await shop.place(ok_user, [(sku, 99)])),
            (bad_user, await shop.place(bad_user, [(sku, 1)])),
        ]
        for user, oid in orders:
            await shop.final(user, oid)
        seen: dict[str, int] = {}
        # every message is read and checked; events after the final state (points, mails)
        # may still be on their way, so an empty queue ends it only once every type was seen
        # (or after 10 s with nothing new)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 10:
            msg = await tap.get(no_ack=True, fail=False, timeout=5)
            if msg is None:
                if all(seen.get(t) for t in EXPECTED):
                    break
                await asyncio.sleep(0.1)
                continue
            quiet_since = time.monotonic()
            envelope, _ = registry.decode(msg.body)  # raises if it breaks its contract
            assert msg.type == envelope.event_type
            assert msg.message_id == str(envelope.event_id)
            assert msg.app_id == PRODUCERS[envelope.event_type], envelope.event_type
            seen[envelope.event_type] = seen.get(envelope.event_type, 0) + 1
        for expected in EXPECTED:
            assert seen.get(expected), f"no {expected} seen: {seen}"
    finally:
        await conn.close()


def test_asyncapi_lists_every_event_with_producer_consumers_and_schema() -> None:
    doc = build_asyncapi()
    messages = doc["components"]["messages"]
    assert {m["name"] for m in messages.values()} == set(PRODUCERS)
    for m in messages.values():
        assert m["x-producer"] == PRODUCERS[m["name"]]
        assert "archive" in m["x-consumers"]
        assert m["payload"]["properties"]["payload"]["properties"], m["name"]
    assert "inventory" in messages["order_created"]["x-consumers"]
    assert "loyalty" in messages["order_confirmed"]["x-consumers"]
