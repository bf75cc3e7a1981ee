"""payments against the real PostgreSQL: its handlers, its charge job and its routes.

Real: PostgreSQL (a random schema per test, migrated). Handlers run as the bus runs them
(`deliver`: the service's own handler table, bound to its context, each event in its own unit
of work under a fresh event id); the charge job's pass (`charge_due_payments`) is run directly,
or its loop (`charge_payments`) for a short while, started and stopped as the runtime does. The
payment provider is the service's own SimulatedProvider (its test mode, no latency unless a test
asks for it), the resource of its context: it is the adapter payments runs with, not a fake of
anything external to this repo. Routes go through httpx's ASGI transport; the bus node is never
started.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.contracts.common import Line
from eventshop.contracts.orders import OrderCancelled, PaymentRequested
from eventshop.platform.db import create_pool
from eventshop.platform.service import AnyContext, running_jobs
from eventshop.platform.settings import PlatformSettings
from eventshop.services.payments import jobs, store
from eventshop.services.payments.adapters import SimulatedProvider
from eventshop.services.payments.service import Resources, definition
from eventshop.services.payments.settings import PaymentsSettings
from tests.support import services
from tests.support.services import service_context

pytestmark = pytest.mark.integration

SERVICE = "payments"
MIGRATIONS = "eventshop.services.payments.migrations"


def quick(**changes: Any) -> PaymentsSettings:
    """The settings of these tests: the velocity rule at 3 requests a minute (the other fraud
    rules as by default), no wait before a retry, 2 attempts, a quick poll; and `changes`."""
    return PaymentsSettings(
        **{
            "fraud_velocity_max_requests": 3,
            "fraud_velocity_window_s": 60,
            "charge_retry_delay_s": 0,
            "charge_max_attempts": 2,
            "charge_poll_s": 0.01,
            **changes,
        }
    )


def default_rules(ctx: AnyContext) -> AnyContext:
    """`ctx` with the default fraud rules (20 requests a minute)."""
    return replace(ctx, settings=quick(fraud_velocity_max_requests=20))


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(latency_ms=0, slow_latency_ms=0)


@pytest.fixture
async def context(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings, provider: SimulatedProvider
) -> AsyncIterator[AnyContext]:
    """The service's context with the quick settings, charging through `provider`."""
    schema, pool = schema_pool
    async with service_context(
        definition,
        schema,
        pool,
        settings,
        service_settings=quick(),
        resources=Resources(provider=provider),
    ) as ctx:
        yield ctx


async def deliver(
    ctx: AnyContext, event: EventPayload, *, correlation_id: str | None = None
) -> Envelope:
    """Run the event's handler in its own unit of work, as the bus would (a fresh event id)."""
    env = new_envelope(
        event.event_type,
        event.schema_version,
        getattr(event, "order_id", "x"),
        event.model_dump(mode="json"),
        correlation_id=correlation_id,
    )
    return await services.deliver(ctx, event, envelope=env)


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
    assert set(definition.consumes) == {"payment.requested", "order.cancelled"}
    assert set(definition.publishes_types) == {
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
    }
    assert list(definition.jobs) == [jobs.charge_payments]


# -- fraud ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("req", "detail"),
    [
        (request(email="eve@fraud.test"), "fraud.test is blocked"),
        (request(amount=1_000_001), "above the limit"),
    ],
)
async def test_fraud_fails_at_once_and_is_never_charged(
    context: AnyContext,
    pool: asyncpg.Pool,
    provider: SimulatedProvider,
    req: PaymentRequested,
    detail: str,
) -> None:
    await deliver(default_rules(context), req)
    (failed,) = await outbox(pool)
    assert failed.event_type == "payment.failed"
    assert failed.payload["reason"] == "fraud" and detail in failed.payload["detail"]
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "fraud")
    assert failed.payload["payment_id"] == row["payment_id"]
    assert await jobs.charge_due_payments(context) == 0
    assert list(provider.calls) == []


async def test_velocity_counts_a_users_recent_requests(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    for _ in range(3):
        await deliver(context, request(user_id="busy"))
    await deliver(context, request(user_id="calm"))
    fourth = request(user_id="busy")
    await deliver(context, fourth)
    failed = await outbox(pool, fourth.order_id)
    assert types(failed) == ["payment.failed"]
    assert "more than 3 payment requests" in failed[0].payload["detail"]
    assert await outbox(pool) == failed  # the others wait for the charge job: nothing yet


async def test_velocity_holds_for_requests_handled_at_the_same_time(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    """Eight requests of one user in eight concurrent transactions (as competing payments
    processes would handle them): each counts the others only once they commit, so the count
    is taken under a per-user lock, and exactly the first three pass."""
    burst = [request(user_id="eager") for _ in range(8)]
    await asyncio.gather(*(deliver(context, req) for req in burst))
    refused = [e for e in await outbox(pool) if e.event_type == "payment.failed"]
    assert len(refused) == 5
    pending = await pool.fetchval(
        "SELECT count(*) FROM payments WHERE user_id = 'eager' AND status = 'pending'"
    )
    assert pending == 3


# -- charging -------------------------------------------------------------------------------------
async def test_tok_visa_is_captured_by_the_charge_job(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request()
    cause = await deliver(context, req, correlation_id="corr-7")
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await outbox(pool) == []  # the handler never calls the provider

    assert await jobs.charge_due_payments(context) == 1
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
    # the job's event stays in the order's chain, caused by the payment request
    assert (succeeded.correlation_id, succeeded.causation_id) == ("corr-7", str(cause.event_id))
    assert list(provider.calls) == [(row["payment_id"], "tok_visa")]
    assert await jobs.charge_due_payments(context) == 0


async def test_tok_decline_fails_declined(context: AnyContext, pool: asyncpg.Pool) -> None:
    req = request(token="tok_decline")
    await deliver(context, req)
    await jobs.charge_due_payments(context)
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "declined")
    (failed,) = await outbox(pool)
    assert (failed.event_type, failed.payload["reason"]) == ("payment.failed", "declined")
    assert failed.payload["detail"] == "card_declined"


async def test_a_provider_that_keeps_failing_ends_in_provider_error(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request(token="tok_error")
    await deliver(context, req)
    assert await jobs.charge_due_payments(context) == 1  # first try: given back for a retry
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await outbox(pool) == []
    assert await jobs.charge_due_payments(context) == 1  # second and last try (quick: 2)
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
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(context, req)
    await deliver(context, req)  # the same business fact under another event id
    await jobs.charge_due_payments(context)
    await deliver(context, req)  # and once more after the capture
    await jobs.charge_due_payments(context)
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    assert types(await outbox(pool)) == ["payment.succeeded"]
    assert len(provider.calls) == 1


async def test_a_dead_holders_lease_is_taken_over_with_the_same_idempotency_key(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(context, req)
    async with pool.acquire() as conn:  # a process claims it, then dies before recording anything
        (job,) = await store.claim_work(conn, 10, lease_s=30)
    assert await jobs.charge_due_payments(context) == 0  # its lease still holds
    await pool.execute("UPDATE payments SET claimed_at = now() - interval '31 seconds'")
    assert await jobs.charge_due_payments(context) == 1
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["attempts"]) == ("captured", 2)
    assert row["claim_id"] != job.claim_id
    assert list(provider.calls) == [(job.payment_id, "tok_visa")]
    # the dead process waking up late records nothing over the new claim
    async with pool.acquire() as conn:
        assert await store.record_capture(conn, job, "ch_late") is None
    assert types(await outbox(pool)) == ["payment.succeeded"]


async def test_three_processes_never_charge_a_payment_twice(
    context: AnyContext,
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    provider: SimulatedProvider,
) -> None:
    schema, pool = schema_pool
    orders = [request() for _ in range(20)]
    for req in orders:
        await deliver(default_rules(context), req)
    wide = await create_pool(settings.database_url, schema, max_size=10)
    try:
        # three passes at once over one wider pool: as three payments processes would claim
        small = replace(context, pool=wide, settings=PaymentsSettings(charge_concurrency=4))
        done = 0
        while done < len(orders):
            counts = await asyncio.gather(*(jobs.charge_due_payments(small) for _ in range(3)))
            assert sum(counts) > 0
            done += sum(counts)
    finally:
        await wide.close()
    assert done == len(orders)
    keys = [key for key, _ in provider.calls]
    assert len(keys) == len(set(keys)) == len(orders)
    assert types(await outbox(pool)) == ["payment.succeeded"] * len(orders)


async def test_a_slow_charge_holds_one_slot_not_the_job(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    provider = SimulatedProvider(latency_ms=0, slow_latency_ms=5_000)
    slow, fast = request(token="tok_slow"), request(token="tok_visa")
    await deliver(context, slow)
    started = time.monotonic()
    charging = replace(
        context, settings=quick(charge_stop_grace_s=0), resources=Resources(provider=provider)
    )
    # the service's jobs as the runtime runs them: started, then cancelled when the block ends
    async with running_jobs(definition, charging):
        await asyncio.sleep(0.05)  # the slow charge is in flight
        await deliver(context, fast)
        while (await payment_of(pool, fast.order_id))["status"] != "captured":
            assert time.monotonic() - started < 3, "the quick payment waited for the slow one"
            await asyncio.sleep(0.02)
        assert (await payment_of(pool, slow.order_id))["status"] == "charging"
    # stopped: the slow call is cancelled; its lease will run out and it is charged again
    assert types(await outbox(pool)) == ["payment.succeeded"]


async def test_queued_work_wakes_the_charge_job_instead_of_waiting_for_its_poll(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    """A payment request, then a refund, committed by this process while its charge job waits
    between polls: each is claimed at once, not a poll later (the poll here is a minute)."""
    waking = replace(context, settings=quick(charge_poll_s=60))
    async with running_jobs(definition, waking):
        await asyncio.sleep(0.3)  # the job's first claim found nothing: it waits out its poll
        req = request()
        await deliver(waking, req)
        # (status_after gives up after 5 s, far below the poll)
        status = await status_after(pool, req.order_id, "pending")
        if status == "charging":
            status = await status_after(pool, req.order_id, "charging")
        assert status == "captured"
        await deliver(waking, cancel(req.order_id))
        assert await status_after(pool, req.order_id, "captured") in ("refunding", "refunded")
    assert types(await outbox(pool, req.order_id)) == ["payment.succeeded", "payment.refunded"]


async def test_a_stop_while_a_claim_is_on_its_way_back_sees_its_payments_through(
    context: AnyContext, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service stopping just as a claim's transaction commits: the claimed payment is
    charged and recorded within the stop's grace, not left charging until its lease runs out
    (its order would time out meanwhile; the chaos run of clock-skew found it)."""
    req = request()
    await deliver(context, req)
    claim_work = store.claim_work
    committed = asyncio.Event()

    async def claim_then_linger(
        conn: asyncpg.Connection, limit: int, lease_s: float
    ) -> list[store.ClaimedPayment]:
        claimed = await claim_work(conn, limit, lease_s)  # committed: the rows are charging
        if claimed:
            committed.set()
            await asyncio.sleep(0.2)  # its answer still on the wire when the stop comes
        return claimed

    monkeypatch.setattr(store, "claim_work", claim_then_linger)
    job = asyncio.create_task(jobs.charge_payments(context))
    await asyncio.wait_for(committed.wait(), 5)
    job.cancel()  # as the runtime stops a job
    with pytest.raises(asyncio.CancelledError):
        await job

    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["attempts"]) == ("captured", 1)
    assert types(await outbox(pool, req.order_id)) == ["payment.succeeded"]


# -- compensation: cancelled orders ---------------------------------------------------------------
async def test_cancel_after_capture_refunds(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(context, req, correlation_id="corr-9")
    await jobs.charge_due_payments(context)
    cancelled = await deliver(context, cancel(req.order_id), correlation_id="corr-9")
    row = await payment_of(pool, req.order_id)
    assert (row["status"], row["cancel_requested"]) == ("captured", True)  # the job refunds
    assert await jobs.charge_due_payments(context) == 1
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
    await deliver(context, cancel(req.order_id))  # cancelled again: nothing more to refund
    assert await jobs.charge_due_payments(context) == 0
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


async def test_cancel_before_the_request_leaves_a_tombstone(
    context: AnyContext,
    pool: asyncpg.Pool,
    provider: SimulatedProvider,
    client: httpx.AsyncClient,
) -> None:
    order_id = str(uuid.uuid4())
    await deliver(context, cancel(order_id))
    row = await payment_of(pool, order_id)
    assert (row["status"], row["requested_at"]) == ("voided", None)
    await deliver(context, request(order_id))  # the request arrives late
    assert await jobs.charge_due_payments(context) == 0
    assert list(provider.calls) == [] and await outbox(pool) == []
    assert (await payment_of(pool, order_id))["status"] == "voided"
    # a tombstone is bookkeeping, not a payment the user made
    listed = await client.get("/payments", headers={"X-User-Id": "u-1"})
    assert listed.json() == []


async def test_cancel_while_pending_voids_it(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    req = request()
    await deliver(context, req)
    await deliver(context, cancel(req.order_id))
    assert (await payment_of(pool, req.order_id))["status"] == "voided"
    assert await jobs.charge_due_payments(context) == 0
    assert list(provider.calls) == [] and await outbox(pool) == []


async def test_cancel_while_charging_refunds_right_after_the_capture(
    context: AnyContext, pool: asyncpg.Pool
) -> None:
    provider = SimulatedProvider(latency_ms=0, slow_latency_ms=500)
    req = request(token="tok_slow")
    await deliver(context, req)
    slow = replace(context, resources=Resources(provider=provider))
    charging = asyncio.create_task(jobs.charge_due_payments(slow))
    status = await status_after(pool, req.order_id, "pending")
    assert status == "charging"
    await deliver(context, cancel(req.order_id))  # the order timed out while the provider worked
    assert await charging == 1
    row = await payment_of(pool, req.order_id)
    assert row["status"] == "refunded" and row["captured_at"] is not None
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


async def test_cancel_while_a_retry_waits_asks_the_provider_again_and_refunds(
    context: AnyContext, pool: asyncpg.Pool, provider: SimulatedProvider
) -> None:
    # the first call got no answer (it may have captured): the retry finds out, then refunds
    req = request()
    await deliver(context, req)
    async with pool.acquire() as conn:
        (job,) = await store.claim_work(conn, 1, lease_s=30)
        await store.retry_later(conn, job, 0, "TimeoutError")
    await deliver(context, cancel(req.order_id))
    assert (await payment_of(pool, req.order_id))["status"] == "pending"
    assert await jobs.charge_due_payments(context) == 1
    assert (await payment_of(pool, req.order_id))["status"] == "refunded"
    assert types(await outbox(pool)) == ["payment.succeeded", "payment.refunded"]


# -- routes ---------------------------------------------------------------------------------------
async def test_routes_show_only_the_callers_payments(
    context: AnyContext, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    mine, theirs = request(user_id="me"), request(user_id="them")
    await deliver(context, mine)
    await deliver(context, theirs)
    await jobs.charge_due_payments(context)
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
