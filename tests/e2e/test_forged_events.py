"""No service can pass off another's event: the broker refuses the publish, or the consumer
parks what comes from the wrong publisher. Against the platform as `eventshop up` provisions it
(one broker user per service, passwords of this installation, guest without rights)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import asyncpg
import pytest

from eventshop.contracts import PRODUCERS, new_envelope
from eventshop.contracts.payments import PaymentSucceeded
from eventshop.platform.bus.parking import list_parked, purge_parked
from eventshop.platform.bus.topology import ServiceQueues, direct_exchange_of
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS
from eventshop.services.orders.domain import payment_id_for
from eventshop.tooling import broker, supervise
from tests.support.polling import eventually
from tests.support.shop import Shop

pytestmark = pytest.mark.e2e

USERS = [*BACKENDS, "gateway"]


def _exchanges() -> list[str]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_exchanges", "-p", broker.VHOST, "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return sorted({line.strip() for line in out.splitlines()[1:]})  # "" is the default exchange


def _forged(event_type: str, user_id: str | None = None) -> aio_pika.Message:
    message = message_from_envelope(new_envelope(event_type, 1, "forged", {}))
    message.user_id = user_id
    return message


async def _refused(conn: aio_pika.abc.AbstractConnection, exchange: str, key: str) -> bool:
    """Whether the broker refuses this publish (it closes the channel with ACCESS_REFUSED)."""
    channel = await conn.channel(publisher_confirms=True)
    try:
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(_forged(key), routing_key=key or "x", timeout=10)
    except aiormq.exceptions.ChannelAccessRefused:
        return True
    finally:
        if not channel.is_closed:
            await channel.close()
    return False


async def _parked_reason(service: str, event_id: uuid.UUID) -> str:
    """The error an event was parked with by `service`, waited for; then purged."""
    settings = PlatformSettings()
    queues = ServiceQueues(service, (), tuple(settings.retry_delays_ms))
    conn = await aio_pika.connect(settings.amqp_url)  # the operator's user
    try:

        async def parked_reason() -> str | None:
            for parked in await list_parked(conn, queues, limit=10_000):
                if parked.event_id == str(event_id):
                    return parked.error
            return None

        reason = await eventually(
            parked_reason, lambda r: r is not None, interval=0.3, what=f"{event_id} parked"
        )
        # seen: taken out, so that the parking lot shows operators only what they should see
        await purge_parked(conn, queues, where=lambda p: p.event_id == str(event_id))
    finally:
        await conn.close()
    assert isinstance(reason, str)
    return reason


@pytest.fixture
async def as_user(
    platform: supervise.Layout,
) -> AsyncIterator[dict[str, aio_pika.abc.AbstractConnection]]:
    conns: dict[str, aio_pika.abc.AbstractConnection] = {
        user: await aio_pika.connect(broker.amqp_url(user)) for user in USERS
    }
    try:
        yield conns
    finally:
        for conn in conns.values():
            await conn.close()


async def test_no_service_may_publish_another_services_event_anywhere(
    as_user: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    exchanges = _exchanges()
    assert "" in exchanges and "eventshop.events" in exchanges and "orders.direct" in exchanges
    allowed: list[tuple[str, str, str]] = []
    for user, conn in as_user.items():
        foreign = sorted(t for t, producer in PRODUCERS.items() if producer != user)
        # on the events exchange the topic permission decides by routing key: every type
        for event_type in foreign:
            if not await _refused(conn, "eventshop.events", event_type):
                allowed.append((user, "eventshop.events", event_type))
        # anywhere else the exchange itself is refused (but the service's own direct exchange)
        for exchange in exchanges:
            if exchange in ("eventshop.events", direct_exchange_of(user)):
                continue
            if user == "archive" and exchange == "eventshop.replay":
                continue  # the archive's replays: accepted only as replays (next tests)
            if not await _refused(conn, exchange, foreign[0]):
                allowed.append((user, exchange or "(default)", foreign[0]))
    assert allowed == []


async def test_a_forged_user_id_is_refused_by_the_broker(
    as_user: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    channel = await as_user["loyalty"].channel(publisher_confirms=True)
    exchange = await channel.get_exchange("eventshop.events", ensure=False)
    # its own event type, but claiming to come from payments
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
        await exchange.publish(
            _forged("loyalty.points_awarded", user_id="payments"),
            routing_key="loyalty.points_awarded",
            timeout=10,
        )


def _rights_of(user: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", "list_user_permissions", user],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


async def test_guest_has_no_rights_on_the_platforms_vhost(platform: supervise.Layout) -> None:
    rights = await asyncio.to_thread(_rights_of, "guest")
    assert broker.VHOST not in [line.split("\t")[0] for line in rights.splitlines()]
    # the broker closes the connection while opening the vhost (aiormq: an unexpected frame)
    with pytest.raises(aiormq.exceptions.AMQPError):
        await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{broker.VHOST}")


@pytest.mark.parametrize("sent_as", ["eventshop-operator", "loyalty", "orders"])
async def test_an_event_from_the_wrong_publisher_is_parked_not_handled(
    platform: supervise.Layout, sent_as: str
) -> None:
    """The operator's user may write anywhere and name any user_id (to replay what a service
    parked): what it sends in another's name reaches the consumer, which parks it."""
    settings = PlatformSettings()
    event_id = uuid.uuid4()
    order_id = f"forged-{uuid.uuid4().hex[:8]}"
    forged = PaymentSucceeded(
        payment_id="forged", order_id=order_id, amount_minor=1, currency="EUR"
    )
    env = new_envelope("payment.succeeded", 1, order_id, forged.model_dump(mode="json"))
    env = env.model_copy(update={"event_id": event_id})
    conn = await aio_pika.connect(settings.amqp_url)  # the operator's user (impersonator)
    try:
        channel = await conn.channel(publisher_confirms=True)
        orders_direct = await channel.get_exchange(direct_exchange_of("orders"), ensure=False)
        message = message_from_envelope(env)
        message.user_id = sent_as
        await orders_direct.publish(message, routing_key="orders", timeout=10)

    finally:
        await conn.close()
    reason = await _parked_reason("orders", event_id)
    assert "UnauthorisedProducerError" in reason
    assert repr(sent_as) in reason
    db = await asyncpg.connect(settings.database_url)
    try:
        handled = await db.fetchval(
            "SELECT count(*) FROM orders.inbox WHERE event_id = $1", event_id
        )
    finally:
        await db.close()
    assert handled == 0


@pytest.mark.parametrize(
    "payment_id, amount_minor",
    [("forged-by-loyalty", 1_000), (None, 1)],
    ids=["another payment id", "the order's payment, another amount"],
)
async def test_a_payment_result_for_another_payment_changes_no_order(
    shop: Shop, payment_id: str | None, amount_minor: int
) -> None:
    """Sent with the payments service's own broker user, so every broker check passes: the
    saga itself refuses a result that is not about the payment the order asked for."""
    sku = await shop.product(stock=5, price_minor=1_000)
    user = await shop.register()
    # tok_slow: the provider answers after 14 s, so the order waits for its payment meanwhile
    order_id = await shop.place(user, [(sku, 1)], token="tok_slow")

    async def status() -> str:
        return str((await shop.order(user, order_id))["status"])

    await eventually(status, "AWAITING_PAYMENT", timeout=20, interval=0.1)
    forged = PaymentSucceeded(
        payment_id=payment_id or payment_id_for(order_id),
        order_id=order_id,
        amount_minor=amount_minor,
        currency="EUR",
    )
    env = new_envelope("payment.succeeded", 1, order_id, forged.model_dump(mode="json"))
    conn = await aio_pika.connect(broker.amqp_url("payments"))
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("eventshop.events", ensure=False)
        message = message_from_envelope(env)
        message.user_id = "payments"
        await exchange.publish(message, routing_key="payment.succeeded", timeout=10)
    finally:
        await conn.close()
    reason = await _parked_reason("orders", env.event_id)
    assert "ContractViolationError" in reason and order_id in reason
    assert await status() == "AWAITING_PAYMENT"
    # the real payment still decides: confirmed after the slow provider, or cancelled at the
    # order's deadline; either way, never by the forged result
    final = await shop.final(user, order_id, timeout=40)
    assert final["status"] in ("CONFIRMED", "CANCELLED")
    if final["status"] == "CONFIRMED":
        assert final.get("payment_id") in (None, payment_id_for(order_id))
