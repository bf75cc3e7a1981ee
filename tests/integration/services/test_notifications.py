"""notifications against the real PostgreSQL, the real SMTP sink and (once) the real RabbitMQ.

Real: PostgreSQL (a random schema per test, migrated), the SMTP sink on a free port writing to
a temporary directory, reached over TCP by the service's own `SmtpMailer` (the resource of its
context). Handlers run as the bus runs them (`deliver`: the service's own handler table, bound
to its context, each in a transaction of its own); one test runs them through a real consumer
instead. Routes go through httpx's ASGI transport; the bus node in the context is never started
(they only read).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from eventshop.contracts import Envelope, EventPayload, new_envelope, registry
from eventshop.contracts.common import Line
from eventshop.contracts.notifications import NotificationSent
from eventshop.contracts.orders import OrderCancelled, OrderConfirmed
from eventshop.contracts.users import UserRegistered
from eventshop.platform.bus import Subscription
from eventshop.platform.bus.node import BusNode
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.db import create_pool
from eventshop.platform.service import AnyContext
from eventshop.platform.settings import PlatformSettings
from eventshop.services.notifications import domain, handlers, service
from eventshop.services.notifications.adapters import SmtpMailer
from eventshop.services.notifications.service import Resources
from eventshop.services.notifications.settings import NotificationsSettings
from eventshop.tooling.smtp_sink import SmtpSink, StoredMail, stored_messages
from tests.support.services import deliver, deliver_window, service_context

pytestmark = pytest.mark.integration

SERVICE = "notifications"
MIGRATIONS = "eventshop.services.notifications.migrations"
SENDER = "eventshop <no-reply@eventshop.test>"


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(tmp_path / "mail", port=0) as running:
        yield running


@pytest.fixture
async def mailer(sink: SmtpSink) -> AsyncIterator[SmtpMailer]:
    mailer = SmtpMailer(host="127.0.0.1", port=sink.port, sender=SENDER, timeout_s=5)
    yield mailer
    await mailer.close()


@pytest.fixture
async def context(
    schema_pool: tuple[str, asyncpg.Pool], settings: PlatformSettings, mailer: SmtpMailer
) -> AsyncIterator[AnyContext]:
    """The service's context, sending through the mailer of the test's SMTP sink."""
    schema, pool = schema_pool
    async with service_context(
        service.definition, schema, pool, settings, resources=Resources(mailer=mailer)
    ) as ctx:
        yield ctx


def mails(sink: SmtpSink) -> list[StoredMail]:
    return stored_messages(sink.directory.path)


def envelope_of(event: EventPayload, aggregate_id: str) -> Envelope:
    return new_envelope(
        event.event_type, event.schema_version, aggregate_id, event.model_dump(mode="json")
    )


async def outbox(pool: asyncpg.Pool) -> list[tuple[Envelope, NotificationSent]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    decoded = [registry.decode(r["body"]) for r in rows]
    return [(env, payload) for env, payload in decoded if isinstance(payload, NotificationSent)]


async def notification_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM notifications ORDER BY sent_at"))


def registered(user_id: str = "u-1", email: str = "ann@example.com") -> UserRegistered:
    return UserRegistered(user_id=user_id, email=email, name="Ann")


def confirmed(
    order_id: str = "o-1", user_id: str = "u-1", email: str = "ann@example.com"
) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        user_id=user_id,
        email=email,
        total_minor=4_200,
        currency="EUR",
        lines=(Line(sku="SKU-1", quantity=2, unit_price_minor=2_100),),
    )


def cancelled(order_id: str = "o-2", reason: str = "payment_declined") -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        user_id="u-1",
        email="ann@example.com",
        reason=reason,  # type: ignore[arg-type]
        stock_reserved=True,
        lines=(Line(sku="SKU-1", quantity=1),),
    )


class Crash(Exception):
    """The process dying at a chosen point of a transaction."""


# -- handlers ------------------------------------------------------------------------------------
async def test_welcome_is_sent_to_the_new_user(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    await deliver(context, registered("u-1", "ann@example.com"))
    [mail] = mails(sink)
    assert mail.envelope_to == ["ann@example.com"]
    assert mail.subject == "Welcome to eventshop, Ann"
    assert mail.message_id == "<welcome.u-1@eventshop>"
    assert "Hello Ann," in mail.body


async def test_welcome_is_sent_once_when_the_same_user_arrives_under_two_event_ids(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    first = await deliver(context, registered("u-1"))
    second = await deliver(context, registered("u-1"))
    assert first.event_id != second.event_id
    assert len(mails(sink)) == 1
    assert sink.handler.duplicates == 0  # not even sent twice: the claim stopped the second
    assert len(await notification_rows(pool)) == 1
    assert len(await outbox(pool)) == 1


async def test_notification_sent_is_in_the_outbox(pool: asyncpg.Pool, context: AnyContext) -> None:
    cause = await deliver(context, registered("u-9", "zoe@example.com"))
    [(env, sent)] = await outbox(pool)
    [row] = await notification_rows(pool)
    assert sent == NotificationSent(
        notification_id=str(row["notification_id"]),
        kind="welcome",
        recipient="zoe@example.com",
        ref="u-9",
    )
    assert env.aggregate_id == "u-9"
    assert env.causation_id == str(cause.event_id)
    assert env.correlation_id == cause.correlation_id
    assert (row["kind"], row["ref"], row["recipient"]) == ("welcome", "u-9", "zoe@example.com")


async def test_order_confirmed_goes_to_the_orders_email(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    await deliver(context, confirmed("o-1", email="buyer@example.com"))
    [mail] = mails(sink)
    assert mail.envelope_to == ["buyer@example.com"]
    assert mail.subject == "Your order o-1 is confirmed"
    assert "2 x SKU-1 at 21.00 EUR" in mail.body
    assert "Total: 42.00 EUR" in mail.body
    [(_, sent)] = await outbox(pool)
    assert (sent.kind, sent.ref) == ("order_confirmed", "o-1")


async def test_order_cancelled_email_says_the_reason_in_words(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    await deliver(context, cancelled("o-2", reason="payment_declined"))
    [mail] = mails(sink)
    assert mail.subject == "Your order o-2 was cancelled"
    assert "was cancelled because your payment was declined." in mail.body
    [(_, sent)] = await outbox(pool)
    assert (sent.kind, sent.ref) == ("order_cancelled", "o-2")


async def test_a_confirmation_and_a_cancellation_of_one_order_are_two_notifications(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    await deliver(context, confirmed("o-3"))
    await deliver(context, cancelled("o-3"))
    assert sorted(m.message_id for m in mails(sink)) == [
        "<order_cancelled.o-3@eventshop>",
        "<order_confirmed.o-3@eventshop>",
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


async def test_a_failed_send_raises_and_leaves_nothing_behind(
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    pool: asyncpg.Pool,
    sink: SmtpSink,
    context: AnyContext,
) -> None:
    nowhere = SmtpMailer(host="127.0.0.1", port=_closed_port(), sender=SENDER)
    unreachable = service_context(
        service.definition, schema_pool[0], pool, settings, resources=Resources(mailer=nowhere)
    )
    async with unreachable as ctx:
        with pytest.raises(ConnectionRefusedError):
            await deliver(ctx, registered("u-1"))
    assert await notification_rows(pool) == []
    assert await outbox(pool) == []
    # the bus's retry, with the SMTP server back
    await deliver(context, registered("u-1"))
    assert len(mails(sink)) == 1
    assert len(await notification_rows(pool)) == 1


async def test_a_crash_between_the_send_and_the_commit_does_not_deliver_twice(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    event = registered("u-1")
    env = envelope_of(event, aggregate_id="u-1")
    with pytest.raises(Crash):
        async with context.unit_of_work() as uow:
            await handlers.send_notifications(context, [(uow.caused_by(env), env, event)])
            raise Crash  # the mail is out, the transaction never commits
    assert len(mails(sink)) == 1
    assert await notification_rows(pool) == []
    # redelivered: sent again, recognised by its Message-ID, stored once
    await deliver(context, event)
    assert len(mails(sink)) == 1
    assert sink.handler.duplicates == 1
    assert len(await notification_rows(pool)) == 1
    assert len(await outbox(pool)) == 1


async def test_concurrent_deliveries_of_one_fact_send_once(
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    sink: SmtpSink,
    context: AnyContext,
) -> None:
    wide = await create_pool(settings.database_url, schema_pool[0], max_size=6)
    on_wide = service_context(
        service.definition, schema_pool[0], wide, settings, resources=context.resources
    )
    try:
        async with on_wide as ctx:
            await asyncio.gather(*(deliver(ctx, registered("u-1")) for _ in range(6)))
    finally:
        await wide.close()
    assert len(mails(sink)) == 1
    assert sink.handler.duplicates == 0
    assert len(await notification_rows(schema_pool[1])) == 1


async def test_a_windows_mails_are_claimed_in_one_statement_and_each_sent_once(
    pool: asyncpg.Pool, sink: SmtpSink, context: AnyContext
) -> None:
    await deliver(context, registered("u-0", "zed@example.com"))  # sent before this window
    window: list[EventPayload] = [
        registered("u-1"),
        confirmed("o-1"),
        cancelled("o-2"),
        registered("u-1"),  # the same fact again, under another event id: one mail
        registered("u-0", "zed@example.com"),  # sent already: no mail
    ]
    ran = await deliver_window(context, window)
    assert sum("INSERT INTO notifications" in q for q in ran) == 1
    assert sorted(m.to for m in mails(sink)) == [
        "ann@example.com", "ann@example.com", "ann@example.com", "zed@example.com",
    ]  # fmt: skip
    assert sink.handler.duplicates == 0
    assert len(await notification_rows(pool)) == 4
    assert sorted(p.kind for _, p in await outbox(pool)) == [
        "order_cancelled", "order_confirmed", "welcome", "welcome",
    ]  # fmt: skip


# -- the SMTP session ----------------------------------------------------------------------------
def welcome_mail(n: int) -> domain.Email:
    return domain.welcome(user_id=f"u-{n}", email=f"user{n}@example.com", name=f"Zoë {n}")


async def test_mails_go_over_one_smtp_session(sink: SmtpSink, mailer: SmtpMailer) -> None:
    for n in range(3):
        await mailer.send(welcome_mail(n))
    await asyncio.gather(*(mailer.send(welcome_mail(n)) for n in range(3, 10)))
    assert sorted(m.message_id for m in mails(sink)) == sorted(
        welcome_mail(n).message_id for n in range(10)
    )
    assert (sink.connections, mailer.sessions_opened) == (1, 1)
    assert sink.handler.duplicates == 0
    [stored] = [m for m in mails(sink) if m.message_id == welcome_mail(7).message_id]
    assert stored.subject == "Welcome to eventshop, Zoë 7"
    assert "Hello Zoë 7," in stored.body


async def test_after_the_sink_restarts_the_next_send_opens_a_new_session(
    sink: SmtpSink, mailer: SmtpMailer
) -> None:
    await mailer.send(welcome_mail(1))
    await sink.stop()  # closes the session the mailer keeps
    async with SmtpSink(sink.directory.path, port=sink.port) as restarted:
        await mailer.send(welcome_mail(2))  # finds its session closed: sends on a new one
        await mailer.send(welcome_mail(3))
        assert restarted.connections == 1
    # down: the send raises (the bus retries it) ...
    with pytest.raises(ConnectionRefusedError):
        await mailer.send(welcome_mail(4))
    # ... and once the sink is back, the retry goes through
    async with SmtpSink(sink.directory.path, port=sink.port) as back:
        await mailer.send(welcome_mail(4))
        assert back.connections == 1
    assert mailer.sessions_opened == 3
    assert sorted(m.message_id for m in mails(sink)) == sorted(
        welcome_mail(n).message_id for n in (1, 2, 3, 4)
    )


async def test_a_session_idle_too_long_is_not_reused(sink: SmtpSink) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=sink.port, sender=SENDER, max_idle_s=0)
    try:
        await mailer.send(welcome_mail(1))
        await mailer.send(welcome_mail(2))
    finally:
        await mailer.close()
    assert (sink.connections, len(mails(sink))) == (2, 2)


async def test_close_ends_the_session_and_a_later_send_opens_another(
    sink: SmtpSink, mailer: SmtpMailer
) -> None:
    await mailer.send(welcome_mail(1))
    await mailer.close()
    await mailer.close()  # twice is harmless
    await mailer.send(welcome_mail(2))
    assert (sink.connections, len(mails(sink))) == (2, 2)


async def test_the_service_closes_its_mailer_when_it_stops(
    schema_pool: tuple[str, asyncpg.Pool], sink: SmtpSink, settings: PlatformSettings
) -> None:
    assert service.definition.resources is service.open_resources
    own = NotificationsSettings(smtp_host="127.0.0.1", smtp_port=sink.port, sender=SENDER)
    schema, pool = schema_pool
    # opened as the runtime opens it: its own mailer, made from its settings
    async with service_context(
        service.definition, schema, pool, settings, service_settings=own
    ) as ctx:
        mailer = ctx.resources.mailer
        assert isinstance(mailer, SmtpMailer)
        await mailer.send(welcome_mail(1))
    await mailer.send(welcome_mail(2))  # the stop ended the session: a new one
    try:
        assert sink.connections == 2
    finally:
        await mailer.close()


# -- through the real bus ------------------------------------------------------------------------
async def test_the_service_sends_mail_for_events_from_the_broker(
    schema_pool: tuple[str, asyncpg.Pool],
    settings: PlatformSettings,
    sink: SmtpSink,
    context: AnyContext,
) -> None:
    schema, pool = schema_pool
    name = f"notifications_{uuid.uuid4().hex[:8]}"
    bound = service.definition.bind(context)  # the service's handlers, as the runtime binds them
    subscription = Subscription(name, bound, tuple(settings.retry_delays_ms))
    node = BusNode(
        service=name,
        schema=schema,
        pool=pool,
        registry=registry,
        settings=settings,
        subscription=subscription,
    )
    await node.start()
    try:
        assert node.publisher is not None
        user_id = f"u-{uuid.uuid4().hex[:8]}"
        env = envelope_of(registered(user_id, "bus@example.com"), aggregate_id=user_id)
        await node.publisher.publish(env.event_type, message_from_envelope(env))
        deadline = time.monotonic() + 10
        while not mails(sink):
            assert time.monotonic() < deadline, "no mail after 10 s"
            await asyncio.sleep(0.02)
        [mail] = mails(sink)
        assert mail.message_id == f"<welcome.{user_id}@eventshop>"
        assert mail.envelope_to == ["bus@example.com"]
    finally:
        await node.stop()
        await _delete_queues(settings, subscription)


async def _delete_queues(settings: PlatformSettings, subscription: Subscription) -> None:
    queues = subscription.queues
    names = [
        queues.main,
        queues.parked,
        *(queues.retry(i + 1) for i in range(len(queues.retry_delays_ms))),
    ]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for queue in names:
            await channel.queue_delete(queue)
    finally:
        await connection.close()


# -- routes --------------------------------------------------------------------------------------
def as_user(user_id: str, email: str) -> dict[str, str]:
    return {"X-User-Id": user_id, "X-User-Role": "customer", "X-User-Email": email}


async def test_get_notifications_shows_only_the_callers_newest_first(
    pool: asyncpg.Pool, context: AnyContext, client: httpx.AsyncClient
) -> None:
    await deliver(context, registered("u-ann", "ann@example.com"))
    await deliver(context, confirmed("o-ann", "u-ann", "ann@example.com"))
    await deliver(context, registered("u-bob", "bob@example.com"))
    await deliver(context, confirmed("o-bob", "u-bob", "bob@example.com"))

    r = await client.get("/notifications", headers=as_user("u-ann", "ANN@example.com"))
    assert r.status_code == 200, r.text
    got = r.json()["notifications"]
    assert [(n["kind"], n["ref"]) for n in got] == [
        ("order_confirmed", "o-ann"),
        ("welcome", "u-ann"),
    ]
    assert {n["recipient"] for n in got} == {"ann@example.com"}

    r = await client.get(
        "/notifications", params={"limit": 1}, headers=as_user("u-bob", "bob@example.com")
    )
    assert [(n["kind"], n["ref"]) for n in r.json()["notifications"]] == [
        ("order_confirmed", "o-bob")
    ]

    r = await client.get("/notifications", headers=as_user("u-nobody", "nobody@example.com"))
    assert r.json() == {"notifications": []}


async def test_get_notifications_needs_a_caller(client: httpx.AsyncClient) -> None:
    r = await client.get("/notifications")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


async def test_get_notifications_rejects_a_bad_limit(client: httpx.AsyncClient) -> None:
    r = await client.get("/notifications", params={"limit": 0}, headers=as_user("u", "u@x.io"))
    assert r.status_code == 422
