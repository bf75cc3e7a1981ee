"""The checker: what became of the load, read with queries of its own (never the platform's
code paths) over every service's tables, the outboxes, the parking lots and the archive.

Jepsen's categories: an order the platform accepted (202) that does not exist is **lost**; an
Idempotency-Key that came back with two order ids, or a second effect (capture, notification,
award) of one order, is **duplicated**; an order of the run's shoppers that no answer named is
**unexpected**; an accepted order not final after the settling time is **stuck**.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from eventshop.chaos.load import Placement
from eventshop.ops.parked import CONSUMING
from eventshop.platform.bus.node import connect
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS

CONSUMERS = tuple(CONSUMING)
#: how many example ids a violation names
EXAMPLES = 5

#: name -> (what must hold, a query of the ids where it does not: $1 the run's order ids, or
#: its skus for stock_*); and every_event_archived (in `verdict`): every event a service
#: published during the run is in the archive
INVARIANTS: dict[str, tuple[str, str]] = {
    "one_capture_per_confirmed_order": (
        "a confirmed order has exactly one captured payment",
        """SELECT o.order_id FROM orders.orders o WHERE o.order_id = ANY($1) AND o.status =
           'CONFIRMED' AND (SELECT count(*) FROM payments.payments p WHERE p.order_id = o.order_id
           AND p.status IN ('captured', 'refunding')) <> 1""",
    ),
    "no_capture_on_cancelled_order": (
        "a cancelled order keeps no captured payment (refunded if it was charged)",
        """SELECT o.order_id FROM orders.orders o JOIN payments.payments p USING (order_id)
           WHERE o.order_id = ANY($1) AND o.status = 'CANCELLED'
             AND p.status IN ('captured', 'refunding', 'charging')""",
    ),
    "one_notification_per_final_order": (
        "a final order was notified exactly once",
        """SELECT o.order_id FROM orders.orders o WHERE o.order_id = ANY($1)
           AND o.status IN ('CONFIRMED', 'CANCELLED') AND (SELECT count(*) FROM
           notifications.notifications n WHERE n.ref = o.order_id
           AND n.kind IN ('order_confirmed', 'order_cancelled')) <> 1""",
    ),
    "one_award_per_confirmed_order": (
        "a confirmed order earned one loyalty award, a cancelled one none",
        """SELECT o.order_id FROM orders.orders o WHERE o.order_id = ANY($1) AND
           (SELECT count(*) FROM loyalty.awards a WHERE a.order_id = o.order_id)
           <> CASE o.status WHEN 'CONFIRMED' THEN 1 ELSE 0 END
           AND o.status IN ('CONFIRMED', 'CANCELLED')""",
    ),
    "reservation_settled": (
        "a confirmed order's stock is committed, a cancelled one's not held",
        """SELECT o.order_id FROM orders.orders o LEFT JOIN inventory.reservations r
           USING (order_id) WHERE o.order_id = ANY($1) AND (
             (o.status = 'CONFIRMED' AND r.status IS DISTINCT FROM 'committed')
             OR (o.status = 'CANCELLED' AND r.status = 'reserved'))""",
    ),
    "stock_balances_per_sku": (
        "per sku: on hand + reserved + sold = restocked, nothing reserved at rest, and sold is "
        "what the confirmed orders bought",
        """SELECT s.sku FROM inventory.stock s WHERE s.sku = ANY($1) AND (
             s.on_hand + s.reserved + s.sold <> s.restocked_total OR s.reserved <> 0
             OR s.sold <> coalesce((SELECT sum((l->>'quantity')::bigint) FROM orders.orders o,
                  jsonb_array_elements(o.lines) l WHERE o.status = 'CONFIRMED'
                  AND l->>'sku' = s.sku), 0))""",
    ),
}


@dataclass
class Verdict:
    accepted: int = 0
    refused: int = 0
    unanswered: int = 0
    final: int = 0
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    unsent: dict[str, int] = field(default_factory=dict)
    parked: int = 0
    seconds_to_final: list[float] = field(default_factory=list)
    #: CONFIRMED, or CANCELLED (reason): how the run's orders ended
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.stuck or self.lost or self.duplicated or self.unexpected or self.violations
            or any(self.unsent.values())
        )  # fmt: skip


async def settle(db: asyncpg.Connection, order_ids: Sequence[str], within_s: float) -> list[str]:
    """Wait until every order is final (or the time is up); those still not final."""
    deadline = time.monotonic() + within_s
    while True:
        open_ = [
            r["order_id"]
            for r in await db.fetch(
                "SELECT order_id FROM orders.orders WHERE order_id = ANY($1)"
                " AND status NOT IN ('CONFIRMED', 'CANCELLED')",
                list(order_ids),
            )
        ]
        if not open_ or time.monotonic() > deadline:
            return open_
        await asyncio.sleep(0.5)


async def quiet(
    db: asyncpg.Connection,
    settings: PlatformSettings,
    within_s: float,
    order_ids: Sequence[str] = (),
) -> None:
    """Wait until the platform has nothing left to do: no outbox row unsent, no message
    waiting in a consumer's queue and no charge or refund of the run's orders claimed by
    payments' job and not yet recorded, three looks in a row half a second apart (or the time
    is up). The effects that follow an order's end (its notification, its award, the refund of
    a cancelled order's capture) come after it: checking them the moment the orders are final
    would count late work as missing."""
    deadline = time.monotonic() + within_s
    calm = 0
    while calm < 3 and time.monotonic() < deadline:
        unsent = sum((await unsent_by_service(db)).values())
        waiting = await queued(settings)
        claimed = await payments_claimed(db, order_ids)
        calm = calm + 1 if unsent == waiting == claimed == 0 else 0
        await asyncio.sleep(0.5)


async def payments_claimed(db: asyncpg.Connection, order_ids: Sequence[str]) -> int:
    """Charges and refunds of these orders payments' job has claimed and not yet recorded. A
    claim whose recording failed (the database killed under it) is taken over only when its
    lease runs out (EVENTSHOP_PAYMENTS_CHARGE_LEASE_S, 30 s): until then it is work in flight,
    not a capture left on a cancelled order."""
    try:
        found: int = await db.fetchval(
            "SELECT count(*) FROM payments.payments WHERE order_id = ANY($1)"
            " AND status IN ('charging', 'refunding')",
            list(order_ids),
        )
    except asyncpg.UndefinedTableError:
        return 0
    return found


async def ready_messages(settings: PlatformSettings, names: Sequence[str]) -> int:
    """Messages ready in these queues (as the operator); a queue that does not exist counts 0."""
    conn = await connect(settings.amqp_url)
    total = 0
    try:
        channel = await conn.channel()
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
                total += queue.declaration_result.message_count or 0
            except Exception:
                channel = await conn.channel()  # a missing queue closes the channel
    finally:
        await conn.close()
    return total


async def queued(settings: PlatformSettings) -> int:
    """Messages ready in the consumers' queues, their retry ladders included."""
    delays = settings.retry_delays_ms
    return await ready_messages(
        settings, [n for s in CONSUMERS for n in (s, *(f"{s}.delay.{ms}ms" for ms in delays))]
    )


async def parked_depth(settings: PlatformSettings) -> int:
    """Messages in every consumer's parking lot."""
    return await ready_messages(settings, [f"{s}.parked" for s in CONSUMERS])


async def unsent_by_service(db: asyncpg.Connection) -> dict[str, int]:
    """Outbox rows not yet published, per service that has an outbox."""
    found: dict[str, int] = {}
    for service in PORTS:
        try:
            found[service] = await db.fetchval(f'SELECT count(*) FROM "{service}".outbox')
        except asyncpg.UndefinedTableError:
            continue  # a service without an outbox
    return found


async def verdict(
    db: asyncpg.Connection,
    placements: Sequence[Placement],
    users: Sequence[str],
    skus: Sequence[str],
    *,
    since: datetime,
    settle_s: float,
    settings: PlatformSettings | None = None,
) -> Verdict:
    """`settings`: the operator's, reaching the platform's broker (the process platform's
    unless told)."""
    v = Verdict()
    ids = sorted({oid for p in placements for oid in p.order_ids})
    v.accepted = sum(p.accepted for p in placements)
    v.refused = sum(p.refused for p in placements)
    v.unanswered = len(placements) - v.accepted - v.refused
    v.duplicated = [p.key for p in placements if len(p.order_ids) > 1]
    v.stuck = await settle(db, ids, settle_s)
    await quiet(db, settings or PlatformSettings(), settle_s, ids)
    rows = await db.fetch(
        "SELECT order_id, status, reason,"
        " extract(epoch FROM updated_at - created_at)::float8 AS s"
        " FROM orders.orders WHERE order_id = ANY($1)",
        ids,
    )
    for r in rows:
        outcome = r["status"] if r["reason"] is None else f"{r['status']} ({r['reason']})"
        v.outcomes[outcome] = v.outcomes.get(outcome, 0) + 1
    found = {r["order_id"]: r for r in rows}
    v.lost = [oid for oid in ids if oid not in found]
    v.final = sum(r["status"] in ("CONFIRMED", "CANCELLED") for r in rows)
    v.seconds_to_final = sorted(r["s"] for r in rows if r["status"] in ("CONFIRMED", "CANCELLED"))
    v.unexpected = [
        r["order_id"]
        for r in await db.fetch(
            "SELECT order_id FROM orders.orders WHERE user_id = ANY($1)"
            " AND NOT (order_id = ANY($2)) AND created_at >= $3",
            list(users),
            ids,
            since,
        )
    ]
    for name, (_, query) in INVARIANTS.items():
        over = list(skus) if name.startswith("stock_") else ids
        bad = [r[0] for r in await db.fetch(query, over)]
        if bad:
            v.violations[name] = _examples(bad)
    v.unsent = await unsent_by_service(db)
    # the services that have an outbox; a run that accepted nothing sent nothing to compare
    missing = await not_archived(db, list(v.unsent), since) if v.accepted else []
    if missing:
        v.violations["every_event_archived"] = _examples(missing)
    return v


#: what `not_archived` reports when no sent row is left to compare the archive with
NO_SENT_ROWS = (
    "no sent outbox row is kept since the run began, so none could be compared with the"
    " archive: EVENTSHOP_RETENTION_OUTBOX_SENT_S=0 deletes them as they are confirmed (ADR"
    " 0009); run chaos with a window"
)


async def not_archived(
    db: asyncpg.Connection, schemas: Sequence[str], since: datetime, archive: str = "archive"
) -> list[str]:
    """The ids of events the services (`schemas`) sent since `since` that the archive lacks;
    `[NO_SENT_ROWS]` when their outboxes keep no sent row of that time to check."""
    missing: list[str] = []
    kept = 0
    for schema in schemas:
        # the run's sent rows, and those of them the archive lacks, in one pass
        sent, lacking = await db.fetchrow(
            f'SELECT count(*), array_agg(e.event_id) FILTER (WHERE NOT EXISTS (SELECT 1 FROM "'
            f'{archive}".archived_events a WHERE a.event_id = e.event_id))'
            f' FROM "{schema}".outbox_sent e WHERE e.created_at >= $1',
            since,
        )
        kept += sent
        missing += [str(event_id) for event_id in lacking or ()]
    return missing if kept else [NO_SENT_ROWS]


def _examples(ids: list[str]) -> list[str]:
    return ids[:EXAMPLES] + ([f"... {len(ids)} in all"] if len(ids) > EXAMPLES else [])


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]


def to_json(v: Verdict) -> dict[str, Any]:
    return {
        "accepted": v.accepted,
        "outcomes": dict(sorted(v.outcomes.items())),
        "refused": v.refused,
        "unanswered": v.unanswered,
        "final": v.final,
        "stuck": len(v.stuck),
        "lost": len(v.lost),
        "duplicated": len(v.duplicated),
        "unexpected": len(v.unexpected),
        "examples": {
            k: getattr(v, k)[:EXAMPLES] for k in ("stuck", "lost", "duplicated", "unexpected")
        },
        "violations": v.violations,
        "unsent": {k: n for k, n in v.unsent.items() if n},
        "time_to_final_s": {
            "p50": percentile(v.seconds_to_final, 50),
            "p99": percentile(v.seconds_to_final, 99),
        },
        "ok": v.ok,
    }
