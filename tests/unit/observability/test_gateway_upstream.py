"""The gateway's upstream calls carry the request's trace (no network: httpx's MockTransport
answers as the service would)."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from eventshop.gateway.upstream import Upstreams, UpstreamUnavailableError
from eventshop.platform.observability.tracing import parse_traceparent


def upstreams(handler: Any) -> Upstreams:
    return Upstreams(
        {
            "orders": httpx.AsyncClient(
                transport=httpx.MockTransport(handler), base_url="http://orders"
            ),
            "loyalty": httpx.AsyncClient(
                transport=httpx.MockTransport(handler), base_url="http://loyalty"
            ),
        }
    )


async def test_a_forwarded_request_names_the_gateways_client_span(spans: Any) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json={"order_id": "o1"})

    before = (
        REGISTRY.get_sample_value(
            "eventshop_gateway_upstream_requests_total",
            {"upstream": "orders", "method": "POST", "outcome": "202"},
        )
        or 0.0
    )
    with trace.get_tracer("t").start_as_current_span("POST /api/v1/orders") as root:
        r = await upstreams(answer).call(
            "orders", "POST", "/orders", who=None, correlation_id="c1", json={}
        )
    assert r.status_code == 202
    client_span = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert client_span.name == "POST orders"
    assert client_span.parent is not None
    assert client_span.parent.span_id == root.get_span_context().span_id
    remote = parse_traceparent(sent[0].headers["traceparent"])
    assert remote is not None
    assert (remote.trace_id, remote.span_id) == (
        client_span.context.trace_id,
        client_span.context.span_id,
    )
    assert sent[0].headers["x-correlation-id"] == "c1"
    after = REGISTRY.get_sample_value(
        "eventshop_gateway_upstream_requests_total",
        {"upstream": "orders", "method": "POST", "outcome": "202"},
    )
    assert after == before + 1


async def test_an_unreachable_service_is_an_error_span(spans: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    try:
        await upstreams(refuse).call("orders", "GET", "/orders", who=None, correlation_id="c2")
    except UpstreamUnavailableError:
        pass
    else:
        raise AssertionError("expected UpstreamUnavailableError")
    [client_span] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert client_span.status.status_code is StatusCode.ERROR


async def test_the_platform_readiness_is_each_services_own_answer() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "orders":
            return httpx.Response(200, json={"status": "ready", "checks": {"database": True}})
        return httpx.Response(503, json={"status": "not ready", "checks": {"broker": False}})

    assert await upstreams(answer).readiness() == {
        "orders": {"ready": True, "checks": {"database": True}},
        "loyalty": {"ready": False, "checks": {"broker": False}},
    }
