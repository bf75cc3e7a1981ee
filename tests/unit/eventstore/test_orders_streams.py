"""orders' streams on the in-memory event store: upcasting of its domain events, snapshots of
its state, time travel and the fold of its orders_by_user projection. No I/O: InMemoryEventStore
(the port's other adapter, held to the same contract as PostgreSQL's) and pure functions.

(These test orders' event-sourcing pieces; they sit here, beside the store they run on.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventshop.contracts.common import Line
from eventshop.platform.eventstore import (
    InMemoryEventStore,
    NewEvent,
    RecordedEvent,
    SnapshotPolicy,
    load_state,
    snapshot_if_due,
)
from eventshop.services.orders import domain
from eventshop.services.orders.eventlog import CODEC, UPCASTERS
from eventshop.services.orders.projections import fold_orders_by_user
from eventshop.services.orders.store import UnknownDomainEventError, fold, to_domain

PLACED_AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PLACED = domain.OrderPlaced(
    order_id="o-1",
    user_id="u-1",
    email="u-1@example.com",
    lines=(Line(sku="MUG", quantity=2, unit_price_minor=1_250),),
    total_minor=2_500,
    currency="EUR",
    payment_token="tok_visa",
    placed_at=PLACED_AT,
    deadline=PLACED_AT + timedelta(seconds=30),
)
CONFIRMED = (
    PLACED,
    domain.StockReserved(),
    domain.PaymentRequested(amount_minor=2_500, currency="EUR", payment_token="tok_visa"),
    domain.PaymentSucceeded(payment_id="p-1", amount_minor=2_500, currency="EUR"),
    domain.OrderConfirmed(),
)


def new(*events: domain.DomainEvent) -> list[NewEvent]:
    return [NewEvent(e.type_name(), e.model_dump(mode="json"), e.schema_version) for e in events]


def test_every_domain_event_is_read_at_the_version_its_class_declares() -> None:
    for name, kind in domain.DOMAIN_EVENTS.items():
        assert UPCASTERS.current(name) == kind.schema_version, name


async def test_a_stored_v1_payment_succeeded_reads_as_v2() -> None:
    before_v2 = InMemoryEventStore()  # the code that wrote PaymentSucceeded v1
    now = before_v2.with_upcasters(UPCASTERS)
    async with before_v2.transaction() as tx:
        await before_v2.append(tx, "order-o-1", 0, new(*CONFIRMED[:3]))
        await before_v2.append(
            tx,
            "order-o-1",
            3,
            [NewEvent("PaymentSucceeded", {"payment_id": "p-1", "amount_minor": 2_500}, 1)],
        )
    async with now.transaction() as tx:
        *_, paid = await now.load(tx, "order-o-1")
        order = (await load_state(now, tx, "order-o-1", fold)).state
    assert (paid.schema_version, paid.stored_schema_version) == (2, 1)
    assert to_domain(paid) == domain.PaymentSucceeded(
        payment_id="p-1", amount_minor=2_500, currency=None
    )
    assert order is not None and order.payment_id == "p-1"


def test_an_event_this_code_cannot_read_is_an_error() -> None:
    def recorded(event_type: str, version: int) -> RecordedEvent:
        return RecordedEvent(1, "order-o-1", 1, event_type, version, {}, PLACED_AT)

    with pytest.raises(UnknownDomainEventError, match="unknown domain event type 'Nope'"):
        to_domain(recorded("Nope", 1))
    with pytest.raises(UnknownDomainEventError, match="an upcaster is missing"):
        to_domain(recorded("OrderConfirmed", 7))


@pytest.mark.parametrize("length", range(1, len(CONFIRMED) + 1))
def test_the_snapshot_codec_keeps_every_state(length: int) -> None:
    order = domain.replay(CONFIRMED[:length])
    assert order is not None
    assert CODEC.decode(CODEC.encode(order)) == order


async def test_loading_from_a_snapshot_or_from_the_start_and_as_of_any_version() -> None:
    store, sid, policy = InMemoryEventStore(UPCASTERS), "order-o-1", SnapshotPolicy(2)
    version = 0
    for step in ((CONFIRMED[0],), CONFIRMED[1:3], CONFIRMED[3:]):
        async with store.transaction() as tx:
            recorded = await store.append(tx, sid, version, new(*step))
            state = (await load_state(store, tx, sid, fold, CODEC)).state
            assert state is not None
            await snapshot_if_due(
                store, tx, sid, state, before=version, after=recorded[-1].version,
                policy=policy, codec=CODEC,
            )  # fmt: skip
            version = recorded[-1].version
    async with store.transaction() as tx:
        fast = await load_state(store, tx, sid, fold, CODEC)
        slow = await load_state(store, tx, sid, fold)
        assert fast.snapshot_version == 5 and fast.replayed == 0
        assert fast.state == slow.state == domain.replay(CONFIRMED)
        for v in range(len(CONFIRMED) + 1):
            then = await load_state(store, tx, sid, fold, CODEC, to_version=v)
            assert then.state == domain.replay(CONFIRMED[:v])


def test_the_timeline_tells_the_status_after_each_event() -> None:
    steps = domain.timeline(CONFIRMED)
    assert [s.status for _, s in steps] == [
        domain.Status.PENDING,
        domain.Status.PENDING,
        domain.Status.AWAITING_PAYMENT,
        domain.Status.AWAITING_PAYMENT,
        domain.Status.CONFIRMED,
    ]
    assert [e for e, _ in steps] == list(CONFIRMED)


def test_orders_by_user_folds_a_batch_into_new_rows_and_changes_of_earlier_orders() -> None:
    def recorded(stream: str, version: int, event: domain.DomainEvent) -> RecordedEvent:
        at = PLACED_AT + timedelta(seconds=version)
        payload = event.model_dump(mode="json")
        return RecordedEvent(version, stream, version, event.type_name(), 1, payload, at)

    earlier = domain.OrderCancelled(reason="fraud", stock_reserved=True)
    batch = [
        recorded("order-o-1", 1, PLACED),
        recorded("order-o-2", 5, earlier),
        recorded("order-o-1", 3, CONFIRMED[2]),
    ]
    placed, changed = fold_orders_by_user(batch)
    row = placed["o-1"]
    assert (row.status, row.version, row.items, row.user_id) == ("AWAITING_PAYMENT", 3, 2, "u-1")
    assert row.updated_at == PLACED_AT + timedelta(seconds=3)
    assert list(changed) == ["o-2"]
    assert (changed["o-2"].status, changed["o-2"].reason) == ("CANCELLED", "fraud")
