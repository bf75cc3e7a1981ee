"""Traces: OpenTelemetry, one trace from the gateway's HTTP request through every event hop.

How the context travels (W3C `traceparent`, "00-<trace id>-<span id>-<flags>", read and
written by OpenTelemetry's own propagators):

    client --HTTP--> gateway (SERVER span, the root) --HTTP traceparent--> service (SERVER span)
      service: UnitOfWork.begin takes the current span's traceparent; each emitted event
      carries it in its envelope and in its outbox row (column `traceparent`)
      relay: one PRODUCER span "publish <type>" per traced row, child of the row's traceparent;
      the AMQP header `traceparent` names that span
      consumer: one CONSUMER span "handle <type>" per traced event, child of the header's
      span; the events the handler emits carry the handler span's traceparent
      database: every statement run while a span is recording is a CLIENT span of it
      (`sql_spans.TracedConnection`, the pool's connection class)

Events that carry no traceparent (a benchmark's, a test's) get no spans at all: the consumer's
fast path then pays one attribute check per event. Sampling is decided once, at the root
(`EVENTSHOP_TRACE_SAMPLE_RATIO`), and every later hop follows the parent's decision.

Where spans go: to an OTLP/HTTP collector when an endpoint is configured
(`EVENTSHOP_TRACE_OTLP_ENDPOINT`, or the standard `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`),
otherwise as JSON lines to `<EVENTSHOP_TRACE_DIR>/<service>.jsonl` (default ./var/traces),
which `eventshop trace <correlation or trace id>` reads back as a waterfall.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.platform.observability.trace_files import JsonLinesSpanExporter

TRACER_NAME = "eventshop"

#: span attributes every event span carries (what `eventshop trace` looks a correlation id up by)
A_SERVICE = "eventshop.service"
A_EVENT_ID = "eventshop.event_id"
A_EVENT_TYPE = "eventshop.event_type"
A_CORRELATION_ID = "eventshop.correlation_id"
A_CAUSATION_ID = "eventshop.causation_id"


class TracingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_TRACE_", extra="ignore")

    #: record spans at all
    enabled: bool = True
    #: an OTLP/HTTP endpoint (http://host:4318 or its /v1/traces URL); unset: JSON-lines files
    otlp_endpoint: str | None = None
    #: where the JSON-lines files go, one per service; relative to EVENTSHOP_HOME (or the cwd)
    dir: str = "var/traces"
    #: the share of new traces (HTTP requests at the root) that are recorded
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    #: how often finished spans are written out
    export_delay_ms: int = Field(default=500, ge=10)
    #: a JSON-lines file is rotated (to .1) past this size
    max_file_bytes: int = Field(default=50_000_000, ge=10_000)

    def otlp_url(self) -> str | None:
        endpoint = (
            self.otlp_endpoint
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        if not endpoint:
            return None
        if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == endpoint:
            return endpoint  # the standard's signal-specific variable is a full URL
        return (
            endpoint
            if endpoint.rstrip("/").endswith("/v1/traces")
            else (endpoint.rstrip("/") + "/v1/traces")
        )

    def directory(self) -> Path:
        path = Path(self.dir)
        if path.is_absolute():
            return path
        return Path(os.environ.get("EVENTSHOP_HOME") or ".") / path


# -- set-up ----------------------------------------------------------------------------------

#: paths whose requests are never traced: probes (every 0.3 s while the platform starts) and
#: scrapes would bury the traces worth reading
QUIET_PATHS = ("/health/", "/metrics")


def is_quiet_path(path: str) -> bool:
    return path.startswith(QUIET_PATHS[0]) or path == QUIET_PATHS[1]


class RootSampler(Sampler):
    """Where a trace may start: every request but probes and scrapes, at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        path = (attributes or {}).get("url.path")
        if isinstance(path, str) and is_quiet_path(path):
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RootSampler({self._ratio.get_description()})"


def setup_tracing(
    service: str,
    settings: TracingSettings | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Install this process's tracer provider (once, at start); None when tracing is off.

    `exporter` overrides the configured one (tests pass an in-memory exporter).
    """
    settings = settings or TracingSettings()
    if not settings.enabled:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(root=RootSampler(settings.sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter or build_exporter(service, settings),
            max_queue_size=8_192,  # past it spans are dropped (counted), never waited for
            schedule_delay_millis=settings.export_delay_ms,
        )
    )
    trace.set_tracer_provider(provider)
    return provider


def build_exporter(service: str, settings: TracingSettings) -> SpanExporter:
    """OTLP/HTTP when an endpoint is configured, else JSON lines in the service's own file."""
    url = settings.otlp_url()
    if url is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=url)
    return JsonLinesSpanExporter(
        settings.directory() / f"{service}.jsonl", max_bytes=settings.max_file_bytes
    )


def shutdown_tracing() -> None:
    """Write out what is buffered (graceful stop)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        with contextlib.suppress(Exception):
            provider.force_flush(5_000)
            provider.shutdown()


#: a proxy until a provider is installed, then that provider's tracer (`get_tracer` on every
#: span would cost a quarter of its time)
_TRACER = trace.get_tracer(TRACER_NAME)


def tracer() -> trace.Tracer:
    return _TRACER


# -- traceparent <-> context -----------------------------------------------------------------

#: W3C trace context, as OpenTelemetry reads and writes it: the one format of `traceparent` in
#: HTTP headers, events, AMQP headers and outbox rows (HTTP carries W3C baggage too, through the
#: global propagator: see `inject_http`)
_W3C = TraceContextTextMapPropagator()


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span a W3C traceparent names; None when absent or malformed."""
    if not value:
        return None
    ctx = trace.get_current_span(_W3C.extract({"traceparent": value})).get_span_context()
    return ctx if ctx.is_valid else None


def format_traceparent(ctx: SpanContext) -> str:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(NonRecordingSpan(ctx)))
    return carrier["traceparent"]


def inject_http(headers: dict[str, str]) -> None:
    """The current context into an outgoing request's headers by OpenTelemetry's global
    propagator (W3C traceparent and tracestate, and baggage): what the called service's
    FastAPI server span extracts with the same propagator."""
    propagate.inject(headers)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """An OpenTelemetry context whose current span is the remote parent `traceparent` names."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def recorded_parent(traceparent: str | None) -> otel_context.Context | None:
    """`context_of`, but None when the parent was not sampled (its trace flags say so): the
    sampler is parent-based (`configure`), so no child of it is ever recorded, and a span made
    for it would only be dropped. At a 1% ratio that is 99% of the events the bus handles and
    publishes: they then carry their cause's traceparent on, the trace id unchanged."""
    if not traceparent:
        return None
    if len(traceparent) == 55 and traceparent[52] == "-" and traceparent[54] in "02468ace":
        return None  # "00-<trace id>-<span id>-<flags>": the sampled flag is the lowest bit
    return context_of(traceparent)


def current_traceparent() -> str | None:
    """The traceparent of the current span (what an event emitted now should carry)."""
    ctx = trace.get_current_span().get_span_context()
    return format_traceparent(ctx) if ctx.is_valid else None


def traceparent_of(span: trace.Span) -> str | None:
    ctx = span.get_span_context()
    return format_traceparent(ctx) if ctx.is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    parent = parse_traceparent(traceparent)
    return None if parent is None else f"{parent.trace_id:032x}"


# -- spans of the bus ------------------------------------------------------------------------


def event_attributes(
    service: str,
    *,
    event_id: str,
    event_type: str,
    correlation_id: str,
    causation_id: str | None,
) -> dict[str, str]:
    attributes = {
        A_SERVICE: service,
        A_EVENT_ID: event_id,
        A_EVENT_TYPE: event_type,
        A_CORRELATION_ID: correlation_id,
        "messaging.system": "rabbitmq",
        "messaging.message.id": event_id,
    }
    if causation_id:
        attributes[A_CAUSATION_ID] = causation_id
    return attributes


@contextlib.contextmanager
def handling_span(
    service: str,
    *,
    traceparent: str | None,
    event_id: str,
    event_type: str,
    correlation_id: str,
    causation_id: str | None,
) -> Iterator[trace.Span | None]:
    """The CONSUMER span of handling one event, current inside the block; None (and no cost
    beyond a parse) when the event carries no trace context, or one that was not sampled."""
    parent = recorded_parent(traceparent)
    if parent is None:
        yield None
        return
    with tracer().start_as_current_span(
        f"handle {event_type}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=event_attributes(
            service,
            event_id=event_id,
            event_type=event_type,
            correlation_id=correlation_id,
            causation_id=causation_id,
        ),
    ) as span:
        yield span


def start_span(
    name: str,
    *,
    parent_traceparent: str | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | float] | None = None,
) -> trace.Span | None:
    """A span (not made current) child of `parent_traceparent`; None without a parent, or
    with one that was not sampled.

    For spans of many events at once (a relay batch, a batch handler), each ended by the
    caller with `span.end()`."""
    parent = recorded_parent(parent_traceparent)
    if parent is None:
        return None
    return tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
