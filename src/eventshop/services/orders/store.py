"""orders' tables: the price list, the order streams (event store), the orders read model and
the idempotency keys of POST /orders.

Every writer of an order first locks its read-model row (`lock_order`, or the timeout scan's
FOR UPDATE SKIP LOCKED), so the consumers and the timeout scanners of several processes take
turns on an order; the stream's unique version is the backstop if one ever does not.

An append holds the event log's head lock until its transaction ends (docs/adr/0005), so each
writer here appends last: read model and snapshot first, then the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from eventshop.platform.eventstore import (
    NewEvent,
    PostgresEventStore,
    RecordedEvent,
    SnapshotPolicy,
    StreamAppend,
    load_state,
    snapshot_if_due,
)
from eventshop.services.orders.domain import (
    DOMAIN_EVENTS,
    Decision,
    DomainEvent,
    Order,
    Price,
    evolve,
)
from eventshop.services.orders.eventlog import CODEC, UPCASTERS

#: the orders' event store: its SQL and upcasters, no state and no connection of its own
events = PostgresEventStore(UPCASTERS)

#: snapshots off: the default of EVENTSHOP_ORDERS_SNAPSHOT_EVERY (handlers pass the setting's)
NO_SNAPSHOTS = SnapshotPolicy(0)


def stream_of(order_id: str) -> str:
    return f"order-{order_id}"


def order_id_of(stream_id: str) -> str:
    return stream_id.removeprefix("order-")


# -- the price list -------------------------------------------------------------------------------
async def keep_price(conn: asyncpg.Connection, price: Price, as_of: datetime) -> None:
    """Record the catalog's price of a sku as of `as_of`, unless a newer one is already kept."""
    await conn.execute(
        """
        INSERT INTO prices (sku, name, price_minor, currency, active, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (sku) DO UPDATE
           SET name = EXCLUDED.name, price_minor = EXCLUDED.price_minor,
               currency = EXCLUDED.currency, active = EXCLUDED.active,
               updated_at = EXCLUDED.updated_at
         WHERE prices.updated_at <= EXCLUDED.updated_at
        """,
        price.sku,
        price.name,
        price.price_minor,
        price.currency,
        price.active,
        as_of,
    )


async def prices_and_clock(
    conn: asyncpg.Connection, skus: Sequence[str]
) -> tuple[dict[str, Price], datetime]:
    """The skus' prices, and the database's time in the same round trip: an order's deadline
    is set by the clock the time-out scan compares it with (`lock_orders_past_deadline`), never
    by this process's, which may be off (`eventshop chaos clock-skew`)."""
    rows = await conn.fetch(
        "SELECT now() AS clock, p.sku, p.name, p.price_minor, p.currency, p.active"
        " FROM (VALUES (1)) AS one (x) LEFT JOIN prices AS p ON p.sku = ANY($1::text[])",
        list(skus),
    )
    columns = ("sku", "name", "price_minor", "currency", "active")
    prices = {r["sku"]: Price(*(r[c] for c in columns)) for r in rows if r["sku"] is not None}
    return prices, rows[0]["clock"]


# -- idempotency keys -----------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyedOrder:
    order_id: str
    request_hash: str
    #: the order's status now (None: its row is not there)
    status: str | None = None


@dataclass(frozen=True)
class KeyClaim:
    """An Idempotency-Key to tie to an order (or, `claim=False`, only to look up)."""

    user_id: str
    key: str
    order_id: str
    request_hash: str
    #: False: the order was refused, its key stays free; only an earlier use of it is wanted
    claim: bool = True


async def claim_idempotency_keys(
    conn: asyncpg.Connection, claims: Sequence[KeyClaim]
) -> dict[tuple[str, str], KeyedOrder]:
    """Tie each claimed key to its order; the keys found taken, by (user id, key), each with
    the order it names and that order's status now. The others are now ours (or, not claimed,
    still free).

    A concurrent request with the same key waits here on the primary key until the first one
    commits (then it sees that order) or rolls back (then the key is its own). Keys are
    claimed in (user id, key) order, so two transactions claiming the same keys wait for each
    other in that one order, never in a cycle. A key is kept for
    `retention_idempotency_keys_s` at least, then the retention job deletes it and it is free
    again (ADR 0009).
    """
    earlier: dict[tuple[str, str], KeyedOrder] = {}
    todo = sorted(claims, key=lambda c: (c.user_id, c.key))
    while todo:
        claiming = [c for c in todo if c.claim]
        claimed: set[tuple[str, str]] = set()
        if claiming:
            rows = await conn.fetch(
                "INSERT INTO idempotency_keys (user_id, key, order_id, request_hash)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
                " ON CONFLICT (user_id, key) DO NOTHING RETURNING user_id, key",
                [c.user_id for c in claiming],
                [c.key for c in claiming],
                [c.order_id for c in claiming],
                [c.request_hash for c in claiming],
            )
            claimed = {(r["user_id"], r["key"]) for r in rows}
        taken = [c for c in todo if (c.user_id, c.key) not in claimed]
        if not taken:
            break
        rows = await conn.fetch(
            "SELECT k.user_id, k.key, k.order_id, k.request_hash, o.status"
            " FROM idempotency_keys AS k"
            " JOIN unnest($1::text[], $2::text[]) AS w (user_id, key) USING (user_id, key)"
            " LEFT JOIN orders AS o ON o.order_id = k.order_id",
            [c.user_id for c in taken],
            [c.key for c in taken],
        )
        for r in rows:
            earlier[(r["user_id"], r["key"])] = KeyedOrder(
                r["order_id"], r["request_hash"], r["status"]
            )
        # taken when claimed, gone when read: the retention job deleted it in between; again
        todo = [c for c in taken if c.claim and (c.user_id, c.key) not in earlier]
    return earlier


# -- streams and the read model -------------------------------------------------------------------
async def lock_window(conn: asyncpg.Connection, skus: list[str], order_ids: list[str]) -> None:
    """A window's prices in sku order, then its orders' rows in id order (ADR 0012): every
    window takes them before its first append, which takes the event log's one counter row, so
    no window holds the counter while it waits for an order another window holds. A price is
    locked by name (a transaction's advisory lock on the sku), not by its row: a sku's first
    price has no row yet, and two windows inserting the same new skus in opposite orders would
    wait for each other's inserts. A kind the window has none of costs no round trip (a window
    of saga steps has no price)."""
    if skus:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM"
            " (SELECT DISTINCT 'orders:price:' || s AS k FROM unnest($1::text[]) AS s"
            " ORDER BY 1 OFFSET 0) AS sorted",
            skus,
        )
    if order_ids:
        await conn.execute(
            "SELECT 1 FROM orders WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
            order_ids,
        )


async def lock_orders(conn: asyncpg.Connection, order_ids: Sequence[str]) -> set[str]:
    """Lock orders for saga steps (until the transaction ends), in id order; the ids found."""
    rows = await conn.fetch(
        "SELECT order_id FROM orders WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
        sorted(set(order_ids)),
    )
    return {r["order_id"] for r in rows}


def fold(order: Order | None, recorded: RecordedEvent) -> Order:
    return evolve(order, to_domain(recorded))


async def load_order(
    conn: asyncpg.Connection, order_id: str, snapshots: SnapshotPolicy = NO_SNAPSHOTS
) -> Order | None:
    """The order now: its snapshot (if snapshots are on) and the events after it."""
    codec = CODEC if snapshots.every else None
    return (await load_state(events, conn, stream_of(order_id), fold, codec)).state


async def load_orders(
    conn: asyncpg.Connection, order_ids: Sequence[str], snapshots: SnapshotPolicy = NO_SNAPSHOTS
) -> dict[str, Order | None]:
    """Several orders now: their whole streams in one round trip (each from its snapshot, one
    by one, when snapshots are on)."""
    if snapshots.every:
        return {i: await load_order(conn, i, snapshots) for i in order_ids}
    streams = await events.load_many(conn, [stream_of(i) for i in order_ids])
    found: dict[str, Order | None] = {}
    for order_id in order_ids:
        order: Order | None = None
        for recorded in streams[stream_of(order_id)]:
            order = fold(order, recorded)
        found[order_id] = order
    return found


async def order_as_of(
    conn: asyncpg.Connection,
    order_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
    snapshots: SnapshotPolicy = NO_SNAPSHOTS,
) -> Order | None:
    """Time travel: the order as it was after `version`, or at time `at` (None: not yet placed)."""
    codec = CODEC if snapshots.every else None
    loaded = await load_state(
        events, conn, stream_of(order_id), fold, codec, to_version=version, until=at
    )
    return loaded.state


async def history_of(conn: asyncpg.Connection, order_id: str) -> list[RecordedEvent]:
    return await events.load(conn, stream_of(order_id))


async def record_new_orders(
    conn: asyncpg.Connection,
    placed: Sequence[tuple[Decision, str | None]],
    *,
    snapshots: SnapshotPolicy = NO_SNAPSHOTS,
) -> None:
    """Start new orders' streams and their read-model rows: one INSERT and one append for all
    of them. Each comes with the correlation id of the request that placed it."""
    if not placed:
        return
    orders = [decision.state for decision, _ in placed]
    await conn.execute(
        """
        INSERT INTO orders (order_id, user_id, email, status, reason, lines, total_minor,
                            currency, created_at, updated_at, deadline, version, correlation_id)
        SELECT o.order_id, o.user_id, o.email, o.status, o.reason, o.lines::jsonb,
               o.total_minor, o.currency, o.created_at, o.created_at, o.deadline, o.version,
               o.correlation_id
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::bigint[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                    $11::int[], $12::text[])
             AS o (order_id, user_id, email, status, reason, lines, total_minor, currency,
                   created_at, deadline, version, correlation_id)
        """,
        [o.order_id for o in orders],
        [o.user_id for o in orders],
        [o.email for o in orders],
        [o.status.value for o in orders],
        [o.reason for o in orders],
        [_lines_json(o) for o in orders],
        [o.total_minor for o in orders],
        [o.currency for o in orders],
        [o.placed_at for o in orders],
        [o.deadline for o in orders],
        [o.version for o in orders],
        [correlation_id for _, correlation_id in placed],
    )
    for order in orders:
        await _snapshot(conn, 0, order, snapshots)
    await events.append_many(
        conn,
        [
            StreamAppend(
                stream_of(decision.state.order_id),
                0,
                [
                    NewEvent(e.type_name(), e.model_dump(mode="json"), e.schema_version)
                    for e in decision.record
                ],
                metadata={"correlation_id": correlation_id, "causation_id": None},
            )
            for decision, correlation_id in sorted(placed, key=lambda d: d[0].state.order_id)
        ],
    )


@dataclass(frozen=True)
class Step:
    """A saga step decided for an order: the order before it, and the decision."""

    before: Order
    decision: Decision
    correlation_id: str | None
    causation_id: str | None


async def record_decisions(
    conn: asyncpg.Connection, steps: Sequence[Step], snapshots: SnapshotPolicy = NO_SNAPSHOTS
) -> None:
    """Append the steps' events and bring the read models to their new states: one UPDATE and
    one append for all of them. An order's steps follow one another (each `before` is the
    previous one's state)."""
    steps = [s for s in steps if s.decision.record]
    if not steps:
        return
    first: dict[str, Step] = {}
    last: dict[str, Order] = {}
    recorded: dict[str, list[NewEvent]] = {}
    for step in steps:
        order_id = step.before.order_id
        first.setdefault(order_id, step)
        last[order_id] = step.decision.state
        meta = {"correlation_id": step.correlation_id, "causation_id": step.causation_id}
        recorded.setdefault(order_id, []).extend(
            NewEvent(e.type_name(), e.model_dump(mode="json"), e.schema_version, meta)
            for e in step.decision.record
        )
    await conn.execute(
        "UPDATE orders AS o SET status = u.status, reason = u.reason, version = u.version,"
        " updated_at = now()"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])"
        " AS u(order_id, status, reason, version) WHERE o.order_id = u.order_id",
        list(last),
        [o.status.value for o in last.values()],
        [o.reason for o in last.values()],
        [o.version for o in last.values()],
    )
    for order_id, order in last.items():
        await _snapshot(conn, first[order_id].before.version, order, snapshots)
    await events.append_many(
        conn,
        [
            StreamAppend(stream_of(i), first[i].before.version, recorded[i])
            for i in sorted(recorded)  # in id order, as the rows were locked
        ],
    )


async def _snapshot(
    conn: asyncpg.Connection, before: int, order: Order, snapshots: SnapshotPolicy
) -> None:
    await snapshot_if_due(
        events,
        conn,
        stream_of(order.order_id),
        order,
        before=before,
        after=order.version,
        policy=snapshots,
        codec=CODEC,
    )


async def read_model_differences(
    conn: asyncpg.Connection, order_ids: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Replay each order's stream (no snapshot) and compare it with its `orders` row.

    Returns the orders that differ, each with what differs; {} when every read model is what
    its stream says. `order_ids` None: every order.
    """
    if order_ids is None:
        rows = await conn.fetch(f"SELECT {ORDER_COLUMNS} FROM orders")
    else:
        rows = await conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ANY($1::text[])",
            list(order_ids),
        )
    found = {r["order_id"]: r for r in rows}
    differences: dict[str, list[str]] = {}
    for order_id in order_ids if order_ids is not None else list(found):
        row = found.get(order_id)
        replayed = (await load_state(events, conn, stream_of(order_id), fold)).state
        if row is None or replayed is None:
            if row is not None or replayed is not None:
                differences[order_id] = ["a read model without a stream, or a stream without one"]
            continue
        wanted = {
            "user_id": replayed.user_id,
            "email": replayed.email,
            "status": replayed.status.value,
            "reason": replayed.reason,
            "lines": [line.model_dump(mode="json") for line in replayed.lines],
            "total_minor": replayed.total_minor,
            "currency": replayed.currency,
            "created_at": replayed.placed_at,
            "deadline": replayed.deadline,
            "version": replayed.version,
        }
        kept = {**dict(row), "lines": orjson.loads(row["lines"])}
        diff = [
            f"{k}: stream says {v!r}, read model {kept[k]!r}"
            for k, v in wanted.items()
            if kept[k] != v
        ]
        if diff:
            differences[order_id] = diff
    return differences


class UnknownDomainEventError(Exception):
    """A stored event this code can't read: an unknown type, or a version with no upcaster."""


def to_domain(recorded: RecordedEvent) -> DomainEvent:
    """A stored event as its domain event (upcast to the current version by the store)."""
    kind = DOMAIN_EVENTS.get(recorded.event_type)
    if kind is None:
        raise UnknownDomainEventError(f"unknown domain event type {recorded.event_type!r}")
    if recorded.schema_version != kind.schema_version:
        raise UnknownDomainEventError(
            f"{recorded.event_type} v{recorded.schema_version} read, but this code knows"
            f" v{kind.schema_version}: an upcaster is missing"
        )
    return kind.model_validate(recorded.payload)


def _lines_json(order: Order) -> str:
    return orjson.dumps([line.model_dump(mode="json") for line in order.lines]).decode()


@dataclass(frozen=True)
class DueOrder:
    order_id: str
    correlation_id: str
    #: the database's clock when it was found due: the deadline test and TimedOut agree on it
    checked_at: datetime


async def lock_orders_past_deadline(conn: asyncpg.Connection, limit: int) -> list[DueOrder]:
    """Running orders whose deadline has passed, locked; rows another process holds are skipped.

    The status list is spelled out (not a parameter) so the partial index on running orders
    applies: the scan stays cheap however many final orders pile up.
    """
    rows = await conn.fetch(
        """
        SELECT order_id, correlation_id, now() AS checked_at FROM orders
        WHERE status IN ('PENDING', 'AWAITING_PAYMENT') AND deadline <= now()
        ORDER BY deadline
        LIMIT $1
        FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return [DueOrder(r["order_id"], r["correlation_id"], r["checked_at"]) for r in rows]


# -- reading --------------------------------------------------------------------------------------
ORDER_COLUMNS = (
    "order_id, user_id, email, status, reason, lines, total_minor, currency, created_at,"
    " updated_at, deadline, version"
)


async def get_order(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1", order_id
    )
    return row


async def orders_of(conn: asyncpg.Connection, user_id: str, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1"
            " ORDER BY created_at DESC, order_id LIMIT $2",
            user_id,
            limit,
        )
    )


async def owner_of(conn: asyncpg.Connection, order_id: str) -> str | None:
    owner: str | None = await conn.fetchval(
        "SELECT user_id FROM orders WHERE order_id = $1", order_id
    )
    return owner
