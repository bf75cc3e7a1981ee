"""payments' table: one payment per order (see migrations/0001_payments.sql for its states).

The charge job's rows (jobs.py) are leased, never locked across a provider call: `claim_work`
marks them charging/refunding with a fresh claim id and commits; every outcome is then recorded
only where that claim id still holds, so a process whose lease was taken over records nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

from eventshop.services.payments.domain import Status


@dataclass(frozen=True)
class NewPayment:
    payment_id: str
    order_id: str
    user_id: str
    email: str
    amount_minor: int
    currency: str
    payment_token: str
    correlation_id: str | None
    causation_id: str | None
    traceparent: str | None


# -- the handlers' side ---------------------------------------------------------------------------
def _velocity_lock(user_id: str) -> str:
    return f"payments:velocity:{user_id}"


async def lock_window(conn: asyncpg.Connection, user_ids: list[str], order_ids: list[str]) -> None:
    """Every lock a window's handlers will take, first and in one order (ADR 0012): the users'
    velocity locks in user order, then the orders' payment rows in order id order. Without it,
    two replicas' windows asking payments of the same two users in opposite orders each hold
    one user's lock and wait for the other's. A kind the window has none of costs no round
    trip (a window of cancellations has no user to screen)."""
    # the locks are taken by the outer query, over rows the subquery has sorted
    if user_ids:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM"
            " (SELECT DISTINCT 'payments:velocity:' || u AS k FROM unnest($1::text[]) AS u"
            " ORDER BY 1 OFFSET 0) AS sorted",
            user_ids,
        )
    if order_ids:
        await conn.execute(
            "SELECT 1 FROM payments WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
            order_ids,
        )


async def screen_inputs(
    conn: asyncpg.Connection, user_ids: Sequence[str], order_ids: Sequence[str], window_s: float
) -> tuple[dict[str, int], set[str]]:
    """What screening a window's requests needs: each user's requests within the last
    `window_s` seconds, and which of the orders already have their payment row.

    Counted under a lock on each user (taken in user order), held until the transaction ends:
    a request being handled at the same time (by another payments process) is only visible
    once it commits, so without the lock both would count the same past and the velocity limit
    would let both through. The locks are their own statement: the count's must start after
    they are granted, to see what the holder committed (READ COMMITTED takes a snapshot per
    statement)."""
    users = sorted(set(user_ids))
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM"
        " (SELECT DISTINCT 'payments:velocity:' || u AS k FROM unnest($1::text[]) AS u"
        " ORDER BY 1 OFFSET 0) AS sorted",
        users,
    )
    rows = await conn.fetch(
        "SELECT 'user' AS kind, u AS key, (SELECT count(*) FROM payments p WHERE p.user_id = u"
        "  AND p.requested_at > now() - make_interval(secs => $2)) AS n"
        " FROM unnest($1::text[]) AS u"
        " UNION ALL"
        " SELECT 'order', order_id, 0 FROM payments WHERE order_id = ANY($3::text[])",
        users,
        window_s,
        list(order_ids),
    )
    recent = {r["key"]: int(r["n"]) for r in rows if r["kind"] == "user"}
    return recent, {r["key"] for r in rows if r["kind"] == "order"}


async def record_requests(
    conn: asyncpg.Connection, requests: Sequence[tuple[NewPayment, str | None]]
) -> set[str]:
    """Record payment requests: pending (for the charge job) or failed as fraud. The order ids
    recorded: an order that already has its row (a duplicate request, or a tombstone: the
    order was cancelled first) is not."""
    if not requests:
        return set()
    columns = [
        [getattr(p, name) for p, _ in requests]
        for name in (
            "payment_id", "order_id", "user_id", "email", "amount_minor", "currency",
            "payment_token", "correlation_id", "causation_id", "traceparent",
        )
    ]  # fmt: skip
    rows = await conn.fetch(
        """
        INSERT INTO payments (payment_id, order_id, user_id, email, amount_minor, currency,
                              payment_token, correlation_id, causation_id, traceparent,
                              status, failure_reason, failure_detail, requested_at)
        SELECT r.payment_id, r.order_id, r.user_id, r.email, r.amount_minor, r.currency,
               r.payment_token, r.correlation_id, r.causation_id, r.traceparent,
               CASE WHEN f.detail IS NULL THEN $11 ELSE $12 END,
               CASE WHEN f.detail IS NULL THEN NULL ELSE 'fraud' END, f.detail, now()
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::text[]) WITH ORDINALITY AS r
             (payment_id, order_id, user_id, email, amount_minor, currency, payment_token,
              correlation_id, causation_id, traceparent, n)
        JOIN unnest($13::text[]) WITH ORDINALITY AS f(detail, n) USING (n)
        ON CONFLICT (order_id) DO NOTHING
        RETURNING order_id
        """,
        *columns,
        Status.PENDING.value,
        Status.FAILED.value,
        [fraud for _, fraud in requests],
    )
    return {r["order_id"] for r in rows}


@dataclass(frozen=True)
class PaymentState:
    status: Status
    #: provider calls made to charge it (a pending row with attempts > 0 is being retried)
    attempts: int


async def request_cancellation(
    conn: asyncpg.Connection, order_id: str, cancel_event_id: str
) -> PaymentState | None:
    """Mark the order's payment as not wanted any more (row locked until the transaction ends);
    its state, or None if the order has no payment row yet."""
    row = await conn.fetchrow(
        """
        UPDATE payments
           SET cancel_requested = true, updated_at = now(),
               cancel_event_id = coalesce(cancel_event_id, $2)
         WHERE order_id = $1
        RETURNING status, attempts
        """,
        order_id,
        cancel_event_id,
    )
    return None if row is None else PaymentState(Status(row["status"]), row["attempts"])


async def leave_tombstone(
    conn: asyncpg.Connection, order_id: str, user_id: str, email: str, cancel_event_id: str
) -> bool:
    """Take the order's payment row for a cancelled order that never asked to be paid; False if
    a payment request got there first (then that row is the one to cancel)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO payments (payment_id, order_id, user_id, email, status, cancel_requested,
                              cancel_event_id)
        VALUES ($1, $2, $3, $4, 'voided', true, $5)
        ON CONFLICT (order_id) DO NOTHING
        RETURNING 1
        """,
        str(uuid.uuid4()),
        order_id,
        user_id,
        email,
        cancel_event_id,
    )
    return inserted is not None


async def void(conn: asyncpg.Connection, order_id: str) -> None:
    """A pending payment of a cancelled order, never sent to the provider, is never charged."""
    await conn.execute(
        "UPDATE payments SET status = 'voided', updated_at = now()"
        " WHERE order_id = $1 AND status = 'pending' AND attempts = 0",
        order_id,
    )


# -- the charge job's side ------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedPayment:
    """A payment the charge job has claimed: to charge, or to refund."""

    kind: Literal["charge", "refund"]
    payment_id: str
    order_id: str
    claim_id: uuid.UUID
    amount_minor: int
    currency: str
    payment_token: str
    attempts: int
    charge_ref: str | None
    correlation_id: str | None
    causation_id: str | None
    traceparent: str | None
    cancel_event_id: str | None


CLAIM = """
WITH due AS (
    SELECT payment_id FROM payments
    WHERE (status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now()))
       OR (status = 'captured' AND cancel_requested
           AND (next_attempt_at IS NULL OR next_attempt_at <= now()))
       OR (status IN ('charging', 'refunding') AND claimed_at < now() - make_interval(secs => $2))
    ORDER BY updated_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE payments p
   SET status = CASE p.status WHEN 'pending' THEN 'charging'
                              WHEN 'captured' THEN 'refunding'
                              ELSE p.status END,
       attempts = p.attempts + CASE WHEN p.status IN ('pending', 'charging') THEN 1 ELSE 0 END,
       claim_id = gen_random_uuid(), claimed_at = now(), updated_at = now()
  FROM due
 WHERE p.payment_id = due.payment_id
RETURNING p.status, p.payment_id, p.order_id, p.claim_id, p.amount_minor, p.currency,
          p.payment_token, p.attempts, p.charge_ref, p.correlation_id, p.causation_id,
          p.traceparent, p.cancel_event_id
"""


async def claim_work(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[ClaimedPayment]:
    """Lease up to `limit` payments with work to do: pending ones to charge, captured ones of
    cancelled orders to refund, and those whose previous holder's lease ran out."""
    rows = await conn.fetch(CLAIM, limit, lease_s)
    return [
        ClaimedPayment(
            kind="refund" if r["status"] == Status.REFUNDING else "charge",
            payment_id=r["payment_id"],
            order_id=r["order_id"],
            claim_id=r["claim_id"],
            amount_minor=r["amount_minor"],
            currency=r["currency"],
            payment_token=r["payment_token"],
            attempts=r["attempts"],
            charge_ref=r["charge_ref"],
            correlation_id=r["correlation_id"],
            causation_id=r["causation_id"],
            traceparent=r["traceparent"],
            cancel_event_id=r["cancel_event_id"],
        )
        for r in rows
    ]


async def record_capture(
    conn: asyncpg.Connection, claimed: ClaimedPayment, charge_ref: str
) -> Status | None:
    """The charge was captured: captured, or straight to refunding if the order was cancelled
    meanwhile (the same job refunds it next, under the same claim).

    None if the claim was lost.
    """
    return (await record_captures(conn, [(claimed, charge_ref)])).get(claimed.payment_id)


async def record_captures(
    conn: asyncpg.Connection, captures: Sequence[tuple[ClaimedPayment, str]]
) -> dict[str, Status]:
    """`record_capture` for several (claimed payment, charge reference) in one UPDATE: the new
    status of each payment whose claim still held, by payment id."""
    if not captures:
        return {}
    rows = await conn.fetch(
        """
        UPDATE payments AS p
           SET status = CASE WHEN p.cancel_requested THEN 'refunding' ELSE 'captured' END,
               charge_ref = c.ref, captured_at = now(), claimed_at = now(), updated_at = now(),
               next_attempt_at = NULL
          FROM unnest($1::text[], $2::uuid[], $3::text[]) AS c(payment_id, claim_id, ref)
         WHERE p.payment_id = c.payment_id AND p.claim_id = c.claim_id AND p.status = 'charging'
        RETURNING p.payment_id, p.status
        """,
        [c.payment_id for c, _ in captures],
        [c.claim_id for c, _ in captures],
        [ref for _, ref in captures],
    )
    return {r["payment_id"]: Status(r["status"]) for r in rows}


async def record_failure(
    conn: asyncpg.Connection,
    claimed: ClaimedPayment,
    reason: Literal["declined", "provider_error"],
    detail: str,
) -> bool:
    """The charge will never be captured; False if the claim was lost."""
    done = await conn.fetchval(
        """
        UPDATE payments
           SET status = 'failed', failure_reason = $3, failure_detail = $4, claim_id = NULL,
               updated_at = now()
         WHERE payment_id = $1 AND claim_id = $2 AND status = 'charging'
        RETURNING 1
        """,
        claimed.payment_id,
        claimed.claim_id,
        reason,
        detail,
    )
    return done is not None


async def retry_later(
    conn: asyncpg.Connection, claimed: ClaimedPayment, delay_s: float, error: str
) -> None:
    """The provider did not answer: give the row back, to be tried again after `delay_s`.

    The charge is tried again even if the order was cancelled meanwhile: the call that got no
    answer may have captured it, and asking again with the same idempotency key is how to
    find out (and refund it if so).
    """
    await conn.execute(
        """
        UPDATE payments
           SET status = CASE WHEN status = 'refunding' THEN 'captured' ELSE 'pending' END,
               next_attempt_at = now() + make_interval(secs => $3), failure_detail = $4,
               claim_id = NULL, updated_at = now()
         WHERE payment_id = $1 AND claim_id = $2 AND status IN ('charging', 'refunding')
        """,
        claimed.payment_id,
        claimed.claim_id,
        delay_s,
        error[:500],
    )


async def record_refund(conn: asyncpg.Connection, claimed: ClaimedPayment, refund_ref: str) -> bool:
    """The captured charge was refunded; False if the claim was lost."""
    done = await conn.fetchval(
        """
        UPDATE payments
           SET status = 'refunded', refund_ref = $3, refunded_at = now(), claim_id = NULL,
               updated_at = now()
         WHERE payment_id = $1 AND claim_id = $2 AND status = 'refunding'
        RETURNING 1
        """,
        claimed.payment_id,
        claimed.claim_id,
        refund_ref,
    )
    return done is not None


# -- reading --------------------------------------------------------------------------------------
PAYMENT_COLUMNS = (
    "payment_id, order_id, user_id, status, amount_minor, currency, failure_reason,"
    " failure_detail, requested_at, captured_at, refunded_at, updated_at"
)


async def get_payment(conn: asyncpg.Connection, payment_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {PAYMENT_COLUMNS} FROM payments"
        " WHERE payment_id = $1 AND requested_at IS NOT NULL",
        payment_id,
    )
    return row


async def payments_of(conn: asyncpg.Connection, user_id: str, limit: int) -> list[asyncpg.Record]:
    """The user's payments, newest first (tombstones are bookkeeping, not payments: left out)."""
    return list(
        await conn.fetch(
            f"SELECT {PAYMENT_COLUMNS} FROM payments"
            " WHERE user_id = $1 AND requested_at IS NOT NULL"
            " ORDER BY requested_at DESC, payment_id LIMIT $2",
            user_id,
            limit,
        )
    )
