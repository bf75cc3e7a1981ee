"""The invariants of docs/DESIGN.md §3, checked after any run (e2e tests, the demo, benchmarks).

An operator's check, not a service: it reads the schemas of inventory, orders, payments,
notifications and loyalty directly (read-only) and compares them. Each violation is reported
as a sentence naming what is wrong; an empty list means every invariant holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

FINAL = ("CONFIRMED", "CANCELLED")


@dataclass
class InvariantReport:
    violations: list[str] = field(default_factory=list)
    orders: int = 0
    confirmed: int = 0
    cancelled: int = 0
    skus: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


async def check_invariants(
    database_url: str, *, order_ids: list[str] | None = None, require_final: bool = True
) -> InvariantReport:
    """Check docs/DESIGN.md §3 over every order (or only `order_ids`) and every sku."""
    report = InvariantReport()
    conn = await asyncpg.connect(database_url)
    try:
        await _stock(conn, report)
        await _orders(conn, report, order_ids, require_final)
    finally:
        await conn.close()
    return report


async def _stock(conn: asyncpg.Connection, report: InvariantReport) -> None:
    rows = await conn.fetch(
        "SELECT sku, on_hand, reserved, sold, restocked_total FROM inventory.stock"
    )
    report.skus = len(rows)
    for r in rows:
        if r["on_hand"] + r["reserved"] + r["sold"] != r["restocked_total"]:
            report.violations.append(
                f"stock of {r['sku']} not conserved: on_hand {r['on_hand']} + reserved "
                f"{r['reserved']} + sold {r['sold']} != restocked {r['restocked_total']}"
            )
        if (
            r["reserved"] + r["sold"] > r["restocked_total"]
            or min(r["on_hand"], r["reserved"], r["sold"]) < 0
        ):
            report.violations.append(f"{r['sku']} oversold: {dict(r)}")


async def _orders(
    conn: asyncpg.Connection,
    report: InvariantReport,
    order_ids: list[str] | None,
    require_final: bool,
) -> None:
    scope = (
        "WHERE o.order_id = ANY($1::text[])"
        if order_ids is not None
        else "WHERE $1::text[] IS NULL"
    )
    orders = await conn.fetch(
        f"""
        SELECT o.order_id, o.status, o.reason, o.user_id,
               (SELECT count(*) FROM payments.payments p
                 WHERE p.order_id = o.order_id AND p.status IN ('captured', 'refunding'))
                 AS captured,
               (SELECT count(*) FROM loyalty.awards a WHERE a.order_id = o.order_id) AS awards,
               (SELECT count(*) FROM notifications.notifications n
                 WHERE n.ref = o.order_id AND n.kind IN ('order_confirmed', 'order_cancelled'))
                 AS notices,
               (SELECT r.status FROM inventory.reservations r WHERE r.order_id = o.order_id)
                 AS reservation
        FROM orders.orders o {scope}
        """,
        order_ids,
    )
    report.orders = len(orders)
    for o in orders:
        oid, status = o["order_id"], o["status"]
        if status == "CONFIRMED":
            report.confirmed += 1
            if o["captured"] != 1:
                report.violations.append(
                    f"confirmed order {oid} has {o['captured']} captured payments"
                )
            if o["awards"] != 1:
                report.violations.append(f"confirmed order {oid} has {o['awards']} loyalty awards")
            if o["reservation"] != "committed":
                report.violations.append(
                    f"confirmed order {oid}: reservation is {o['reservation']}"
                )
        elif status == "CANCELLED":
            report.cancelled += 1
            if o["captured"] != 0:
                report.violations.append(f"cancelled order {oid} still has a captured payment")
            if o["awards"] != 0:
                report.violations.append(f"cancelled order {oid} was awarded loyalty points")
            if o["reservation"] == "reserved":
                report.violations.append(f"cancelled order {oid} still holds its reservation")
        elif require_final:
            report.violations.append(f"order {oid} is not final: {status}")
        if status in FINAL and o["notices"] > 1:
            report.violations.append(f"order {oid} notified {o['notices']} times")
