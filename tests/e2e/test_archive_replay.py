"""Replaying archived events, as an operator (`eventshop archive replay`) and as an admin over
the API (`POST /api/v1/events/replay`), against the running platform: it counts first, asks
before sending, reaches only the service named, and the inbox keeps the effect single."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.tooling.shopclient import API
from tests.support.polling import eventually
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def eventshop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("eventshop")), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def loyalty_duplicates() -> float:
    """Redelivered events loyalty's inbox recognised (its /metrics)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{PORTS['loyalty']}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("eventshop_events_duplicate_total")
    )


async def test_an_operator_replays_an_orders_events_to_one_service_and_it_has_one_effect(
    shop: Shop,
) -> None:
    sku = await shop.product(stock=3)
    buyer = await shop.register()
    order_id = await shop.place(buyer, [(sku, 1)])
    assert (await shop.final(buyer, order_id))["status"] == "CONFIRMED"
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        cid = await db.fetchval(
            "SELECT correlation_id FROM orders.orders WHERE order_id = $1", order_id
        )
        filters = ["--service", "loyalty", "--correlation-id", cid, "--type", "order.confirmed"]
        await eventually(
            lambda: eventshop("archive", "replay", *filters, "--dry-run"),
            lambda done: done.returncode == 0 and '"matched": 1' in done.stdout,
            timeout=20, interval=0.5, what="the archive to hold the order's confirmation",
        )  # fmt: skip
        before = await loyalty_duplicates()
        asked = eventshop("archive", "replay", *filters)  # nobody answers the question
        assert asked.returncode == 1 and "Replay 1 event(s) to loyalty?" in asked.stderr
        sent = eventshop("archive", "replay", *filters, "--yes")
        assert sent.returncode == 0, sent.stderr
        assert '"replayed": 1' in sent.stdout
        await eventually(
            lambda: loyalty_duplicates(), lambda n: n >= before + 1, timeout=20,
            interval=0.2, what="loyalty's inbox to recognise the replayed event",
        )  # fmt: skip
        awards = await db.fetchval(
            "SELECT count(*) FROM loyalty.awards WHERE order_id = $1", order_id
        )
        assert awards == 1
    finally:
        await db.close()


async def test_over_the_api_only_an_admin_may_replay(shop: Shop) -> None:
    customer = await shop.register()
    admin = await shop.as_admin()
    body = {"service": "loyalty", "type": "order.confirmed", "limit": 1, "dry_run": True}
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(f"{API}/events/replay", json=body, headers=customer.auth)
        assert refused.status_code == 403
        counted = await client.post(f"{API}/events/replay", json=body, headers=admin.auth)
        assert counted.status_code == 200, counted.text
        assert counted.json()["replayed"] == 0 and counted.json()["matched"] <= 1
        bad = await client.post(
            f"{API}/events/replay", json={**body, "service": "loyalty.parked"}, headers=admin.auth
        )
        assert bad.status_code == 422  # a parking or retry queue is no replay target
