"""orders against the real PostgreSQL: its routes, its saga handlers and its timeout scanner.

Real: PostgreSQL (a random schema per test, migrated). Routes go through httpx's ASGI
transport with the identity headers the gateway sets; handlers are called directly with
envelopes built by new_envelope, each in its own UnitOfWork, as the bus would; the timeout
scanner's pass is run directly. The bus node in the ServiceContext is never started (the
service only writes its outbox, which the tests read).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.contracts.catalog import ProductCreated, ProductUpdated
from eventshop.contracts.common import Line
from eventshop.contracts.inventory import InventoryRejected, InventoryReserved
from eventshop.contracts.payments import PaymentFailed, PaymentSucceeded
from eventshop.platform import eventstore
from eventshop.platform.bus import UnitOfWork
from eventshop.platform.bus.node import BusNode
from eventshop.platform.db import create_pool
from eventshop.platform.grouping import GroupCommit
from eventshop.platform.service import ServiceContext, build_app
from eventshop.platform.settings import PlatformSettings
from eventshop.services.orders import handlers, jobs
from eventshop.services.orders.domain import payment_id_for
from eventshop.services.orders.service import Context, Resources, definition
from eventshop.services.orders.settings import OrdersSettings
from tests.support.identity import ProvenIdentity

pytestmark = pytest.mark.integration

SERVICE = "orders"
MIGRATIONS = [eventstore.MIGRATIONS, "eventshop.services.orders.migrations"]


def orders_context(pool: asyncpg.Pool, settings: OrdersSettings | None = None) -> Context:
    """orders' context on `pool` (its settings, by default the defaults; its bus node is never
    started: handlers and routes only write the outbox)."""
    platform = PlatformSettings()
    bus = BusNode(
        service="orders", schema="orders", pool=pool, registry=registry, settings=platform
    )
    settings = settings or OrdersSettings()
    return ServiceContext(
        name="orders",
        platform=platform,
        settings=settings,
        resources=Resources(placing=GroupCommit(max_group=settings.place_group_max)),
        pool=pool,
        bus=bus,
    )


async def time_out_due_orders(pool: asyncpg.Pool, settings: OrdersSettings | None = None) -> int:
    """One pass of the timeout job."""
    return await handlers.time_out_due_orders(orders_context(pool, settings))


def customer(user_id: str | None = None) -> dict[str, str]:
    user_id = user_id or f"user-{uuid.uuid4().hex[:8]}"
    return {
        "X-User-Id": user_id,
        "X-User-Role": "customer",
        "X-User-Email": f"{user_id}@example.com",
    }


ADMIN = {"X-User-Id": "admin-1", "X-User-Role": "admin", "X-User-Email": "admin@example.com"}


# -- fixtures and helpers ------------------------------------------------------------------------
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> AsyncIterator[ClientFactory]:
    """An HTTP client on orders' app; `timeout_s` sets the orders' timeout, `place_group_max`
    the largest group of orders placed together, `pool` another pool."""
    _, default_pool = schema_pool
    clients: list[httpx.AsyncClient] = []

    async def make(
        *, timeout_s: float = 30.0, pool: asyncpg.Pool | None = None, place_group_max: int = 32
    ) -> httpx.AsyncClient:
        pool = pool or default_pool
        settings = OrdersSettings(timeout_s=timeout_s, place_group_max=place_group_max)
        ctx = orders_context(pool, settings)
        app = build_app(definition, ctx)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://orders",
            auth=ProvenIdentity(app.state.identity_key),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory, pool: asyncpg.Pool) -> httpx.AsyncClient:
    await seed_prices(pool)
    return await make_client()


async def deliver(
    pool: asyncpg.Pool,
    event: EventPayload,
    *,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """Run the event's handler in its own unit of work, as the bus would (a fresh event id)."""
    aggregate = str(getattr(event, "order_id", None) or getattr(event, "sku", "x"))
    env = new_envelope(
        event.event_type,
        event.schema_version,
        aggregate,
        event.model_dump(mode="json"),
        occurred_at=occurred_at,
        correlation_id=correlation_id,
    )
    async with UnitOfWork.begin(pool, service="orders") as uow:
        handler = definition.bind(orders_context(pool))[event.event_type]
        await handler(uow.caused_by(env), env, event)
    return env


async def seed_prices(pool: asyncpg.Pool) -> None:
    for sku, price, currency in [("MUG", 1_250, "EUR"), ("TEE", 2_000, "EUR"), ("CAP", 900, "USD")]:
        await deliver(
            pool, ProductCreated(sku=sku, name=sku.title(), price_minor=price, currency=currency)
        )
    await deliver(
        pool, ProductCreated(sku="OLD", name="Old", price_minor=1, currency="EUR", active=False)
    )


async def outbox(pool: asyncpg.Pool, order_id: str | None = None) -> list[Envelope]:
    """Every event in the outbox (of one order), in order."""
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    envelopes = [registry.decode(r["body"])[0] for r in rows]
    return [e for e in envelopes if order_id is None or e.payload.get("order_id") == order_id]


def types(envelopes: list[Envelope]) -> list[str]:
    return [e.event_type for e in envelopes]


async def place(
    client: httpx.AsyncClient,
    who: dict[str, str],
    lines: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> str:
    body = {
        "lines": lines or [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}],
        **extra,
    }
    response = await client.post("/orders", json=body, headers=who)
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def read_model(pool: asyncpg.Pool, order_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    assert row is not None
    return row


async def stream_types(pool: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version", f"order-{order_id}"
    )
    return [r["event_type"] for r in rows]


def reserved(order_id: str) -> InventoryReserved:
    return InventoryReserved(order_id=order_id, lines=(Line(sku="MUG", quantity=2),))


def succeeded(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=payment_id_for(order_id), order_id=order_id, amount_minor=4_500, currency="EUR"
    )


async def paid_in_full(pool: asyncpg.Pool, order_id: str) -> PaymentSucceeded:
    """The payment result payments would send for this order: its payment, its total."""
    row = await read_model(pool, order_id)
    return PaymentSucceeded(
        payment_id=payment_id_for(order_id),
        order_id=order_id,
        amount_minor=row["total_minor"],
        currency=row["currency"],
    )


# -- the composition root -------------------------------------------------------------------------
def test_definition_says_what_orders_takes_and_gives() -> None:
    assert set(definition.consumes) == {
        "product.created",
        "product.updated",
        "inventory.reserved",
        "inventory.rejected",
        "payment.succeeded",
        "payment.failed",
    }
    assert set(definition.publishes_types) == {
        "order.created",
        "payment.requested",
        "order.confirmed",
        "order.cancelled",
    }
    assert list(definition.jobs) == [jobs.time_out_orders, jobs.run_projections]


# -- placing an order -----------------------------------------------------------------------------
async def test_place_order_writes_stream_read_model_and_outbox_in_one_transaction(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    who = customer()
    response = await client.post(
        "/orders",
        json={
            "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}],
            "payment_token": "tok_decline",
        },
        headers={**who, "X-Correlation-ID": "corr-place-1"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    order_id = body["order_id"]
    assert body == {"order_id": order_id, "status": "PENDING"}

    event = await pool.fetchrow(
        "SELECT xmin::text AS tx, version, event_type, payload, metadata FROM events"
        " WHERE stream_id = $1",
        f"order-{order_id}",
    )
    row = await pool.fetchrow(
        "SELECT xmin::text AS tx, * FROM orders WHERE order_id = $1", order_id
    )
    out = await pool.fetch("SELECT xmin::text AS tx, body FROM outbox")
    assert event is not None and row is not None and len(out) == 1
    # one transaction wrote all three
    assert event["tx"] == row["tx"] == out[0]["tx"]

    assert (event["version"], event["event_type"]) == (1, "OrderPlaced")
    assert '"corr-place-1"' in event["metadata"]
    assert (row["status"], row["total_minor"], row["currency"], row["version"]) == (
        "PENDING",
        4_500,
        "EUR",
        1,
    )
    assert row["user_id"] == who["X-User-Id"] and row["email"] == who["X-User-Email"]

    envelope, created = registry.decode(out[0]["body"])
    assert envelope.event_type == "order.created"
    assert envelope.correlation_id == "corr-place-1"
    assert created.model_dump(mode="json") == {
        "order_id": order_id,
        "user_id": who["X-User-Id"],
        "email": who["X-User-Email"],
        "lines": [
            {"sku": "MUG", "quantity": 2, "unit_price_minor": 1_250},
            {"sku": "TEE", "quantity": 1, "unit_price_minor": 2_000},
        ],
        "total_minor": 4_500,
        "currency": "EUR",
    }

    got = await client.get(f"/orders/{order_id}", headers=who)
    assert got.status_code == 200
    view = got.json()
    assert (view["status"], view["total_minor"], view["reason"]) == ("PENDING", 4_500, None)
    assert view["lines"][0] == {"sku": "MUG", "quantity": 2, "unit_price_minor": 1_250}


async def test_the_same_idempotency_key_returns_the_same_order(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    who = customer()
    body = {"lines": [{"sku": "MUG", "quantity": 1}]}
    first = await client.post("/orders", json=body, headers={**who, "Idempotency-Key": "k-1"})
    again = await client.post("/orders", json=body, headers={**who, "Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()

    other_user = await client.post(
        "/orders", json=body, headers={**customer(), "Idempotency-Key": "k-1"}
    )
    other_key = await client.post("/orders", json=body, headers={**who, "Idempotency-Key": "k-2"})
    no_key = await client.post("/orders", json=body, headers=who)
    ids = {r.json()["order_id"] for r in (first, other_user, other_key, no_key)}
    assert len(ids) == 4

    changed = await client.post(
        "/orders",
        json={"lines": [{"sku": "MUG", "quantity": 2}]},
        headers={**who, "Idempotency-Key": "k-1"},
    )
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert await pool.fetchval("SELECT count(*) FROM orders") == 4
    assert types(await outbox(pool)) == ["order.created"] * 4

    empty = await client.post("/orders", json=body, headers={**who, "Idempotency-Key": ""})
    assert empty.status_code == 422
    assert await pool.fetchval("SELECT count(*) FROM orders") == 4


async def test_a_replayed_idempotency_key_answers_the_order_as_it_is_now(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    who = {**customer(), "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    body = {"lines": [{"sku": "MUG", "quantity": 1}]}
    first = await client.post("/orders", json=body, headers=who)
    assert first.json()["status"] == "PENDING"
    order_id = first.json()["order_id"]
    await deliver(pool, reserved(order_id))
    again = await client.post("/orders", json=body, headers=who)
    assert again.status_code == 202
    assert again.json() == {"order_id": order_id, "status": "AWAITING_PAYMENT"}


async def test_twenty_concurrent_identical_requests_make_one_order(
    make_client: ClientFactory,
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
) -> None:
    schema, pool = schema_pool
    await seed_prices(pool)
    wide = await create_pool(settings.database_url, schema, max_size=20)
    try:
        client = await make_client(pool=wide)
        who = {**customer(), "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
        body = {"lines": [{"sku": "TEE", "quantity": 3}]}
        responses = await asyncio.gather(
            *(client.post("/orders", json=body, headers=who) for _ in range(20))
        )
    finally:
        await wide.close()
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert await pool.fetchval("SELECT count(*) FROM orders") == 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
    assert types(await outbox(pool)) == ["order.created"]


async def _place_together(
    client: httpx.AsyncClient, requests: list[tuple[dict[str, str], dict[str, Any]]]
) -> list[httpx.Response]:
    """POSTs sent at once, so that those arriving while a group is written make the next."""
    return list(
        await asyncio.gather(
            *(client.post("/orders", json=body, headers=headers) for headers, body in requests)
        )
    )


async def test_orders_placed_at_once_share_transactions_each_answered_as_if_alone(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    mug = {"lines": [{"sku": "MUG", "quantity": 1}]}
    known = {**customer(), "Idempotency-Key": "known"}
    earlier = await client.post("/orders", json=mug, headers=known)
    assert earlier.status_code == 202
    twice = {**customer(), "Idempotency-Key": "twice"}
    plain = [({**customer(), "X-Correlation-ID": f"corr-{i}"}, mug) for i in range(24)]
    odd: list[tuple[dict[str, str], dict[str, Any]]] = [
        (customer(), {"lines": [{"sku": "NOPE", "quantity": 1}]}),  # unknown sku: 422 alone
        (known, mug),  # a retry: the earlier order
        (known, {"lines": [{"sku": "TEE", "quantity": 1}]}),  # the key, another body: 422
        (twice, mug),  # one key twice in one group: one order, answered to both
        (twice, mug),
    ]
    answers = await _place_together(client, plain[:12] + odd + plain[12:])
    plain_answers = answers[:12] + answers[17:]
    unknown, retry, reused, twice_1, twice_2 = answers[12:17]

    assert {a.status_code for a in plain_answers} == {202}
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_sku"
    assert retry.status_code == 202 and retry.json() == earlier.json()
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert twice_1.status_code == twice_2.status_code == 202
    assert twice_1.json() == twice_2.json()

    placed = [a.json()["order_id"] for a in plain_answers] + [twice_1.json()["order_id"]]
    assert len(set(placed)) == 25
    assert await pool.fetchval("SELECT count(*) FROM orders") == 26  # and `earlier`
    # each order's event carries its own request's correlation id, whatever its group
    created = {e.payload["order_id"]: e for e in await outbox(pool)}
    for (headers, _), answer in zip(plain, plain_answers, strict=True):
        assert created[answer.json()["order_id"]].correlation_id == headers["X-Correlation-ID"]
    # ... and they were written in fewer transactions than orders
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM orders WHERE order_id = ANY($1::text[])", placed
    )
    assert transactions < len(placed)
    # every stream, read model and outbox row of an order from one transaction
    mixed = await pool.fetchval(
        "SELECT count(*) FROM orders o JOIN events e ON e.stream_id = 'order-' || o.order_id"
        " WHERE o.xmin::text <> e.xmin::text"
    )
    assert mixed == 0


async def test_a_group_whose_transaction_fails_is_placed_again_one_by_one(
    client: httpx.AsyncClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventshop.services.orders import store

    written = store.record_new_orders
    bad_user = "user-whose-row-fails"

    async def failing_for_one(conn: asyncpg.Connection, placed: Any, **kw: Any) -> None:
        if any(d.state.user_id == bad_user for d, _ in placed):
            raise asyncpg.PostgresError("this order's row cannot be written")
        await written(conn, placed, **kw)

    monkeypatch.setattr(store, "record_new_orders", failing_for_one)
    mug = {"lines": [{"sku": "MUG", "quantity": 1}]}
    requests = [(customer(), mug) for _ in range(10)]
    requests.insert(5, (customer(bad_user), mug))
    # the ASGI transport hands the client the error the server answered 500 for
    answers = await asyncio.gather(
        *(client.post("/orders", json=body, headers=headers) for headers, body in requests),
        return_exceptions=True,
    )
    failed = answers.pop(5)
    assert isinstance(failed, asyncpg.PostgresError), failed
    assert {getattr(a, "status_code", a) for a in answers} == {202}
    assert await pool.fetchval("SELECT count(*) FROM orders") == 10
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", bad_user) == 0


async def test_a_group_of_one_places_each_order_in_its_own_transaction(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    await seed_prices(pool)
    client = await make_client(place_group_max=1)
    mug = {"lines": [{"sku": "MUG", "quantity": 1}]}
    answers = await _place_together(client, [(customer(), mug) for _ in range(8)])
    assert {a.status_code for a in answers} == {202}
    assert await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM orders") == 8


@pytest.mark.parametrize(
    ("lines", "code", "named"),
    [
        ([{"sku": "NOPE", "quantity": 1}], "unknown_sku", "NOPE"),
        ([{"sku": "MUG", "quantity": 1}, {"sku": "OLD", "quantity": 1}], "unknown_sku", "OLD"),
        ([{"sku": "MUG", "quantity": 1}, {"sku": "CAP", "quantity": 1}], "order_rejected", "USD"),
        (
            [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}],
            "validation_error",
            "lines",
        ),
        ([{"sku": "MUG", "quantity": 0}], "validation_error", "quantity"),
        ([{"sku": "MUG", "quantity": 101}], "validation_error", "quantity"),
        ([], "validation_error", "lines"),
        ([{"sku": f"S{i}", "quantity": 1} for i in range(51)], "validation_error", "lines"),
        ([{"sku": "MUG", "quantity": 1, "discount": 5}], "validation_error", "discount"),
    ],
)
async def test_refused_orders_are_422_and_leave_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    lines: list[dict[str, Any]],
    code: str,
    named: str,
) -> None:
    response = await client.post("/orders", json={"lines": lines}, headers=customer())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert named in error["message"]
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    assert await outbox(pool) == []


async def test_an_anonymous_caller_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json={"lines": [{"sku": "MUG", "quantity": 1}]})
    assert response.status_code == 401


async def test_a_price_update_applies_but_an_older_one_arriving_late_does_not(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    await deliver(
        pool,
        ProductUpdated(sku="MUG", name="Mug", price_minor=1_500, currency="EUR"),
        occurred_at=now,
    )
    await deliver(
        pool,
        ProductUpdated(sku="MUG", name="Mug", price_minor=1, currency="EUR"),
        occurred_at=now - timedelta(minutes=1),
    )
    order_id = await place(client, customer(), [{"sku": "MUG", "quantity": 2}])
    assert (await read_model(pool, order_id))["total_minor"] == 3_000
    await deliver(
        pool, ProductUpdated(sku="MUG", name="Mug", price_minor=1_500, currency="EUR", active=False)
    )
    response = await client.post(
        "/orders", json={"lines": [{"sku": "MUG", "quantity": 1}]}, headers=customer()
    )
    assert response.status_code == 422


# -- reading orders -------------------------------------------------------------------------------
async def test_another_users_order_is_404_and_an_admin_sees_it(client: httpx.AsyncClient) -> None:
    owner, stranger = customer(), customer()
    order_id = await place(client, owner)
    for path in (f"/orders/{order_id}", f"/orders/{order_id}/history"):
        mine = await client.get(path, headers=owner)
        theirs = await client.get(path, headers=stranger)
        admins = await client.get(path, headers=ADMIN)
        missing = await client.get(path.replace(order_id, str(uuid.uuid4())), headers=owner)
        assert (mine.status_code, theirs.status_code, admins.status_code) == (200, 404, 200)
        assert missing.status_code == 404
        assert theirs.json()["error"]["code"] == "not_found"
        assert theirs.json() == {**theirs.json(), "error": missing.json()["error"]}


async def test_my_orders_newest_first_with_a_limit(client: httpx.AsyncClient) -> None:
    me = customer()
    placed = [await place(client, me) for _ in range(3)]
    await place(client, customer())  # someone else's
    mine = await client.get("/orders", headers=me)
    assert [o["order_id"] for o in mine.json()] == placed[::-1]
    two = await client.get("/orders", params={"limit": 2}, headers=me)
    assert [o["order_id"] for o in two.json()] == placed[::-1][:2]
    assert (await client.get("/orders", params={"limit": 0}, headers=me)).status_code == 422


# -- the saga, driven by its handlers -------------------------------------------------------------
async def test_confirmed_path(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    who = customer()
    order_id = await place(client, who, payment_token="tok_mastercard")
    chain = (await outbox(pool, order_id))[0].correlation_id
    cause = await deliver(pool, reserved(order_id), correlation_id=chain)
    assert (await read_model(pool, order_id))["status"] == "AWAITING_PAYMENT"
    out = await outbox(pool, order_id)
    assert types(out) == ["order.created", "payment.requested"]
    assert out[1].payload == {
        "order_id": order_id,
        "user_id": who["X-User-Id"],
        "email": who["X-User-Email"],
        "amount_minor": 4_500,
        "currency": "EUR",
        "payment_token": "tok_mastercard",
        "payment_id": payment_id_for(order_id),  # the one payment whose result it accepts
    }
    # the chain's correlation id goes on; the cause is the event handled
    assert (out[1].correlation_id, out[1].causation_id) == (chain, str(cause.event_id))

    await deliver(pool, succeeded(order_id))
    row = await read_model(pool, order_id)
    assert (row["status"], row["reason"], row["version"]) == ("CONFIRMED", None, 5)
    out = await outbox(pool, order_id)
    assert types(out) == ["order.created", "payment.requested", "order.confirmed"]
    assert out[2].payload["total_minor"] == 4_500
    assert await stream_types(pool, order_id) == [
        "OrderPlaced",
        "StockReserved",
        "PaymentRequested",
        "PaymentSucceeded",
        "OrderConfirmed",
    ]
    history = (await client.get(f"/orders/{order_id}/history", headers=who)).json()
    assert [h["version"] for h in history] == [1, 2, 3, 4, 5]
    assert history[3]["data"]["payment_id"] == payment_id_for(order_id)
    assert (await client.get(f"/orders/{order_id}", headers=who)).json()["status"] == "CONFIRMED"


@pytest.mark.parametrize("reason", ["out_of_stock", "unknown_sku"])
async def test_rejected_stock_cancels(
    client: httpx.AsyncClient, pool: asyncpg.Pool, reason: str
) -> None:
    order_id = await place(client, customer())
    await deliver(pool, InventoryRejected(order_id=order_id, reason=reason, skus=("MUG",)))  # type: ignore[arg-type]
    row = await read_model(pool, order_id)
    assert (row["status"], row["reason"]) == ("CANCELLED", reason)
    out = await outbox(pool, order_id)
    assert types(out) == ["order.created", "order.cancelled"]
    assert (out[1].payload["reason"], out[1].payload["stock_reserved"]) == (reason, False)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [("declined", "payment_declined"), ("fraud", "fraud"), ("provider_error", "payment_declined")],
)
async def test_failed_payment_cancels_and_releases_stock(
    client: httpx.AsyncClient, pool: asyncpg.Pool, failure: str, reason: str
) -> None:
    order_id = await place(client, customer())
    await deliver(pool, reserved(order_id))
    failed = PaymentFailed(
        payment_id=payment_id_for(order_id),
        order_id=order_id,
        reason=failure,  # type: ignore[arg-type]
    )
    await deliver(pool, failed)
    row = await read_model(pool, order_id)
    assert (row["status"], row["reason"]) == ("CANCELLED", reason)
    out = await outbox(pool, order_id)
    assert types(out) == ["order.created", "payment.requested", "order.cancelled"]
    assert (out[2].payload["reason"], out[2].payload["stock_reserved"]) == (reason, True)


async def test_timeout_from_pending_and_from_awaiting_payment(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    await seed_prices(pool)
    hasty = await make_client(timeout_s=0)
    patient = await make_client(timeout_s=30)
    pending = await place(hasty, customer())
    awaiting = await place(hasty, customer())
    running = await place(patient, customer())
    await deliver(pool, reserved(awaiting))

    assert await time_out_due_orders(pool) == 2
    assert await time_out_due_orders(pool) == 0  # nothing twice

    for order_id, stock_reserved in ((pending, False), (awaiting, True)):
        row = await read_model(pool, order_id)
        assert (row["status"], row["reason"]) == ("CANCELLED", "timeout")
        cancel = (await outbox(pool, order_id))[-1]
        assert cancel.event_type == "order.cancelled"
        assert (cancel.payload["reason"], cancel.payload["stock_reserved"]) == (
            "timeout",
            stock_reserved,
        )
        # a timeout has no cause event, but it stays in the chain of the request that placed it
        placed = (await outbox(pool, order_id))[0]
        assert cancel.correlation_id == placed.correlation_id
        assert (await stream_types(pool, order_id))[-2:] == ["TimedOut", "OrderCancelled"]
    assert (await read_model(pool, running))["status"] == "PENDING"


async def test_two_scanners_at_once_time_each_order_out_once(
    make_client: ClientFactory, schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings
) -> None:
    schema, pool = schema_pool
    await seed_prices(pool)
    hasty = await make_client(timeout_s=0)
    orders = [await place(hasty, customer()) for _ in range(12)]
    wide = await create_pool(settings.database_url, schema, max_size=4)
    try:
        small_batches = OrdersSettings(timeout_scan_batch=5)
        scanners = [orders_context(wide, small_batches) for _ in range(3)]
        counts = await asyncio.gather(*(handlers.time_out_due_orders(c) for c in scanners))
        while sum(counts) < len(orders):
            more = await asyncio.gather(*(handlers.time_out_due_orders(c) for c in scanners))
            assert sum(more) > 0
            counts = [a + b for a, b in zip(counts, more, strict=True)]
    finally:
        await wide.close()
    assert sum(counts) == len(orders)
    cancels = [e for e in await outbox(pool) if e.event_type == "order.cancelled"]
    assert sorted(e.payload["order_id"] for e in cancels) == sorted(orders)


async def test_late_and_duplicate_events_change_nothing(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    await seed_prices(pool)
    client = await make_client(timeout_s=0)
    order_id = await place(client, customer())
    await deliver(pool, reserved(order_id))
    await deliver(pool, reserved(order_id))  # the same fact again, under another event id
    assert types(await outbox(pool, order_id)) == ["order.created", "payment.requested"]

    await time_out_due_orders(pool)
    before = await read_model(pool, order_id)
    outbox_before = await outbox(pool)
    # the payment that was captured as the order timed out: payments refunds it on order.cancelled
    await deliver(pool, succeeded(order_id))
    await deliver(
        pool,
        PaymentFailed(payment_id=payment_id_for(order_id), order_id=order_id, reason="declined"),
    )
    await deliver(pool, reserved(order_id))
    after = await read_model(pool, order_id)
    assert (after["status"], after["reason"], after["version"]) == (
        "CANCELLED",
        "timeout",
        before["version"],
    )
    assert await outbox(pool) == outbox_before


async def test_an_event_about_an_unknown_order_is_ignored(pool: asyncpg.Pool) -> None:
    await deliver(pool, reserved(str(uuid.uuid4())))
    await deliver(pool, succeeded(str(uuid.uuid4())))
    assert await outbox(pool) == []
