"""Trace context: traceparent in and out, the spans of an event, the local span files and the
waterfall `eventshop trace` prints from them (in-memory and temporary files only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from typer.testing import CliRunner

from eventshop.cli.main import app as cli
from eventshop.cli.trace import load_spans, waterfall
from eventshop.platform.observability import tracing
from eventshop.platform.observability.sql_spans import statement_name
from eventshop.platform.observability.trace_files import JsonLinesSpanExporter
from eventshop.platform.observability.tracing import (
    A_CORRELATION_ID,
    TracingSettings,
    build_exporter,
    format_traceparent,
    handling_span,
    parse_traceparent,
)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_is_read_and_written_back_the_same() -> None:
    ctx = parse_traceparent(TP)
    assert ctx is not None and ctx.is_remote and ctx.trace_flags.sampled
    assert ctx.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert format_traceparent(ctx) == TP
    assert tracing.trace_id_of(TP) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # the forbidden version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ],
)
def test_a_missing_or_malformed_traceparent_names_no_parent(value: str | None) -> None:
    assert parse_traceparent(value) is None
    assert tracing.context_of(value) is None


def test_an_event_without_trace_context_gets_no_span(spans: Any) -> None:
    with handling_span(
        "svc", traceparent=None, event_id="e", event_type="a.b", correlation_id="c",
        causation_id=None,
    ) as span:  # fmt: skip
        assert span is None
        assert tracing.current_traceparent() is None
    assert spans.get_finished_spans() == ()


def test_handling_an_event_continues_its_trace_and_emits_under_the_handler_span(
    spans: Any,
) -> None:
    with handling_span(
        "inventory", traceparent=TP, event_id="e1", event_type="order.created",
        correlation_id="c1", causation_id="x1",
    ) as span:  # fmt: skip
        assert span is not None
        emitted = tracing.current_traceparent()
    [done] = spans.get_finished_spans()
    assert done.name == "handle order.created" and done.kind is SpanKind.CONSUMER
    assert done.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert done.parent is not None and done.parent.span_id == 0x00F067AA0BA902B7
    assert done.attributes is not None and done.attributes[A_CORRELATION_ID] == "c1"
    assert emitted == format_traceparent(done.context)


def test_an_unsampled_trace_gets_no_span_and_its_traceparent_goes_on(spans: Any) -> None:
    """Under the parent-based sampler no child of an unsampled parent is recorded: no span is
    made for it (99% of events at a 1% ratio). What the event causes carries the cause's own
    traceparent (UnitOfWork.caused_by), so the trace id goes on, still unsampled."""
    unsampled = TP[:-2] + "00"
    with handling_span(
        "svc", traceparent=unsampled, event_id="e", event_type="a.b", correlation_id="c",
        causation_id=None,
    ) as span:  # fmt: skip
        assert span is None
    assert tracing.start_span("publish a.b", parent_traceparent=unsampled) is None
    assert spans.get_finished_spans() == ()
    assert tracing.recorded_parent(unsampled) is None
    assert tracing.recorded_parent(TP) is not None  # sampled: a span is made as before
    assert tracing.recorded_parent(TP[:-2] + "zz") is None  # malformed flags: no parent
    assert tracing.trace_id_of(unsampled) == tracing.trace_id_of(TP)


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT 1", "SELECT"),
        ("INSERT INTO outbox (event_id) SELECT * FROM unnest($1::uuid[])", "INSERT outbox"),
        ("\n  UPDATE stock SET reserved = reserved + $2 WHERE sku = $1", "UPDATE stock"),
        ("SELECT o.id FROM orders o JOIN lines l ON l.order_id = o.id", "SELECT orders"),
        ("DELETE FROM inbox WHERE handled_at < $1", "DELETE inbox"),
    ],
)
def test_a_statement_span_is_named_by_its_operation_and_table(sql: str, name: str) -> None:
    assert statement_name(sql) == name


def test_the_exporter_is_otlp_when_an_endpoint_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    local = build_exporter("orders", TracingSettings(dir=str(tmp_path)))
    assert isinstance(local, JsonLinesSpanExporter) and local.path == tmp_path / "orders.jsonl"

    configured = TracingSettings(otlp_endpoint="http://127.0.0.1:4318")
    assert configured.otlp_url() == "http://127.0.0.1:4318/v1/traces"
    assert isinstance(build_exporter("orders", configured), OTLPSpanExporter)

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    assert TracingSettings().otlp_url() == "http://127.0.0.1:4318/v1/traces"


def test_the_trace_directory_is_relative_to_the_platform_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSHOP_HOME", str(tmp_path))
    assert TracingSettings().directory() == tmp_path / "var" / "traces"
    assert TracingSettings(dir="/abs/traces").directory() == Path("/abs/traces")


# -- span files and the waterfall --------------------------------------------------------------


def _write_trace(directory: Path) -> tuple[str, str]:
    """Three services' spans of one request, each service into its own file, like the platform.

    gateway: POST /orders -> POST orders ; orders: POST /orders -> INSERT outbox ;
    orders: publish order.created ; inventory: handle order.created"""
    tracers = {}
    for service in ("gateway", "orders", "inventory"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(
            SimpleSpanProcessor(JsonLinesSpanExporter(directory / f"{service}.jsonl"))
        )
        tracers[service] = provider.get_tracer("t")
    attrs = {A_CORRELATION_ID: "corr-1"}
    gateway, orders = tracers["gateway"], tracers["orders"]
    with (
        gateway.start_as_current_span("POST /api/v1/orders", attributes=attrs) as root,
        gateway.start_as_current_span("POST orders", kind=SpanKind.CLIENT),
    ):
        tp = tracing.current_traceparent()
        with orders.start_as_current_span(
            "POST /orders", context=tracing.context_of(tp), kind=SpanKind.SERVER
        ):
            with orders.start_as_current_span("INSERT outbox"):
                pass
            row_tp = tracing.current_traceparent()
    with tracers["orders"].start_as_current_span(
        "publish order.created", context=tracing.context_of(row_tp), kind=SpanKind.PRODUCER
    ):
        header_tp = tracing.current_traceparent()
    with tracers["inventory"].start_as_current_span(
        "handle order.created", context=tracing.context_of(header_tp), attributes=attrs
    ):
        pass
    # an unrelated trace in the same files
    with tracers["gateway"].start_as_current_span("GET /api/v1/products"):
        pass
    return f"{root.get_span_context().trace_id:032x}", "corr-1"


EXPECTED = [
    (0, "gateway", "POST /api/v1/orders"),
    (1, "gateway", "POST orders"),
    (2, "orders", "POST /orders"),
    (3, "orders", "INSERT outbox"),
    (3, "orders", "publish order.created"),
    (4, "inventory", "handle order.created"),
]


def test_a_trace_is_found_by_trace_or_correlation_id_and_laid_out_in_causal_order(
    tmp_path: Path,
) -> None:
    trace_id, correlation_id = _write_trace(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.jsonl", "inventory.jsonl", "orders.jsonl"]
    for key in (trace_id, correlation_id):
        rows = waterfall(load_spans(tmp_path, key))
        assert [(r.depth, r.service, r.name) for r in rows] == EXPECTED
        starts = [r.start_ms for r in rows]
        assert starts[0] == 0 and starts == sorted(starts)
    assert load_spans(tmp_path, "no-such-id") == []


def test_eventshop_trace_prints_the_waterfall(tmp_path: Path) -> None:
    trace_id, correlation_id = _write_trace(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(cli, ["trace", correlation_id, "--dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert f"trace {trace_id}: 6 spans" in shown.output
    for _, service, name in EXPECTED:
        assert service in shown.output and name in shown.output

    as_json = runner.invoke(cli, ["trace", trace_id, "--dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)  # one document: a list, a span an object
    assert [(r["depth"], r["service"], r["name"]) for r in rows] == EXPECTED

    missing = runner.invoke(cli, ["trace", "nothing-like-it", "--dir", str(tmp_path)])
    assert missing.exit_code == 1


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    trace_id, _ = _write_trace(tmp_path)
    with (tmp_path / "orders.jsonl").open("a") as f:
        f.write('{"trace_id": "' + trace_id + '", "span_id": "ab')  # a crash mid-line
    assert len(waterfall(load_spans(tmp_path, trace_id))) == len(EXPECTED)


def test_outgoing_http_carries_trace_context_and_baggage_by_opentelemetrys_propagator(
    spans: Any,
) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tracing.tracer().start_as_current_span("call") as span:
            headers: dict[str, str] = {}
            tracing.inject_http(headers)
    finally:
        otel_context.detach(token)
    assert headers["traceparent"] == format_traceparent(span.get_span_context())
    assert headers["baggage"] == "tenant=acme"
