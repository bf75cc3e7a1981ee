"""Unit tests of the observability pieces: no I/O, nothing real but the libraries themselves.

Spans go to an in-memory exporter on this process's tracer provider (OpenTelemetry allows one
global provider a process: it is installed once, and each test reads only its own spans).
structlog is configured per test onto a string buffer and reset afterwards.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from eventshop.platform.observability.tracing import RootSampler
from tests.support.logs import captured_logs


def sdk_provider() -> TracerProvider:
    """The process's SDK tracer provider (sampling as the runtime's), installed if none is."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=ParentBased(root=RootSampler(1.0))))
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


_EXPORTER = InMemorySpanExporter()
_INSTALLED = False


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test (the exporter is cleared before it)."""
    global _INSTALLED
    if not _INSTALLED:
        sdk_provider().add_span_processor(SimpleSpanProcessor(_EXPORTER))
        _INSTALLED = True
    _EXPORTER.clear()
    yield _EXPORTER


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """structlog configured as a service would be (JSON), writing to this buffer."""
    with captured_logs("unit-svc") as buffer:
        yield buffer
