"""payments against the real PostgreSQL: its handlers, its charge worker and its routes.

Real: PostgreSQL (a random schema per test, migrated). Handlers are called directly with
envelopes built by new_envelope, each in its own UnitOfWork, as the bus would; the charge
worker's pass (`run_once`) is run directly, or its loop for a short while. The payment
provider is the service's own SimulatedProvider (its test mode, no latency unless a test asks
for it): it is the adapter payments runs with, not a fake of anything external to this repo.
Routes go through httpx's ASGI transport; the bus node is never started.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.contracts.common import Line
from eventshop.contracts.orders import OrderCancelled, PaymentRequested
from eventshop.platform.db import create_pool
from eventshop.platform.settings import PlatformSettings
from eventshop.platform.uow import UnitOfWork
from eventshop.services.payments import handlers, store
from eventshop.services.payments.adapters import SimulatedProvider
from eventshop.services.payments.domain import FraudRules
from eventshop.services.payments.service import definition
from eventshop.services.payments.settings import PaymentsSettings
from eventshop.services.payments.worker import ChargeWorker

pytestmark = pytest.mark.integration

SERVICE = "payments"
MIGRATIONS = "eventshop.services.payments.migrations"
RULES = FraudRules(velocity_max_requests=3, velocity_window_s=60)
FAST = PaymentsSettings(charge_retry_delay_s=0, charge_max_attempts=2, charge_poll_s=0.01)


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(latency_ms=0, slow_latency_ms=0)


@pytest.fixture
def worker(pool: asyncpg.Pool, provider: SimulatedProvider) -> ChargeWorker:
    return ChargeWorker(pool, provider, FAST)


async def deliver(
    pool: asyncpg.Pool,
    event: EventPayload,
    *,
    rules: FraudRules = RULES,
    correlation_id: str | None = None,
) -> Envelope:
    """Run the event's handler in its own unit of work, as the bus would (a fresh event id)."""
    env = new_envelope(
        event.event_type,
        event.schema_version,
        getattr(event, "order_id", "x"),
        event.model_dump(mode="json"),
        correlation_id=correlation_id,
    )
    async with UnitOfWork.begin(pool, service="payments") as uow:
        if isinstance(event, PaymentRequested):
            await handlers.take_payment_request(uow.caused_by(env), env, event, rules=rules)
        else:
            assert isinstance(event, OrderCancelled)
            await handlers.cancel_payment(uow.caused_by(env), env, event)
    return env


def request(
    order_id: str | None = None,
    *,
    token: str = "tok_visa",
    amount: int = 4_500,
    user_id: str = "u-1",
    email: str = "ada@example.com",
) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id or str(uuid.uuid4()),
        user_id=user_id,
        email=email,
        amount_minor=amount,
        currency="EUR",
        payment_token=token,
    )


def cancel(order_id: str, *, user_id: str = "u-1") -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        user_id=user_id,
        email="ada@example.com",
        reason="timeout",
        stock_reserved=True,
        lines=(Line(sku="MUG", quantity=1),),
    )


async def outbox(pool: asyncpg.Pool, order_id: str | None = None) -> list[Envelope]:
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    envelopes = [registry.decode(r["body"])[0] for r in rows]
    return [e for e in envelopes if order_id is None or e.payload.get("order_id") == order_id]


async def status_after(pool: asyncpg.Pool, order_id: str, status: str) -> str:
    """Poll the payment's status until it is no longer `status` (for up to 5 s); the new one."""
    async with asyncio.timeout(5):
        while True:
            current = str((await payment_of(pool, order_id))["status"])
            if current != status:
                return current
            await asyncio.sleep(0.01)


def types(envelopes: list[Envelope]) -> list[str]:
    return [e.event_type for e in envelopes]


async def payment_of(pool: asyncpg.Pool, order_id: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)
    assert row is not None
    return dict(row)


# -- the composition root -------------------------------------------------------------------------
def test_definition_says_what_payments_takes_and_gives() -> None:
    assert set(definition.handlers) == {"payment.requested", "order.cancelled"}
    assert set(definition.publishes) == {"payment.succeeded", "payment.failed", "payment.refunded"}
    assert definition.on_start is not None


# -- fraud ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("req", "detail"),
    [
        (request(email="eve@fraud.test"), "fraud.test is blocked"),
        (request(amount=1_000_001), "above the limit"),
    ],
)
async def test_fraud_fails_at_once_and_is_never_charged(
    pool: asyncpg.Pool,
    worker: ChargeWorker,
    provider: SimulatedProvider,
    req: PaymentRequested,
    detail: str,
) -> None:
    await deliver(pool, req, rules=FraudRules())
    (failed,) = await outbox(pool)
    assert failed.event_type == "payment.failed"
    assert failed.payload["reason"] == "fraud" and detail in failed.payload["detail"]
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "fraud")
    assert failed.payload["payment_id"] == row["payment_id"]
    assert await worker.run_once() == 0
    assert list(provider.calls) == []


async def test_velocity_counts_a_users_recent_requests(pool: asyncpg.Pool) -> None:
    for _ in range(3):
        await deliver(pool, request(user_id="busy"))
    await deliver(pool, request(user_id="calm"))
    fourth = request(user_id="busy")
    await deliver(pool, fourth)
    failed = await outbox(pool, fourth.order_id)
    assert types(failed) == ["payment.failed"]
    assert "more than 3 payment requests" in failed[0].payload["detail"]
    assert await outbox(pool) == failed  # the others wait for the worker: nothing yet


async def test_velocity_holds_for_requests_handled_at_the_same_time(pool: asyncpg.Pool) -> None:
    """Eight requests of one user in eight concurrent transactions (as competing payments
    processes would handle them): each counts the others only once they commit, so the count
    is taken under a per-user lock, and exactly the first three pass."""
    burst = [request(user_id="eager") for _ in range(8)]
    await asyncio.gather(*(deliver(pool, req) for req in burst))
    refused = [e for e in await outbox(pool) if e.event_type == "payment.failed"]
    assert len(refused) == 5
    pending = await pool.fetchval(
        "SELECT count(*) FROM payments WHERE user_id = 'eager' AND status = 'pending'"
    )
    assert pending == 3


# -- charging -------------------------------------------------------------------------------------
async def test_tok_visa_is_captured_by_the_worker(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request()
    cause = await deliver(pool, req, correlation_id="corr-7")
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await outbox(pool) == []  # the handler never calls the provider

    assert await worker.run_once() == 1
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["attempts"], row["claim_id"]) == ("captured", 1, row["claim_id"])
    assert row["charge_ref"].startswith("ch_")
    (succeeded,) = await outbox(pool)
    assert succeeded.event_type == "payment.succeeded"
    assert succeeded.payload == {
        "payment_id": row["payment_id"],
        "order_id": req.order_id,
        "amount_minor": 4_500,
        "currency": "EUR",
    }
    # the worker's event stays in the order's chain, caused by the payment request
    assert (succeeded.correlation_id, succeeded.causation_id) == ("corr-7", str(cause.event_id))
    assert list(provider.calls) == [(row["payment_id"], "tok_visa")]
    assert await worker.run_once() == 0


async def test_tok_decline_fails_declined(pool: asyncpg.Pool, worker: ChargeWorker) -> None:
    req = request(token="tok_decline")
    await deliver(pool, req)
    await worker.run_once()
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "declined")
    (failed,) = await outbox(pool)
    assert (failed.event_type, failed.payload["reason"]) == ("payment.failed", "declined")
    assert failed.payload["detail"] == "card_declined"


async def test_a_provider_that_keeps_failing_ends_in_provider_error(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request(token="tok_error")
    await deliver(pool, req)
    assert await worker.run_once() == 1  # first try: given back for a retry
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await outbox(pool) == []
    assert await worker.run_once() == 1  # second and last try (FAST: 2 attempts)
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["failure_reason"], row["attempts"]) == (
        "failed",
        "provider_error",
        2,
    )
    (failed,) = await outbox(pool)
    assert failed.payload["reason"] == "provider_error"
    assert len(provider.calls) == 2


async def test_the_same_request_twice_is_charged_once(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(pool, req)
    await deliver(pool, req)  # the same business fact under another event id
    await worker.run_once()
    await deliver(pool, req)  # and once more after the capture
    await worker.run_once()
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    assert types(await outbox(pool)) == ["payment.succeeded"]
    assert len(provider.calls) == 1


async def test_a_dead_workers_lease_is_taken_over_with_the_same_idempotency_key(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(pool, req)
    async with pool.acquire() as conn:  # a worker claims it, then dies before recording anything
        (job,) = await store.claim_work(conn, 10, lease_s=30)
    assert await worker.run_once() == 0  # its lease still holds
    await pool.execute("UPDATE payments SET claimed_at = now() - interval '31 seconds'")
    assert await worker.run_once() == 1
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["attempts"]) == ("captured", 2)
    assert row["claim_id"] != job.claim_id
    assert list(provider.calls) == [(job.payment_id, "tok_visa")]
    # the dead worker waking up late records nothing over the new claim
    async with pool.acquire() as conn:
        assert await store.record_capture(conn, job, "ch_late") is None
    assert types(await outbox(pool)) == ["payment.succeeded"]


async def test_two_workers_never_charge_a_payment_twice(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings, provider: SimulatedProvider
) -> None:
    schema, pool = schema_pool
    orders = [request() for _ in range(20)]
    for req in orders:
        await deliver(pool, req, rules=FraudRules())
    wide = await create_pool(settings.database_url, schema, max_size=10)
    try:
        small = PaymentsSettings(charge_concurrency=4)
        workers = [ChargeWorker(wide, provider, small) for _ in range(3)]
        done = 0
        while done < len(orders):
            counts = await asyncio.gather(*(w.run_once() for w in workers))
            assert sum(counts) > 0
            done += sum(counts)
    finally:
        await wide.close()
    assert done == len(orders)
    keys = [key for key, _ in provider.calls]
    assert len(keys) == len(set(keys)) == len(orders)
    assert types(await outbox(pool)) == ["payment.succeeded"] * len(orders)


async def test_a_slow_charge_holds_one_slot_not_the_worker(pool: asyncpg.Pool) -> None:
    provider = SimulatedProvider(latency_ms=0, slow_latency_ms=5_000)
    slow, quick = request(token="tok_slow"), request(token="tok_visa")
    await deliver(pool, slow)
    started = time.monotonic()
    stop = ChargeWorker(pool, provider, FAST).start(grace_s=0)
    try:
        await asyncio.sleep(0.05)  # the slow charge is in flight
        await deliver(pool, quick)
        while (await payment_of(pool, quick.order_id))["status"] != "captured":
            assert time.monotonic() - started < 3, "the quick payment waited for the slow one"
            await asyncio.sleep(0.02)
        assert (await payment_of(pool, slow.order_id))["status"] == "charging"
    finally:
        await stop()  # the slow call is cancelled; its lease will run out and it is charged again
    assert types(await outbox(pool)) == ["payment.succeeded"]


# -- compensation: cancelled orders ---------------------------------------------------------------
async def test_cancel_after_capture_refunds(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(pool, req, correlation_id="corr-9")
    await worker.run_once()
    cancelled = await deliver(pool, cancel(req.order_id), correlation_id="corr-9")
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["cancel_requested"]) == ("captured", True)  # the worker refunds
    assert await worker.run_once() == 1
    row = await payment_of(pool, req.order_id)
    assert row["status"] == "refunded" and row["refund_ref"].startswith("re_")
    out = await outbox(pool)
    assert types(out) == ["payment.succeeded", "payment.refunded"]
    assert out[1].payload == {
        "payment_id": row["payment_id"],
        "order_id": req.order_id,
        "amount_minor": 4_500,
        "currency": "EUR",
    }
    assert out[1].causation_id == str(cancelled.event_id)
    await deliver(pool, cancel(req.order_id))  # cancelled again: nothing more to refund
    assert await worker.run_once() == 0
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


async def test_cancel_before_the_request_leaves_a_tombstone(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider, client: httpx.AsyncClient
) -> None:
    order_id = str(uuid.uuid4())
    await deliver(pool, cancel(order_id))
    row = await payment_of(pool, order_id)
    assert (row["status"], row["requested_at"]) == ("voided", None)
    await deliver(pool, request(order_id))  # the request arrives late
    assert await worker.run_once() == 0
    assert list(provider.calls) == [] and await outbox(pool) == []
    assert (await payment_of(pool, order_id))["status"] == "voided"
    # a tombstone is bookkeeping, not a payment the user made
    listed = await client.get("/payments", headers={"X-User-Id": "u-1"})
    assert listed.json() == []


async def test_cancel_while_pending_voids_it(
    pool: asyncpg.Pool, worker: ChargeWorker, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(pool, req)
    await deliver(pool, cancel(req.order_id))
    assert (await payment_of(pool, req.order_id))["status"] == "voided"
    assert await worker.run_once() == 0
    assert list(provider.calls) == [] and await outbox(pool) == []


async def test_cancel_while_charging_refunds_right_after_the_capture(pool: asyncpg.Pool) -> None:
    provider = SimulatedProvider(latency_ms=0, slow_latency_ms=500)
    req = request(token="tok_slow")
    await deliver(pool, req)
    charging = asyncio.create_task(ChargeWorker(pool, provider, FAST).run_once())
    status = await status_after(pool, req.order_id, "pending")
    assert status == "charging"
    await deliver(pool, cancel(req.order_id))  # the order timed out while the provider worked
    assert await charging == 1
    row = await payment_of(pool, req.order_id)
    assert row["status"] == "refunded" and row["captured_at"] is not None
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


async def test_cancel_while_a_retry_waits_asks_the_provider_again_and_refunds(
    pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    # the first call got no answer (it may have captured): the retry finds out, then refunds
    req = request()
    await deliver(pool, req)
    async with pool.acquire() as conn:
        (job,) = await store.claim_work(conn, 1, lease_s=30)
        await store.retry_later(conn, job, 0, "TimeoutError")
    await deliver(pool, cancel(req.order_id))
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await ChargeWorker(pool, provider, FAST).run_once() == 1
    assert (await payment_of(pool, req.order_id))["status"] == "refunded"
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


# -- routes ---------------------------------------------------------------------------------------
async def test_routes_show_only_the_callers_payments(
    pool: asyncpg.Pool, worker: ChargeWorker, client: httpx.AsyncClient
) -> None:
    mine, theirs = request(user_id="me"), request(user_id="them")
    await deliver(pool, mine)
    await deliver(pool, theirs)
    await worker.run_once()
    me = {"X-User-Id": "me", "X-User-Role": "customer", "X-User-Email": "me@example.com"}
    listed = (await client.get("/payments", headers=me)).json()
    assert [(p["order_id"], p["status"], p["amount_minor"]) for p in listed] == [
        (mine.order_id, "captured", 4_500)
    ]
    payment_id = listed[0]["payment_id"]
    assert (await client.get(f"/payments/{payment_id}", headers=me)).status_code == 200
    their_id = (await payment_of(pool, theirs.order_id))["payment_id"]
    other = await client.get(f"/payments/{their_id}", headers=me)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    admin = {"X-User-Id": "admin", "X-User-Role": "admin"}
    assert (await client.get(f"/payments/{their_id}", headers=admin)).status_code == 200
    assert (await client.get("/payments")).status_code == 401
