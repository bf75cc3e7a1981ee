"""Every HTTP request of a service (the gateway included): its metrics and its log context.

The request's SERVER span is FastAPI's own (its native OpenTelemetry support, on as soon as a
tracer provider is installed): it continues the caller's `traceparent` (the gateway's upstream
call) or starts a trace (a client's request at the gateway), names itself after the route and
wraps every middleware. The units of work of the route emit their events under it.

This ASGI middleware, outermost of the app's own, adds what FastAPI does not:
- the correlation id is taken from X-Correlation-ID or made here (and put into the request,
  so the conventions of eventshop.platform.http answer with the same one), and set on the
  span, where `eventshop trace <correlation id>` finds it;
- structlog's context holds the correlation id, method and path: every line logged while
  answering carries them, and the trace and span ids (see logging.add_trace_context);
- eventshop_http_requests_total / _request_duration_seconds / _requests_in_progress, labelled
  with the route's template (/orders/{order_id}), never the raw path.

Probes and scrapes (/health/*, /metrics) are not counted, and the sampler drops their spans
(tracing.QUIET_PATHS).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventshop.platform.observability import tracing
from eventshop.platform.observability.metrics import HTTP_IN_PROGRESS, HTTP_REQUESTS, HTTP_SECONDS

CORRELATION_HEADER = b"x-correlation-id"
UNMATCHED_ROUTE = "unmatched"


def route_of(scope: Scope) -> str:
    """The template of the route that answered (FastAPI puts it in the scope), bounded."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        self._in_progress = HTTP_IN_PROGRESS.labels(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or tracing.is_quiet_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        correlation_id: str | None = None
        for key, value in scope["headers"]:
            if key == CORRELATION_HEADER:
                correlation_id = value.decode("latin-1")
        if not correlation_id:
            correlation_id = str(uuid.uuid4())
            scope["headers"] = [*scope["headers"], (CORRELATION_HEADER, correlation_id.encode())]
        method: str = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        span = trace.get_current_span()  # FastAPI's server span, when tracing
        if span.is_recording():
            span.set_attribute(tracing.A_SERVICE, self.service)
            span.set_attribute(tracing.A_CORRELATION_ID, correlation_id)
        self._in_progress.inc()
        with structlog.contextvars.bound_contextvars(
            correlation_id=correlation_id, http_method=method, http_path=scope["path"]
        ):
            try:
                await self.app(scope, receive, send_observed)
            finally:
                elapsed = time.perf_counter() - started
                self._in_progress.dec()
                route = route_of(scope)
                HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
                HTTP_SECONDS.labels(self.service, method, route).observe(elapsed)


#: FastAPI's native telemetry, as the services use it: its SERVER span only. Its metrics and
#: log records go to OpenTelemetry providers the platform never installs (its metrics are
#: Prometheus', above), and its operation spans (dependencies, endpoint, serialisation) are
#: three more spans a request; left on, they cost 58 us of CPU per request at the platform's
#: sampling ratio (a route answering at once: 167 us with them, 108 us without), on the
#: gateway and on the service it calls.
TELEMETRY: dict[str, Any] = {"metrics": False, "logs": False, "operation_spans": False}


def new_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app with the platform's telemetry settings (`TELEMETRY`)."""
    return FastAPI(telemetry=TELEMETRY, **kwargs)  # type: ignore[arg-type]


def install_observability(app: Any, service: str) -> None:
    """Wrap `app` (a FastAPI/Starlette app not yet started) in the middleware, outermost."""
    app.add_middleware(ObservabilityMiddleware, service=service)
