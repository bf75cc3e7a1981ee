"""Observability from the outside, with real processes.

- One order placed over the gateway is one trace: spans of gateway, orders, inventory,
  payments and notifications, joined parent to child in causal order, read back from the span
  files the services write and by `eventshop trace` (the whole platform, as `eventshop up`
  runs it).
- /health/ready of a service process turns false when RabbitMQ or PostgreSQL stops and true
  again when it returns, while /health/live stays true (one test service process; the broker
  is stopped with `rabbitmqctl stop_app`, PostgreSQL with `pg_ctlcluster ... stop`, and both
  are always started again).
- `eventshop dlq replay` of a message parked by a fault, once the fault is fixed, has exactly
  one effect; `eventshop dlq purge` removes only what its filter names (the CLI as a process,
  against a test service process).

What is real: everything; nothing is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from eventshop.cli.trace import load_spans
from eventshop.contracts import Envelope, new_envelope
from eventshop.contracts.selfcheck import Pinged
from eventshop.platform.bus.parking import list_parked
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.observability.tracing import A_CORRELATION_ID
from eventshop.platform.settings import PlatformSettings
from tests.e2e.conftest import (
    PYTHON,
    REPO_ROOT,
    ServiceFactory,
    ServiceProcess,
    rabbitmqctl,
)
from tests.support.polling import eventually
from tests.support.shop import API, Shop

pytestmark = pytest.mark.e2e

TRACES = REPO_ROOT / "var" / "traces"  # where `eventshop up` has the services write spans

#: the hops of a confirmed order, in causal order: (service, span name)
CONFIRMED_CHAIN = [
    ("gateway", "POST /api/v1/orders"),
    ("gateway", "POST orders"),
    ("orders", "POST /orders"),
    ("orders", "publish order.created"),
    ("inventory", "handle order.created"),
    ("inventory", "publish inventory.reserved"),
    ("orders", "handle inventory.reserved"),
    ("orders", "publish payment.requested"),
    ("payments", "handle payment.requested"),
    ("payments", "publish payment.succeeded"),
    ("orders", "handle payment.succeeded"),
    ("orders", "publish order.confirmed"),
    ("notifications", "handle order.confirmed"),
]


# -- one trace per order -------------------------------------------------------------------------


async def test_an_order_is_one_trace_from_the_gateway_to_the_final_notification(
    shop: Shop,
) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        probe = await c.get("http://127.0.0.1:8004/metrics")
    assert probe.status_code == 200, "the running platform predates tracing: restart it"
    sku = await shop.product(stock=3, price_minor=1_500)
    user = await shop.register()
    correlation_id = f"e2e-trace-{uuid.uuid4()}"
    r = await shop.client.post(
        f"{API}/orders",
        json={"lines": [{"sku": sku, "quantity": 1}], "payment_token": "tok_visa"},
        headers={**user.auth, "X-Correlation-ID": correlation_id},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-correlation-id"] == correlation_id
    order_id = str(r.json()["order_id"])
    shop.order_ids.append(order_id)
    assert (await shop.final(user, order_id))["status"] == "CONFIRMED"

    async def spans_now() -> list[dict[str, Any]]:
        return await asyncio.to_thread(load_spans, TRACES, correlation_id)

    def complete(spans: list[dict[str, Any]]) -> bool:
        # every hop is there, and every span's parent too (services export in batches, so a
        # child can reach its file before its parent does)
        names = {(s["service"], s["name"]) for s in spans}
        ids = {s["span_id"] for s in spans}
        return all(hop in names for hop in CONFIRMED_CHAIN) and all(
            s["parent_span_id"] is None or s["parent_span_id"] in ids for s in spans
        )

    spans = await eventually(
        spans_now,
        complete,
        timeout=30,
        interval=0.1,
        what="every hop of the order in the span files",
    )
    trace_ids = {s["trace_id"] for s in spans}
    assert len(trace_ids) == 1, f"one trace, not {len(trace_ids)}"
    assert {"gateway", "orders", "inventory", "payments", "notifications"} <= {
        s["service"] for s in spans
    }
    by_id = {s["span_id"]: s for s in spans}
    for s in spans:  # every span hangs on a span of the same trace, but the root
        assert s["parent_span_id"] is None or s["parent_span_id"] in by_id, s

    # walk up from the final notification: its ancestors are the chain, in order
    [notify] = [s for s in spans if (s["service"], s["name"]) == CONFIRMED_CHAIN[-1]]
    ancestry: list[dict[str, Any]] = []
    node: dict[str, Any] | None = notify
    while node is not None:
        ancestry.append(node)
        node = by_id.get(node["parent_span_id"]) if node["parent_span_id"] else None
    ancestry.reverse()
    hops = [(s["service"], s["name"]) for s in ancestry]
    positions = [hops.index(hop) for hop in CONFIRMED_CHAIN]
    assert positions == sorted(positions), hops
    assert ancestry[0]["name"] == "POST /api/v1/orders" and ancestry[0]["kind"] == "SERVER"
    starts = [s["start_ns"] for s in ancestry]
    assert starts == sorted(starts), "a child starts before its parent"
    # the database work of a hop is in the trace, under that hop
    inventory_handle = next(s for s in ancestry if s["name"] == "handle order.created")
    assert any(
        s["parent_span_id"] == inventory_handle["span_id"] and s["kind"] == "CLIENT" for s in spans
    ), "no database span under inventory's handler"
    handle = next(s for s in spans if s["name"] == "handle payment.requested")
    assert handle["attributes"][A_CORRELATION_ID] == correlation_id

    # and the operator's view of it
    shown = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "eventshop.cli.main", "trace", correlation_id],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"trace {trace_ids.pop()}" in shown.stdout
    for service, name in CONFIRMED_CHAIN:
        assert service in shown.stdout and name in shown.stdout


async def test_the_gateway_reports_the_whole_platform_ready(shop: Shop) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get("http://127.0.0.1:8000/health/ready", params={"scope": "platform"})
    body = r.json()
    assert r.status_code == 200, body
    services = body["platform"]["services"]
    assert set(services) == {
        "gateway", "users", "catalog", "inventory", "orders", "payments", "notifications",
        "loyalty", "archive",
    }  # fmt: skip
    assert all(s["ready"] for s in services.values()), services
    assert services["orders"]["checks"]["consumers"] is True
    assert services["catalog"]["checks"]["cache"] is True


# -- readiness follows the broker and the database ------------------------------------------------


async def health(svc: ServiceProcess, path: str = "/health/ready") -> tuple[int, dict[str, Any]]:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{svc.port}{path}")
            return r.status_code, r.json()
    except httpx.HTTPError as exc:
        return 0, {"error": repr(exc)}


async def metric(svc: ServiceProcess, name: str, **labels: str) -> float | None:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{svc.port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def rabbitmq_started_again() -> Iterator[None]:
    """Whatever the test does to the broker's app, it is running again afterwards."""
    try:
        yield
    finally:
        rabbitmqctl("start_app", timeout=120)
        rabbitmqctl("await_startup", "--timeout", "60", timeout=90)


PG = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]


def pg_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PG, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def postgresql_started_again() -> Iterator[None]:
    """Whatever the test does to PostgreSQL, it is running again afterwards."""
    try:
        yield
    finally:
        pg_ctl("start")
        assert pg_ctl("status").returncode == 0, "PostgreSQL did not start again"


async def test_ready_turns_false_while_rabbitmq_is_stopped_and_true_when_it_returns(
    services: ServiceFactory, rabbitmq_started_again: None
) -> None:
    svc = await services("ready_amqp").started()
    assert (await health(svc))[0] == 200
    stopped = rabbitmqctl("stop_app", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    try:
        _, body = await eventually(
            lambda: health(svc),
            lambda sb: sb[0] == 503,
            timeout=30,
            interval=0.1,
            what="ready to turn false without the broker",
        )
        assert body["checks"]["broker"] is False and body["checks"]["database"] is True
        assert (await health(svc, "/health/live"))[0] == 200  # alive, only not ready
        assert await metric(svc, "eventshop_up", dependency="broker") == 0
    finally:
        started = rabbitmqctl("start_app", timeout=120)
        assert started.returncode == 0, started.stderr
    _, body = await eventually(
        lambda: health(svc),
        lambda sb: sb[0] == 200,
        timeout=90,
        interval=0.1,
        what="ready to turn true again once the broker is back",
    )
    assert body["checks"] == {"database": True, "broker": True, "consumers": True}


async def test_ready_turns_false_while_postgresql_is_stopped_and_true_when_it_returns(
    services: ServiceFactory, postgresql_started_again: None
) -> None:
    svc = await services("ready_pg").started()
    assert (await health(svc))[0] == 200
    stopped = await asyncio.to_thread(pg_ctl, "stop", "-m", "fast")
    assert stopped.returncode == 0, stopped.stderr
    try:
        _, body = await eventually(
            lambda: health(svc),
            lambda sb: sb[0] == 503,
            timeout=30,
            interval=0.1,
            what="ready to turn false without the database",
        )
        assert body["checks"]["database"] is False and body["checks"]["broker"] is True
        assert (await health(svc, "/health/live"))[0] == 200
        assert await metric(svc, "eventshop_up", dependency="database") == 0
    finally:
        started = await asyncio.to_thread(pg_ctl, "start")
        assert started.returncode == 0, started.stderr
    _, body = await eventually(
        lambda: health(svc),
        lambda sb: sb[0] == 200,
        timeout=60,
        interval=0.1,
        what="ready to turn true again once the database is back",
    )
    assert body["checks"] == {"database": True, "broker": True, "consumers": True}


# -- the parking lot, operated with the CLI -------------------------------------------------------


def eventshop(settings: PlatformSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """The `eventshop` command against the test vhost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSHOP_")}
    env.update(
        EVENTSHOP_AMQP_URL=settings.amqp_url,
        EVENTSHOP_RETRY_DELAYS_MS=json.dumps(settings.retry_delays_ms),
        COLUMNS="250",
    )
    return subprocess.run(
        [PYTHON, "-m", "eventshop.cli.main", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ping(seq: int) -> Envelope:
    return new_envelope("selfcheck.pinged", 2, f"ping-{seq}", Pinged(seq=seq).model_dump())


async def parked_ids(settings: PlatformSettings, svc: ServiceProcess) -> set[str]:
    """The event ids in the service's parking lot, read from the broker (they stay parked)."""
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        queues = ServiceQueues(svc.name, (), tuple(settings.retry_delays_ms))
        return {str(p.event_id) for p in await list_parked(conn, queues)}
    finally:
        await conn.close()


async def effects_of(db: asyncpg.Connection, svc: ServiceProcess, event_id: Any) -> int:
    sql = f'SELECT count(*) FROM "{svc.schema}".effects WHERE event_id = $1'
    return int(await db.fetchval(sql, event_id))


async def test_replaying_a_parked_message_after_the_fix_has_one_effect_and_purge_is_selective(
    services: ServiceFactory, settings: PlatformSettings, db: asyncpg.Connection
) -> None:
    svc = await services("dlq").started()
    # the fault: the service's table refuses seq 13 (a bug in a migration, say)
    await db.execute(f'ALTER TABLE "{svc.schema}".effects ADD CONSTRAINT no_13 CHECK (seq <> 13)')
    to_fix, to_purge = ping(13), ping(13)
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        publisher = Publisher(conn, settings.exchange)
        await publisher.start()
        for env in (to_fix, to_purge):
            await publisher.publish(svc.name, message_from_envelope(env), to_queue=True)
        junk = aio_pika.Message(b"not an event", message_id=f"junk-{uuid.uuid4().hex[:8]}")
        await publisher.publish(svc.name, junk, to_queue=True)
        fine = ping(1)
        await publisher.publish(svc.name, message_from_envelope(fine), to_queue=True)
        await publisher.close()
    finally:
        await conn.close()
    all_three = {str(to_fix.event_id), str(to_purge.event_id), str(junk.message_id)}
    await eventually(
        lambda: parked_ids(settings, svc),
        lambda ids: ids == all_three,
        timeout=30,
        interval=0.1,
        what="the two failing pings (after their retries) and the junk in the parking lot",
    )
    assert await effects_of(db, svc, fine.event_id) == 1
    assert await effects_of(db, svc, to_fix.event_id) == 0
    listed = eventshop(settings, "dlq", "list", "--service", svc.name)
    assert listed.returncode == 0, listed.stderr
    assert "3 parked message(s)" in listed.stdout
    assert str(to_fix.event_id) in listed.stdout and "MalformedEventError" in listed.stdout
    as_json = eventshop(settings, "dlq", "list", "--service", svc.name, "--json")
    assert as_json.returncode == 0, as_json.stderr
    listed_json = json.loads(as_json.stdout)
    assert {p["event_id"] for p in listed_json} == all_three
    assert {p["service"] for p in listed_json} == {svc.name}
    junk_json = next(p for p in listed_json if p["event_id"] == str(junk.message_id))
    assert "MalformedEventError" in junk_json["error"] and "body" not in junk_json
    shown = eventshop(settings, "dlq", "show", str(junk.message_id), "-s", svc.name, "--json")
    assert shown.returncode == 0, shown.stderr
    (one,) = json.loads(shown.stdout)
    assert one["body"] == "not an event" and one["attempts"] >= 0

    # purge: only what the filter names
    dry = eventshop(settings, "dlq", "purge", "-s", svc.name, "--event-id", str(to_purge.event_id),
                    "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and "dry run: 1 message(s)" in dry.stderr, dry.stderr
    assert await parked_ids(settings, svc) == all_three
    purged = eventshop(settings, "dlq", "purge", "-s", svc.name, "--event-id",
                       str(to_purge.event_id), "--yes")  # fmt: skip
    assert purged.returncode == 0 and "purged 1 message(s)" in purged.stderr, purged.stderr
    assert await parked_ids(settings, svc) == all_three - {str(to_purge.event_id)}
    purged = eventshop(settings, "dlq", "purge", "-s", svc.name, "--error",
                       "MalformedEventError", "--yes")  # fmt: skip
    assert purged.returncode == 0 and "purged 1 message(s)" in purged.stderr, purged.stderr
    assert await parked_ids(settings, svc) == {str(to_fix.event_id)}

    # fix the cause, then replay: exactly one effect
    await db.execute(f'ALTER TABLE "{svc.schema}".effects DROP CONSTRAINT no_13')
    replayed = eventshop(settings, "dlq", "replay", "-s", svc.name, "--event-id",
                         str(to_fix.event_id), "--yes")  # fmt: skip
    assert replayed.returncode == 0 and "replayed 1 message(s)" in replayed.stderr, replayed.stderr

    async def fixed_effects() -> int:
        return await effects_of(db, svc, to_fix.event_id)

    await eventually(
        fixed_effects, lambda n: n >= 1, timeout=20, interval=0.1, what="the replayed effect"
    )
    assert await parked_ids(settings, svc) == set()
    again = eventshop(settings, "dlq", "replay", "-s", svc.name, "--yes")
    assert again.returncode == 0 and "0 message(s)" in again.stderr, again.stderr
    # a redelivery of the same event (it was parked twice over, say) is absorbed by the inbox
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        publisher = Publisher(conn, settings.exchange)
        await publisher.start()
        await publisher.publish(svc.name, message_from_envelope(to_fix), to_queue=True)
        await publisher.close()
    finally:
        await conn.close()
    await eventually(
        lambda: metric(svc, "eventshop_events_duplicate_total", service=svc.name),
        lambda n: n == 1,
        timeout=10,
        interval=0.1,
        what="the redelivery recognised as a duplicate",
    )
    assert await fixed_effects() == 1

    unknown = eventshop(settings, "dlq", "list", "--service", f"nosuch_{uuid.uuid4().hex[:6]}")
    assert unknown.returncode != 0 and "no parking lot" in unknown.stderr
