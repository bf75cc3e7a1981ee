"""orders' use cases: the saga's steps (each translates an integration event into the saga's
own terms and advances the order: lock, load its stream, decide, append + read model + outbox),
placing an order, timing out the orders past their deadline, and the queries HTTP serves."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts import Envelope, EventPayload
from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.contracts.common import Line
from eventshop.contracts.inventory import InventoryRejected, InventoryReserved
from eventshop.contracts.payments import PaymentFailed, PaymentSucceeded
from eventshop.platform.bus import ContractViolationError, Delivery, UnitOfWork
from eventshop.platform.eventstore import RecordedEvent
from eventshop.platform.eventstore.snapshots import SnapshotPolicy
from eventshop.platform.http import ApiError, Identity, not_found
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.tracing import current_traceparent
from eventshop.services.orders import domain, metrics, store

if TYPE_CHECKING:
    from eventshop.services.orders.service import Context

log = get_logger(__name__)

#: the events that move an order (each names it by `order_id`)
ORDER_STEPS = (InventoryReserved, InventoryRejected, PaymentSucceeded, PaymentFailed)

#: payments' failure reasons in the order's terms (a provider that never answered is, for the
#: customer, a payment that did not go through)
FAILURE_REASONS: dict[str, domain.PaymentFailureReason] = {
    "declined": "payment_declined",
    "fraud": "fraud",
    "provider_error": "payment_declined",
}


def snapshots_of(ctx: Context) -> SnapshotPolicy:
    return SnapshotPolicy(ctx.settings.snapshot_every)


# -- the saga's steps, from events ------------------------------------------------------------
async def lock_window(conn: asyncpg.Connection, payloads: Sequence[EventPayload]) -> None:
    """The price rows and the orders a window's handlers will lock, locked first in one order
    (ADR 0012): two replicas' windows over the same prices or the same orders in opposite
    orders would otherwise wait for each other in a cycle."""
    await store.lock_window(
        conn,
        [p.sku for p in payloads if isinstance(p, ProductCreated | ProductUpdated)],
        [p.order_id for p in payloads if isinstance(p, ORDER_STEPS)],
    )


async def keep_price(
    ctx: Context, uow: UnitOfWork, env: Envelope, event: ProductCreated | ProductUpdated
) -> None:
    price = domain.Price(
        sku=event.sku,
        name=event.name,
        price_minor=event.price_minor,
        currency=event.currency,
        active=event.active,
    )
    await store.keep_price(uow.conn, price, as_of=env.occurred_at)


def saga_fact(event: EventPayload) -> domain.SagaEvent:
    """An integration event that moves an order, in the saga's own terms."""
    match event:
        case InventoryReserved():
            return domain.StockReserved()
        case InventoryRejected(reason=reason, skus=skus):
            return domain.StockRejected(reason=reason, skus=skus)
        case PaymentSucceeded(payment_id=payment_id, amount_minor=amount, currency=currency):
            return domain.PaymentSucceeded(
                payment_id=payment_id, amount_minor=amount, currency=currency
            )
        case PaymentFailed(payment_id=payment_id, reason=reason, detail=detail):
            return domain.PaymentFailed(
                payment_id=payment_id, reason=FAILURE_REASONS[reason], detail=detail
            )
    raise TypeError(f"not a step of the order saga: {type(event).__name__}")


async def advance_orders(ctx: Context, deliveries: Sequence[Delivery]) -> None:
    """The saga's steps of a window's events (stock reserved or rejected, payment succeeded or
    failed), all at once: the orders locked, loaded, decided one event after the other, and
    recorded with one UPDATE and one append (ADR 0016)."""
    await advance_all(
        [(uow, event.order_id, saga_fact(event)) for uow, _, event in deliveries],
        snapshots=snapshots_of(ctx),
    )


async def advance(
    uow: UnitOfWork,
    order_id: str,
    event: domain.SagaEvent,
    *,
    snapshots: SnapshotPolicy = store.NO_SNAPSHOTS,
) -> domain.Decision | None:
    """One saga step for one order, in `uow`'s transaction; None if there is no such order."""
    [decision] = await advance_all([(uow, order_id, event)], snapshots=snapshots)
    return decision


async def advance_all(
    steps: Sequence[tuple[UnitOfWork, str, domain.SagaEvent]],
    *,
    snapshots: SnapshotPolicy = store.NO_SNAPSHOTS,
) -> list[domain.Decision | None]:
    """Saga steps, in one transaction (every unit of work's connection is the same), in the
    order given: each order is locked and loaded once, each step decided on the state the one
    before it left; a decision per step, None where there is no such order."""
    if not steps:
        return []
    conn = steps[0][0].conn
    known = await store.lock_orders(conn, [order_id for _, order_id, _ in steps])
    orders = await store.load_orders(conn, sorted(known), snapshots)
    decisions: list[domain.Decision | None] = []
    decided: list[store.Step] = []
    for uow, order_id, event in steps:
        if order_id not in known:
            # every order's row is committed with its order.created, so this is not a race:
            # the event is about an order of another deployment (or a wiped one). Nothing to do.
            log.warning("orders.unknown_order", order_id=order_id, fact=event.type_name())
            decisions.append(None)
            continue
        order = orders[order_id]
        if order is None:
            raise domain.UnknownOrderStreamError(f"order {order_id} has a read model but no stream")
        try:
            decision = domain.decide(order, event)
        except domain.ForeignPaymentError as exc:  # parked at once, the order left as it is
            log.warning("orders.foreign_payment", order_id=order_id, error=str(exc))
            raise ContractViolationError(str(exc)) from exc
        decisions.append(decision)
        if not decision.record:
            log.info(
                "orders.nothing_to_do",
                order_id=order_id,
                status=order.status.value,
                fact=event.type_name(),
            )
            continue
        decided.append(store.Step(order, decision, uow.correlation_id or None, uow.causation_id))
        orders[order_id] = decision.state
        for outgoing in decision.emit:
            uow.emit(outgoing, aggregate_id=order_id)
        if (count_outcome := metrics.saga_finished(order, decision.state)) is not None:
            uow.after_commit(count_outcome)
        # every order's every step: debug, not info. At info it was a line per step per order
        # written to the process's output (3.6% of orders' CPU), for what the stream, the trace
        # and `eventshop saga` already show; the outcomes are counted (metrics.py)
        log.debug(
            "orders.advanced",
            order_id=order_id,
            fact=event.type_name(),
            status_from=order.status.value,
            status_to=decision.state.status.value,
        )
    await store.record_decisions(conn, decided, snapshots)
    return decisions


# -- commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """One POST /orders, as it waits for its group (its request's ids travel with it)."""

    who: Identity
    wanted: tuple[Line, ...]
    payment_token: str
    idempotency_key: str | None
    fingerprint: str
    correlation_id: str
    traceparent: str | None

    @property
    def key(self) -> tuple[str, str] | None:
        """(user id, Idempotency-Key), when the request sent one: keys are per user."""
        return None if self.idempotency_key is None else (self.who.user_id, self.idempotency_key)


Placed = tuple[str, str]


async def place_order(
    ctx: Context,
    who: Identity,
    wanted: Sequence[Line],
    *,
    payment_token: str,
    idempotency_key: str | None,
    fingerprint: str,
    correlation_id: str,
) -> Placed:
    """Price the lines from the local price list and, in one transaction, start the order's
    stream, write its read model, put order.created in the outbox and record the
    Idempotency-Key (the same key and request again: the same order, as it is now). The
    order's id and status.

    The transaction is shared with the other orders placed at the same moment
    (`place_orders`): under load, one transaction for a group of them (ADR 0019)."""
    placement = Placement(
        who,
        tuple(wanted),
        payment_token,
        idempotency_key,
        fingerprint,
        correlation_id,
        current_traceparent(),
    )
    return await ctx.resources.placing.submit(placement, functools.partial(place_orders, ctx))


async def place_orders(ctx: Context, placements: Sequence[Placement]) -> list[Placed | Exception]:
    """Place a group of orders, each answered as if it had been placed alone.

    A key already in the group is a retry of its first request: it is placed after the group,
    and finds that request's order. If the group's transaction fails, each of its orders is
    placed again alone, so that only the one at fault fails."""
    results: list[Placed | Exception | None] = [None] * len(placements)
    first: list[int] = []
    again: list[int] = []
    keys: set[tuple[str, str]] = set()
    for i, p in enumerate(placements):
        if p.key is not None and p.key in keys:
            again.append(i)
            continue
        if p.key is not None:
            keys.add(p.key)
        first.append(i)
    try:
        placed = await _place_group(ctx, [placements[i] for i in first])
        for i, result in zip(first, placed, strict=True):
            results[i] = result
    except Exception as exc:
        if len(first) == 1:  # alone: its own failure
            results[first[0]] = exc
        else:
            log.warning("orders.group_failed", orders=len(first), exc_info=True)
            again = sorted(first + again)
    for i in again:
        try:
            results[i] = (await _place_group(ctx, [placements[i]]))[0]
        except Exception as exc:  # this order's own failure
            results[i] = exc
    return [r if r is not None else RuntimeError("not placed") for r in results]


async def _place_group(ctx: Context, group: Sequence[Placement]) -> list[Placed | Exception]:
    """Every order of `group` (no key twice) in one transaction: priced, decided, its key
    claimed, then all the new streams, read-model rows and outbox rows written at once."""
    answers: list[Placed | Exception | None] = [None] * len(group)
    order_ids = [str(uuid.uuid4()) for _ in group]
    async with ctx.unit_of_work() as uow:
        skus = sorted({line.sku for p in group for line in p.wanted})
        prices, now = await store.prices_and_clock(uow.conn, skus)
        decided: dict[int, domain.Decision] = {}
        for i, p in enumerate(group):
            try:
                decided[i] = domain.place(
                    order_id=order_ids[i],
                    user_id=p.who.user_id,
                    email=p.who.email,
                    wanted=list(p.wanted),
                    prices=prices,
                    payment_token=p.payment_token,
                    now=now,
                    timeout=ctx.settings.timeout,
                )
            except domain.UnknownSkuError as exc:
                answers[i] = ApiError(
                    422, "unknown_sku", str(exc), [{"field": "lines", "skus": list(exc.skus)}]
                )
            except domain.OrderRejectedError as exc:
                answers[i] = ApiError(422, "order_rejected", str(exc))
        for i, earlier in (await _claim_keys(uow.conn, group, order_ids, decided)).items():
            decided.pop(i, None)
            answers[i] = earlier
        await store.record_new_orders(
            uow.conn,
            [(decided[i], group[i].correlation_id) for i in sorted(decided)],
            snapshots=snapshots_of(ctx),
        )
        for i in sorted(decided):
            acting = uow.acting_for(group[i].correlation_id, group[i].traceparent)
            for outgoing in decided[i].emit:
                acting.emit(outgoing, aggregate_id=order_ids[i])
            answers[i] = (order_ids[i], decided[i].state.status.value)
    return [a if a is not None else RuntimeError("not decided") for a in answers]


async def _claim_keys(
    conn: asyncpg.Connection,
    group: Sequence[Placement],
    order_ids: Sequence[str],
    decided: Mapping[int, domain.Decision],
) -> dict[int, Placed | Exception]:
    """The group's keys, claimed for the orders decided (an order refused keeps its key free);
    by position, the answers of those whose key was used before: that earlier order, as it is
    now, or 422 if it was used with another request (a retry is never refused)."""
    claims = {
        p.key: store.KeyClaim(*p.key, order_ids[i], p.fingerprint, claim=i in decided)
        for i, p in enumerate(group)
        if p.key is not None
    }
    if not claims:
        return {}
    earlier = await store.claim_idempotency_keys(conn, list(claims.values()))
    answers: dict[int, Placed | Exception] = {}
    for i, p in enumerate(group):
        before = earlier.get(p.key) if p.key is not None else None
        if before is None:
            continue
        if before.request_hash != p.fingerprint:
            answers[i] = ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request",
            )
        else:
            answers[i] = (before.order_id, before.status or domain.Status.PENDING.value)
    return answers


async def time_out_due_orders(ctx: Context) -> int:
    """Time out one batch of orders past their deadline (the saga's TimedOut step, in one
    transaction, a savepoint each); how many were cancelled. The rows are taken FOR UPDATE SKIP
    LOCKED, so several orders processes split the work and never wait on an order a consumer
    is advancing (it is looked at again next time; the saga ignores a late timeout)."""
    cancelled = 0
    async with ctx.unit_of_work() as batch:
        # the append lock before the orders' rows: a consumer that holds it (it appended for one
        # order of its window) and waits for an order's row never waits on this scan
        await store.events.take_append_turn(batch.conn)
        due = await store.lock_orders_past_deadline(batch.conn, ctx.settings.timeout_scan_batch)
        for order in due:
            # each order's events carry the correlation id of the request that placed it
            uow = UnitOfWork(
                conn=batch.conn,
                service=ctx.name,
                correlation_id=order.correlation_id,
                pending=batch.pending,
                committed_hooks=batch.committed_hooks,  # run once the batch commits
            )
            emitted = len(batch.pending)
            try:
                async with batch.conn.transaction():  # a savepoint: one bad order stays alone
                    decision = await advance(
                        uow,
                        order.order_id,
                        domain.TimedOut(at=order.checked_at),
                        snapshots=snapshots_of(ctx),
                    )
            except Exception:
                del batch.pending[emitted:]
                log.exception("orders.timeout_failed", order_id=order.order_id)
                continue
            if decision is not None and decision.record:
                cancelled += 1
    if cancelled:
        log.info("orders.timed_out", count=cancelled)
    return cancelled


# -- queries ----------------------------------------------------------------------------------
def _may_see(who: Identity, owner: str) -> bool:
    return who.is_admin or who.user_id == owner


async def orders_of(ctx: Context, who: Identity, limit: int) -> list[asyncpg.Record]:
    async with ctx.pool.acquire() as conn:
        return await store.orders_of(conn, who.user_id, limit)


async def order_of(ctx: Context, who: Identity, order_id: str) -> asyncpg.Record:
    """The caller's order (any order, for an admin); 404 otherwise."""
    async with ctx.pool.acquire() as conn:
        row = await store.get_order(conn, order_id)
    if row is None or not _may_see(who, row["user_id"]):
        raise not_found("order")
    return row


async def order_as_of(
    ctx: Context,
    who: Identity,
    order_id: str,
    *,
    version: int | None,
    at: datetime | None,
) -> domain.Order:
    """Time travel: the order after its `version`-th event, or as it stood at time `at`."""
    async with ctx.pool.acquire() as conn:
        owner = await store.owner_of(conn, order_id)
        if owner is None or not _may_see(who, owner):
            raise not_found("order")
        order = await store.order_as_of(
            conn, order_id, version=version, at=at, snapshots=snapshots_of(ctx)
        )
    if order is None:
        raise not_found("order at that point")
    return order


@dataclass(frozen=True)
class Step:
    """One event of an order's stream, and the order's status right after it."""

    recorded: RecordedEvent
    status_after: str


async def history_of(ctx: Context, who: Identity, order_id: str) -> list[Step]:
    async with ctx.pool.acquire() as conn:
        owner = await store.owner_of(conn, order_id)
        if owner is None or not _may_see(who, owner):
            raise not_found("order")
        recorded = await store.history_of(conn, order_id)
    steps = domain.timeline(store.to_domain(r) for r in recorded)
    return [Step(r, state.status.value) for r, (_, state) in zip(recorded, steps, strict=True)]
