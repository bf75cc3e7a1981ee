"""The operators' console driven in headless Chromium (Debian's, through Playwright) against
the running platform while orders are placed over the API. What is real: everything, the
browser included; what each test reads, it reads from the page.

Screenshots of every page are saved to var/artifacts/console/ (docs/console-saga.png in the
README is one of them).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from eventshop.platform.settings import PlatformSettings
from eventshop.services import CONSOLE_PORT
from eventshop.tooling.shopclient import ADMIN, ADMIN_PASSWORD
from tests.support.polling import eventually
from tests.support.shop import PASSWORD, Shop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = f"http://127.0.0.1:{CONSOLE_PORT}"
ARTIFACTS = ROOT / "var" / "artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module", autouse=True)
def chromium_installed() -> None:
    """Debian's chromium, installed where it is missing (make test does it first)."""
    if shutil.which("chromium") is None:
        done = subprocess.run([str(ROOT / "scripts" / "ensure-browser.sh")], check=False)
        assert done.returncode == 0, "chromium could not be installed"


@pytest.fixture
async def browser(shop: Shop) -> AsyncIterator[Browser]:  # the platform up, through `shop`
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def logged_in(browser: Browser, email: str = ADMIN, password: str = ADMIN_PASSWORD) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{CONSOLE}/")
    await expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    return page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_a_non_admin_is_refused_and_an_admin_logs_in_through_the_page(
    shop: Shop, browser: Browser
) -> None:
    await shop.as_admin()  # the development admin exists
    customer = await shop.register()
    page = await logged_in(browser, customer.email, PASSWORD)
    await expect(page.locator("#login-error")).to_have_text("administrators only")
    await page.goto(f"{CONSOLE}/services")
    await expect(page).to_have_url(re.compile(r"/login"))  # no session was kept for them
    wrong = await logged_in(browser, ADMIN, "not-the-password")
    await expect(wrong.locator("#login-error")).to_be_visible()
    page = await logged_in(browser)
    await expect(page.locator("h1")).to_have_text("The saga, live")
    await shot(page, "login-then-saga")


async def count(page: Page, state: str) -> int:
    return int(await page.locator(f'#live-saga [data-count="{state}"]').inner_text())


async def test_the_saga_counts_and_plot_move_as_orders_complete(
    shop: Shop, browser: Browser
) -> None:
    page = await logged_in(browser)
    await expect(page.locator("h1")).to_have_text("The saga, live")
    before_total, before_confirmed = await count(page, "total"), await count(page, "CONFIRMED")
    sku = await shop.product(stock=100)
    buyer = await shop.register()
    orders = await asyncio.gather(*(shop.place(buyer, [(sku, 1)]) for _ in range(10)))
    for order_id in orders:
        assert (await shop.final(buyer, order_id))["status"] == "CONFIRMED"

    # read from the page, pushed to it: no reload in between
    async def counts() -> tuple[int, int]:
        return await count(page, "total"), await count(page, "CONFIRMED")

    await eventually(
        counts,
        lambda seen: seen[0] >= before_total + 10 and seen[1] >= before_confirmed + 10,
        timeout=20,
        interval=0.2,
        what="the page's counts to move by the ten orders",
    )
    assert int(await page.locator("#live-saga").get_attribute("data-updates") or "0") >= 1
    latest = page.locator("#plot-rate [data-series='orders/s']")  # not always in the last bucket
    assert float(await latest.get_attribute("data-peak") or "0") > 0
    assert await page.locator("#plot-rate polyline").count() >= 1
    assert await page.locator("#plot-latency polyline, #plot-latency circle").count() >= 1
    await shot(page, "saga")
    await page.goto(f"{CONSOLE}/services")
    orders_row = page.locator("#services tr[data-service='orders']")
    await expect(orders_row.locator(".ok")).to_have_text("ready")
    more = await shop.register()
    for _ in range(5):  # events flowing while the page watches: the rates are pushed to it
        await shop.place(more, [(sku, 1)])
        await asyncio.sleep(0.5)
    await expect(orders_row.locator("[data-rate=handled]")).not_to_have_text("-")
    await expect(page.locator("#plot-orders polyline")).not_to_have_count(0)
    await shot(page, "services")
    for order_id in shop.order_ids[-5:]:
        await shop.final(more, order_id)


async def awards_for(order_id: str) -> int:
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        n: int = await db.fetchval(
            "SELECT count(*) FROM loyalty.awards WHERE order_id = $1", order_id
        )
        return n
    finally:
        await db.close()


async def test_a_poison_message_is_parked_shown_and_replayed_after_the_fix_with_one_effect(
    shop: Shop, browser: Browser
) -> None:
    buyer = await shop.register()
    constraint = f"console_test_{uuid.uuid4().hex[:8]}"
    db = await asyncpg.connect(PlatformSettings().database_url)
    try:
        # the fault: loyalty cannot store this buyer's award (a bad migration, say)
        await db.execute(
            f"ALTER TABLE loyalty.awards ADD CONSTRAINT {constraint}"
            f" CHECK (user_id <> '{buyer.user_id}') NOT VALID"
        )
        sku = await shop.product(stock=5)
        order_id = await shop.place(buyer, [(sku, 1)])
        assert (await shop.final(buyer, order_id))["status"] == "CONFIRMED"
        page = await logged_in(browser)
        await expect(page.locator("h1")).to_have_text("The saga, live")

        async def parked_row_shown() -> bool:  # after loyalty's retry ladder (about 36 s)
            await page.goto(f"{CONSOLE}/parked?service=loyalty&error={constraint}")
            return await page.locator("#parked tr[data-event-id]").count() == 1

        await eventually(parked_row_shown, timeout=90, interval=2, what="the parked award")
        row = page.locator("#parked tr[data-event-id]")
        await expect(row.locator(".error")).to_contain_text(constraint)
        await shot(page, "parked")
        await row.locator("a").click()
        await expect(page.locator("#parked-error")).to_contain_text(constraint)
        await expect(page.locator("#parked-body")).to_contain_text(order_id)
        await shot(page, "parked-message")
        assert await awards_for(order_id) == 0

        await db.execute(f"ALTER TABLE loyalty.awards DROP CONSTRAINT {constraint}")  # the fix
        await page.goto(f"{CONSOLE}/parked?service=loyalty&error={constraint}")
        await page.locator("#parked tr[data-event-id] .replay-one").click()
        await expect(page.locator("h1")).to_have_text("Replay 1 parked message(s)?")
        await page.click("#confirm")
        await expect(page.locator("#acted")).to_have_text("1 message(s) replayed")
        await shot(page, "replayed")
    finally:
        await db.execute(f"ALTER TABLE loyalty.awards DROP CONSTRAINT IF EXISTS {constraint}")
        await db.close()
    await eventually(lambda: awards_for(order_id), 1, timeout=20, interval=0.2, what="the award")
    await asyncio.sleep(2)
    assert await awards_for(order_id) == 1  # exactly one effect


async def test_an_orders_timeline_shows_every_event_of_its_stream_in_order(
    shop: Shop, browser: Browser
) -> None:
    sku = await shop.product(stock=5)
    buyer = await shop.register()
    order_id = await shop.place(buyer, [(sku, 2)])
    assert (await shop.final(buyer, order_id))["status"] == "CONFIRMED"
    async with httpx.AsyncClient(timeout=10) as client:
        history = (
            await client.get(
                f"http://127.0.0.1:8000/api/v1/orders/{order_id}/history", headers=buyer.auth
            )
        ).json()
    page = await logged_in(browser)
    link = page.locator(f'#latest-orders a[href="/orders/{order_id}"]')
    await expect(link).to_be_visible(timeout=15_000)  # pushed to the saga page
    await link.click()
    await expect(page.locator("h1")).to_have_text(f"Order {order_id}")
    shown = await page.locator("#timeline li").evaluate_all(
        "items => items.map(i => [Number(i.dataset.version), i.dataset.eventType])"
    )
    assert shown == [[e["version"], e["event_type"]] for e in history]
    assert len(shown) >= 3
    await expect(page.locator("#state")).to_contain_text('"CONFIRMED"')
    await page.locator("#timeline li a").first.click()  # the order as of its first event
    await expect(page.locator("#state")).to_contain_text('"PENDING"')
    await expect(page.locator("#trace tr")).not_to_have_count(0)
    await shot(page, "order")


async def test_forms_live_streams_and_redirects_are_guarded(shop: Shop) -> None:
    async with httpx.AsyncClient(base_url=CONSOLE, timeout=10) as client:
        live = await client.get("/live/saga")
        assert live.status_code == 401 and live.json()["error"]["code"] == "unauthenticated"
        away = await client.get("/login", params={"next": "//evil.example/"})
        assert 'value="/"' in away.text  # never sent to another site after logging in
        signed = await client.post(
            "/login", data={"email": ADMIN, "password": ADMIN_PASSWORD, "next": "/"}
        )
        assert signed.status_code == 303 and "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        forged = await client.post(
            "/parked-action", data={"action": "purge", "form_token": "not-ours"}
        )
        assert forged.status_code == 403  # a form not rendered by the console is refused
        page = await client.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_saga_page_and_eventshop_saga_read_the_same_function(
    shop: Shop, browser: Browser
) -> None:
    page = await logged_in(browser)
    await expect(page.locator("h1")).to_have_text("The saga, live")
    shown = await count(page, "total")
    done = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("eventshop")), "saga", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["total"] >= shown  # orders placed since the page drew are counted too
    assert set(summary["states"]) == {"PENDING", "AWAITING_PAYMENT", "CONFIRMED", "CANCELLED"}
    assert len(summary["buckets"]) >= 60 and summary["bucket_s"] == 10


async def test_eventshop_status_json_is_what_the_services_page_shows(
    shop: Shop, browser: Browser
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("eventshop")), "status", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["service"]: r for r in json.loads(done.stdout)}
    assert rows["inventory"]["consumers"] >= 1 and rows["inventory"]["ready"]
    assert rows["inventory"]["handled"] > 0 and "outbox_oldest_s" in rows["orders"]
    page = await logged_in(browser)
    await expect(page.locator("h1")).to_have_text("The saga, live")
    await page.goto(f"{CONSOLE}/services")
    for service, row in rows.items():  # one source: the page says what the command says
        cell = page.locator(f"#services tr[data-service='{service}'] td").nth(1)
        await expect(cell).to_have_text("ready" if row["ready"] else "down")
