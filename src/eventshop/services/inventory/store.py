"""inventory's tables: stock (per sku) and reservations (per order).

Whatever moves units locks the stock rows first, in sku order (`lock_stock`), so transactions
touching overlapping skus wait for each other in one order and never deadlock; the moves
themselves are single UPDATEs over all the skus of an order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from eventshop.services.inventory.domain import ReservationStatus, StockLevel


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReservationStatus
    #: the order's lines as received: [{"sku": ..., "quantity": ..., ...}, ...]
    lines: list[dict[str, Any]]


_STOCK_COLUMNS = "sku, on_hand, reserved, sold, restocked_total"


def _stock_level(row: asyncpg.Record) -> StockLevel:
    return StockLevel(
        sku=row["sku"],
        on_hand=int(row["on_hand"]),
        reserved=int(row["reserved"]),
        sold=int(row["sold"]),
        restocked_total=int(row["restocked_total"]),
    )


# -- stock ---------------------------------------------------------------------------------------
async def add_stock_item(conn: asyncpg.Connection, sku: str) -> bool:
    """Start tracking a sku with nothing in stock; False if it is already tracked."""
    added = await conn.fetchval(
        "INSERT INTO stock (sku) VALUES ($1) ON CONFLICT (sku) DO NOTHING RETURNING 1", sku
    )
    return added is not None


async def lock_stock(conn: asyncpg.Connection, skus: Sequence[str]) -> dict[str, int]:
    """Lock the stock rows of `skus` until the transaction ends; their on_hand by sku.

    ORDER BY sku under FOR UPDATE locks the rows in sku order (the lock step runs on the
    sorted rows), which is what keeps concurrent multi-sku orders from deadlocking. A sku
    missing from the result is one inventory has never heard of.
    """
    rows = await conn.fetch(
        "SELECT sku, on_hand FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE",
        list(skus),
    )
    return {r["sku"]: int(r["on_hand"]) for r in rows}


async def lock_stock_of_window(conn: asyncpg.Connection, skus: Sequence[str]) -> None:
    """Lock the stock rows of every sku a window of events touches, in sku order, before any
    of its handlers runs. Each handler locks its own order's rows in sku order too, but one
    window runs several orders' handlers in one transaction: without this, two replicas'
    windows could take {A} then {B} and {B} then {A}, and deadlock (seen with three replicas:
    45 deadlocks in a hundred orders, each costing PostgreSQL's deadlock_timeout, 1 s)."""
    if skus:
        await conn.execute(
            "SELECT 1 FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE",
            sorted(set(skus)),
        )


async def _move(conn: asyncpg.Connection, sql: str, quantities: Mapping[str, int]) -> None:
    skus = sorted(quantities)
    moved = await conn.fetchval(sql, skus, [quantities[s] for s in skus])
    if moved != len(skus):  # rows are never deleted: this is a bug, not a business case
        raise RuntimeError(f"stock rows missing for {skus}: moved {moved}")


_MOVE = """
WITH moved AS (
    UPDATE stock AS s SET {assignments}, updated_at = now()
    FROM unnest($1::text[], $2::bigint[]) AS m(sku, quantity)
    WHERE s.sku = m.sku
    RETURNING 1
) SELECT count(*) FROM moved
"""


async def release(conn: asyncpg.Connection, quantities: Mapping[str, int]) -> None:
    """reserved -> on_hand: a cancelled order gives its units back."""
    sql = _MOVE.format(
        assignments="reserved = s.reserved - m.quantity, on_hand = s.on_hand + m.quantity"
    )
    await _move(conn, sql, quantities)


async def move_many(
    conn: asyncpg.Connection,
    on_hand: Mapping[str, int],
    reserved: Mapping[str, int],
    sold: Mapping[str, int],
) -> None:
    """Several moves at once, as net changes per sku of on_hand, reserved and sold (the rows
    must be locked by `lock_stock`): one UPDATE for a whole window's reservations and sales."""
    skus = sorted(set(on_hand) | set(reserved) | set(sold))
    if not skus:
        return
    moved = await conn.fetchval(
        """
        WITH moved AS (
            UPDATE stock AS s SET on_hand = s.on_hand + m.on_hand,
                   reserved = s.reserved + m.reserved, sold = s.sold + m.sold,
                   updated_at = now()
            FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                 AS m(sku, on_hand, reserved, sold)
            WHERE s.sku = m.sku
            RETURNING 1
        ) SELECT count(*) FROM moved
        """,
        skus,
        [on_hand.get(s, 0) for s in skus],
        [reserved.get(s, 0) for s in skus],
        [sold.get(s, 0) for s in skus],
    )
    if moved != len(skus):  # rows are never deleted: this is a bug, not a business case
        raise RuntimeError(f"stock rows missing for {skus}: moved {moved}")


async def restock(conn: asyncpg.Connection, sku: str, quantity: int) -> StockLevel | None:
    """Add `quantity` units on hand; None if the sku is not tracked."""
    row = await conn.fetchrow(
        "UPDATE stock SET on_hand = on_hand + $2, restocked_total = restocked_total + $2,"
        f" updated_at = now() WHERE sku = $1 RETURNING {_STOCK_COLUMNS}",
        sku,
        quantity,
    )
    return _stock_level(row) if row is not None else None


async def stock_level(conn: asyncpg.Connection, sku: str) -> StockLevel | None:
    row = await conn.fetchrow(f"SELECT {_STOCK_COLUMNS} FROM stock WHERE sku = $1", sku)
    return _stock_level(row) if row is not None else None


async def stock_levels(
    conn: asyncpg.Connection, *, limit: int, offset: int
) -> tuple[list[StockLevel], int]:
    """One page of stock levels in sku order, and how many skus there are."""
    rows = await conn.fetch(
        f"SELECT {_STOCK_COLUMNS}, count(*) OVER () AS total FROM stock"
        " ORDER BY sku LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    if rows:
        return [_stock_level(r) for r in rows], int(rows[0]["total"])
    return [], int(await conn.fetchval("SELECT count(*) FROM stock"))


# -- reservations --------------------------------------------------------------------------------
def _lines_json(lines: Sequence[Mapping[str, Any]]) -> str:
    return orjson.dumps(list(lines)).decode()


async def claim_orders(
    conn: asyncpg.Connection, claims: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
) -> set[str]:
    """Make the orders' reservation rows, as `rejected` until their stock is proven to be there,
    in one INSERT; the ids claimed (each at most once). An order already known is not: the
    insert is the check, and a concurrent event about the same order that inserted first makes
    this one wait for its commit and then find the row, so only one of them acts."""
    if not claims:
        return set()
    rows = await conn.fetch(
        "INSERT INTO reservations (order_id, status, lines)"
        " SELECT o, $2, l::jsonb FROM unnest($1::text[], $3::text[]) AS c(o, l)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        [order_id for order_id, _ in claims],
        ReservationStatus.REJECTED.value,
        [_lines_json(lines) for _, lines in claims],
    )
    return {r["order_id"] for r in rows}


async def add_tombstone(
    conn: asyncpg.Connection, order_id: str, lines: Sequence[Mapping[str, Any]]
) -> bool:
    """Mark an order cancelled before inventory heard of it, so a late order.created reserves
    nothing; False if a row appeared meanwhile (its order.created won the race)."""
    added = await conn.fetchval(
        "INSERT INTO reservations (order_id, status, lines) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING 1",
        order_id,
        ReservationStatus.CANCELLED_BEFORE_RESERVE.value,
        _lines_json(lines),
    )
    return added is not None


async def reservation_for_update(conn: asyncpg.Connection, order_id: str) -> Reservation | None:
    """The order's reservation, locked until the transaction ends."""
    row = await conn.fetchrow(
        "SELECT order_id, status, lines::text AS lines FROM reservations"
        " WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    if row is None:
        return None
    return Reservation(
        row["order_id"], ReservationStatus(row["status"]), orjson.loads(row["lines"])
    )


async def reservations_for_update(
    conn: asyncpg.Connection, order_ids: Sequence[str]
) -> dict[str, Reservation]:
    """Several orders' reservations, locked in id order until the transaction ends."""
    rows = await conn.fetch(
        "SELECT order_id, status, lines::text AS lines FROM reservations"
        " WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
        sorted(set(order_ids)),
    )
    return {
        r["order_id"]: Reservation(
            r["order_id"], ReservationStatus(r["status"]), orjson.loads(r["lines"])
        )
        for r in rows
    }


async def set_reservation_statuses(
    conn: asyncpg.Connection, statuses: Mapping[str, ReservationStatus]
) -> None:
    """`set_reservation_status` for several orders in one UPDATE."""
    if statuses:
        await conn.execute(
            "UPDATE reservations AS r SET status = u.status, updated_at = now()"
            " FROM unnest($1::text[], $2::text[]) AS u(order_id, status)"
            " WHERE r.order_id = u.order_id",
            list(statuses),
            [s.value for s in statuses.values()],
        )


async def set_reservation_status(
    conn: asyncpg.Connection, order_id: str, status: ReservationStatus
) -> None:
    await conn.execute(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        status.value,
    )
