"""The services behind the gateway, reached over HTTP only, and relaying their answers.

Each service gets its own `httpx.AsyncClient` (a connection pool to it) with bounded timeouts:
a service that is down or hangs becomes `UpstreamUnavailableError` (503) within seconds, never
a request that waits forever. Requests are not retried: most are not idempotent, and the
client, who holds the Idempotency-Key, is the one to decide.

Connections are kept open and reused (`POOL_LIMITS`): as many are kept alive as may be open, so
a burst does not end in connections closed only to be opened again for the next one.

What goes downstream is built from scratch, never copied from the client: the identity headers
(X-User-*) the gateway vouches for, the correlation id, the trace context (`traceparent`, naming
the gateway's CLIENT span of this call, so the service's spans and the events it emits join the
request's trace), and the few headers a route forwards on purpose. A client cannot pass itself
off as somebody else by sending X-User-Id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Histogram
from starlette.responses import Response

from eventshop.gateway.auth import Principal
from eventshop.gateway.settings import UPSTREAMS, GatewaySettings
from eventshop.platform.http import CORRELATION_HEADER
from eventshop.platform.observability import tracing
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import LATENCY_BUCKETS

log = get_logger(__name__)

UPSTREAM_REQUESTS = Counter(
    "eventshop_gateway_upstream_requests_total",
    "Requests the gateway sent to a service, by its answer (status, or unavailable)",
    ["upstream", "method", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "eventshop_gateway_upstream_request_duration_seconds",
    "Time a service took to answer the gateway",
    ["upstream", "method"],
    buckets=LATENCY_BUCKETS,
)

#: the headers of a service's answer that reach the client (the body's own, and hints for it)
RELAYED_RESPONSE_HEADERS = (
    "content-type", "location", "retry-after", "cache-control", "etag", "last-modified",
)  # fmt: skip


POOL_LIMITS = httpx.Limits(
    max_connections=100,
    max_keepalive_connections=100,
    # under uvicorn's 5 s keep-alive: the gateway drops an idle connection before the service
    # does, never sending a request on one the service is closing at that very moment
    keepalive_expiry=4.0,
)


class UpstreamUnavailableError(Exception):
    """A service could not be reached or did not answer in time."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} is unavailable")
        self.service = service
        self.reason = reason


def identity_headers(who: Principal | None, correlation_id: str) -> dict[str, str]:
    headers = {CORRELATION_HEADER: correlation_id}
    if who is not None:
        headers.update(
            {"X-User-Id": who.user_id, "X-User-Role": who.role, "X-User-Email": who.email}
        )
    return headers


def relay(answer: httpx.Response) -> Response:
    """The service's answer as the gateway's: same status, same body, its content headers."""
    headers = {k: v for k in RELAYED_RESPONSE_HEADERS if (v := answer.headers.get(k)) is not None}
    return Response(content=answer.content, status_code=answer.status_code, headers=headers)


class Upstreams:
    def __init__(self, clients: Mapping[str, httpx.AsyncClient]) -> None:
        self._clients = dict(clients)

    @classmethod
    def over_http(cls, settings: GatewaySettings) -> Upstreams:
        """One client per service at its configured URL (loopback by default)."""
        timeout = httpx.Timeout(
            settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
        )
        return cls(
            {
                name: httpx.AsyncClient(
                    base_url=settings.upstream_url(name), timeout=timeout, limits=POOL_LIMITS
                )
                for name in UPSTREAMS
            }
        )

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        who: Principal | None,
        correlation_id: str,
        json: Any = None,
        query: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request to a service as `who`; its answer, whatever the status."""
        client = self._clients[service]
        sent_headers = identity_headers(who, correlation_id)
        sent_headers.update(headers or {})
        started = time.perf_counter()
        with tracing.tracer().start_as_current_span(
            f"{method} {service}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": service, "url.path": path},
        ) as span:
            if traceparent := tracing.traceparent_of(span):
                sent_headers["traceparent"] = traceparent
            try:
                answer = await client.request(
                    method, path, json=json, params=query or None, headers=sent_headers
                )
            except httpx.TransportError as exc:  # refused, reset, timed out, ...
                UPSTREAM_REQUESTS.labels(service, method, "unavailable").inc()
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                log.warning(
                    "upstream.unavailable", upstream=service, path=path, error=type(exc).__name__,
                    correlation_id=correlation_id,
                )  # fmt: skip
                raise UpstreamUnavailableError(service, type(exc).__name__) from exc
            finally:
                UPSTREAM_SECONDS.labels(service, method).observe(time.perf_counter() - started)
            span.set_attribute("http.response.status_code", answer.status_code)
            UPSTREAM_REQUESTS.labels(service, method, str(answer.status_code)).inc()
            return answer

    async def readiness(self, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """Each service's own /health/ready answer: {service: {"ready": bool, "checks": ...}}."""

        async def probe(name: str, client: httpx.AsyncClient) -> dict[str, Any]:
            try:
                r = await client.get("/health/ready", timeout=timeout_s)
                body = (
                    r.json()
                    if r.headers.get("content-type", "").startswith("application/json")
                    else {}
                )
                return {"ready": r.status_code == 200, "checks": body.get("checks", {})}
            except (httpx.HTTPError, ValueError) as exc:
                return {"ready": False, "error": type(exc).__name__}

        names = list(self._clients)
        answers = await asyncio.gather(*(probe(n, self._clients[n]) for n in names))
        return dict(zip(names, answers, strict=True))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
