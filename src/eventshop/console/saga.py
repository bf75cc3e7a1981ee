"""The saga as a whole, read from the orders service's tables: what the console's first page
shows and `eventshop saga --json` prints.

Read as the operator reads (EVENTSHOP_DATABASE_URL), never written. Time to final is an
order's last change (`updated_at`) minus its placing (`created_at`), for orders that ended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from eventshop.services.orders.store import order_id_of, stream_of

FINAL = ("CONFIRMED", "CANCELLED")
STATES = ("PENDING", "AWAITING_PAYMENT", *FINAL)


@dataclass(frozen=True)
class Step:
    """One event of an order's stream: what happened, and when."""

    version: int
    event_type: str
    recorded_at: datetime


@dataclass(frozen=True)
class RecentOrder:
    order_id: str
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    seconds_to_final: float | None
    steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class Bucket:
    """The orders that ended in one interval: how many, and how long they took."""

    start: datetime
    final: int
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class SagaSummary:
    at: datetime
    states: dict[str, int]
    cancelled_by_reason: dict[str, int]
    recent: list[RecentOrder]
    #: equal intervals over the last `window_s` seconds, oldest first, empty ones included
    buckets: list[Bucket]
    bucket_s: int

    @property
    def total(self) -> int:
        return sum(self.states.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        found: dict[str, Any] = _iso(data)
        return found


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value


async def saga_summary(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    window_s: int = 600,
    bucket_s: int = 10,
    recent: int = 12,
) -> SagaSummary:
    """Orders per state, cancellations by reason, the latest orders with their steps, and
    orders ended per `bucket_s` interval over the last `window_s` seconds with p50/p95."""
    at = await db.fetchval("SELECT now()")
    states = dict.fromkeys(STATES, 0)
    for row in await db.fetch("SELECT status, count(*) AS n FROM orders.orders GROUP BY status"):
        states[row["status"]] = row["n"]
    reasons = {
        row["reason"] or "unknown": row["n"]
        for row in await db.fetch(
            "SELECT reason, count(*) AS n FROM orders.orders WHERE status = 'CANCELLED'"
            " GROUP BY reason ORDER BY n DESC, reason"
        )
    }
    rows = await db.fetch(
        """
        SELECT order_id, status, reason, created_at, updated_at,
               CASE WHEN status = ANY($2::text[])
                    THEN extract(epoch FROM updated_at - created_at)::float8 END AS seconds
          FROM orders.orders ORDER BY created_at DESC, order_id LIMIT $1
        """,
        recent,
        list(FINAL),
    )
    steps: dict[str, list[Step]] = {row["order_id"]: [] for row in rows}
    for e in await db.fetch(
        "SELECT stream_id, version, event_type, recorded_at FROM orders.events"
        " WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version",
        [stream_of(order_id) for order_id in steps],
    ):
        steps[order_id_of(e["stream_id"])].append(
            Step(e["version"], e["event_type"], e["recorded_at"])
        )
    latest = [
        RecentOrder(
            r["order_id"],
            r["status"],
            r["reason"],
            r["created_at"],
            r["updated_at"],
            r["seconds"],
            steps[r["order_id"]],
        )
        for r in rows
    ]
    buckets = [
        Bucket(b["start"], b["final"], b["p50"], b["p95"])
        for b in await db.fetch(
            """
            WITH slots AS (
                SELECT generate_series(
                    to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) - make_interval(secs => $1),
                    now(), make_interval(secs => $2)) AS start
            ), ended AS (
                SELECT to_timestamp(floor(extract(epoch FROM updated_at) / $2) * $2) AS start,
                       extract(epoch FROM updated_at - created_at) AS seconds
                  FROM orders.orders
                 WHERE status = ANY($3::text[]) AND updated_at > now() - make_interval(secs => $1 + $2)
            )
            SELECT s.start, count(e.seconds)::int AS final,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY e.seconds) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY e.seconds) AS p95
              FROM slots s LEFT JOIN ended e USING (start)
             GROUP BY s.start ORDER BY s.start
            """,  # noqa: E501
            float(window_s),
            float(bucket_s),
            list(FINAL),
        )
    ]
    return SagaSummary(at, states, reasons, latest, buckets, bucket_s)
