"""An HTTP request's span (FastAPI's own), metrics and log context on an in-memory app, and
the counters the consumer and the orders saga feed (no I/O)."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from eventshop.platform.http import install_conventions
from eventshop.platform.observability.http import install_observability, new_app
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import EventMetrics
from eventshop.platform.observability.tracing import (
    A_CORRELATION_ID,
    current_traceparent,
    trace_id_of,
)
from eventshop.services.orders import domain
from eventshop.services.orders.metrics import saga_finished

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def build_app(service: str) -> tuple[FastAPI, list[str | None]]:
    seen: list[str | None] = []
    app = new_app()
    install_conventions(app)

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        seen.append(current_traceparent())
        get_logger("route").info("thing.read", thing_id=thing_id)
        return {"thing_id": thing_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    install_observability(app, service)
    return app, seen


def server_spans(spans: Any) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


async def test_a_request_continues_the_callers_trace_and_is_counted_by_route(
    spans: Any, log_lines: io.StringIO
) -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    app, seen = build_app(service)
    async with client(app) as c:
        r = await c.get("/things/42", headers={"traceparent": TP, "X-Correlation-ID": "corr-42"})
    assert r.status_code == 200 and r.headers["x-correlation-id"] == "corr-42"
    [server] = server_spans(spans)
    assert server.name == "GET /things/{thing_id}"
    assert server.parent is not None and server.parent.span_id == 0x00F067AA0BA902B7
    assert server.attributes is not None and server.attributes[A_CORRELATION_ID] == "corr-42"
    # the request's one span: FastAPI's operation spans are off (TELEMETRY)
    assert spans.get_finished_spans() == (server,)
    assert trace_id_of(seen[0]) == trace_id_of(TP)  # units of work emit under the request
    labels = {"service": service, "method": "GET", "route": "/things/{thing_id}"}
    assert sample("eventshop_http_requests_total", **labels, status="200") == 1
    assert sample("eventshop_http_request_duration_seconds_count", **labels) == 1
    [line] = [json.loads(x) for x in log_lines.getvalue().splitlines()]
    assert line["correlation_id"] == "corr-42"
    assert line["trace_id"] == trace_id_of(TP)
    assert line["http_path"] == "/things/42"


async def test_a_request_without_ids_gets_one_correlation_id_for_logs_and_answer(
    spans: Any, log_lines: io.StringIO
) -> None:
    app, _ = build_app(f"svc_{uuid.uuid4().hex[:6]}")
    async with client(app) as c:
        r = await c.get("/things/7")
    cid = r.headers["x-correlation-id"]
    [line] = [json.loads(x) for x in log_lines.getvalue().splitlines()]
    assert line["correlation_id"] == cid
    [server] = server_spans(spans)
    assert server.parent is None  # a new trace starts here
    assert server.attributes is not None and server.attributes[A_CORRELATION_ID] == cid


async def test_a_failing_request_is_an_error_span_and_a_500(spans: Any) -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    app, _ = build_app(service)
    async with client(app) as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    [server] = server_spans(spans)
    assert server.status.status_code is StatusCode.ERROR
    labels = {"service": service, "method": "GET", "route": "/boom", "status": "500"}
    assert sample("eventshop_http_requests_total", **labels) == 1


async def test_probes_make_no_spans_and_unknown_paths_no_new_labels(spans: Any) -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    app, _ = build_app(service)
    async with client(app) as c:
        assert (await c.get("/health/ready")).status_code == 200
        assert spans.get_finished_spans() == ()
        assert (await c.get("/no/such/path/123")).status_code == 404
    assert sample("eventshop_http_requests_total", service=service, method="GET",
                  route="unmatched", status="404") == 1  # fmt: skip
    assert sample("eventshop_http_requests_total", service=service, method="GET",
                  route="/health/ready", status="200") == 0  # fmt: skip


def test_event_metrics_count_by_type() -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    m = EventMetrics(service)
    m.handled("order.created")
    m.handled("order.created", 2)
    m.failed("order.created")
    m.retried("order.created")
    m.parked("order.created", "handler_failed")
    m.parked(None, "rejected")
    m.duplicates(3)
    m.duplicates(0)
    m.latency("order.created", 0.004)
    typed = {"service": service, "event_type": "order.created"}
    assert sample("eventshop_events_handled_total", **typed) == 3
    assert sample("eventshop_events_failed_total", **typed) == 1
    assert sample("eventshop_events_retried_total", **typed) == 1
    assert sample("eventshop_events_parked_total", **typed, reason="handler_failed") == 1
    assert sample("eventshop_events_parked_total", service=service, event_type="unknown",
                  reason="rejected") == 1  # fmt: skip
    assert sample("eventshop_events_duplicate_total", service=service) == 3
    assert sample("eventshop_handler_duration_seconds_bucket", **typed, le="0.005") == 1


def _order(status: domain.Status, reason: Any = None, *, placed_ago_s: float = 2.0) -> Any:
    now = datetime.now(UTC)
    return domain.Order(
        order_id="o1", user_id="u1", email="u1@example.com", lines=(), total_minor=100,
        currency="EUR", payment_token="tok_visa", placed_at=now - timedelta(seconds=placed_ago_s),
        deadline=now + timedelta(seconds=30), status=status, reason=reason,
    )  # fmt: skip


def test_a_saga_outcome_is_counted_only_on_the_step_into_a_final_state() -> None:
    labels = {"outcome": "cancelled", "reason": "timeout"}
    before = sample("eventshop_saga_outcomes_total", **labels)
    before_n = sample("eventshop_saga_duration_seconds_count", **labels)
    before_sum = sample("eventshop_saga_duration_seconds_sum", **labels)
    running = _order(domain.Status.AWAITING_PAYMENT)
    cancelled = replace(running, status=domain.Status.CANCELLED, reason="timeout")
    assert saga_finished(_order(domain.Status.PENDING), running) is None  # not final yet
    assert saga_finished(cancelled, cancelled) is None  # a late event after the end
    count = saga_finished(running, cancelled)
    assert count is not None
    assert sample("eventshop_saga_outcomes_total", **labels) == before  # not before the commit
    count()
    assert sample("eventshop_saga_outcomes_total", **labels) == before + 1
    assert sample("eventshop_saga_duration_seconds_count", **labels) == before_n + 1
    assert 1.5 < sample("eventshop_saga_duration_seconds_sum", **labels) - before_sum < 60
