"""The gateway's upstream calls carry the request's trace.

The one exception to "no I/O" here: aiohttp has no in-memory transport, so each service is a stub
(an aiohttp web app, up and down in a millisecond) on a loopback port of this process, answering
as the service would.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from eventshop.platform.observability.tracing import parse_traceparent
from eventshop.services.gateway.adapters.upstream import Upstreams, UpstreamUnavailableError

Answer = Callable[[web.Request], Awaitable[web.Response]]


@contextlib.asynccontextmanager
async def upstreams(answers: Mapping[str, Answer]) -> AsyncIterator[Upstreams]:
    """Each service answering every request with its function, on its own loopback port."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, answer in answers.items():
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", answer)
            server = await stack.enter_async_context(TestServer(app, host="127.0.0.1"))
            urls[name] = str(server.make_url(""))
        reached = Upstreams.at(urls, timeout_s=2.0, connect_timeout_s=1.0)
        stack.push_async_callback(reached.aclose)
        yield reached


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_forwarded_request_names_the_gateways_client_span(spans: Any) -> None:
    sent: list[web.Request] = []

    async def answer(request: web.Request) -> web.Response:
        sent.append(request)
        return web.json_response({"order_id": "o1"}, status=202)

    before = (
        REGISTRY.get_sample_value(
            "eventshop_gateway_upstream_requests_total",
            {"upstream": "orders", "method": "POST", "outcome": "202"},
        )
        or 0.0
    )
    async with upstreams({"orders": answer}) as services:
        with trace.get_tracer("t").start_as_current_span("POST /api/v1/orders") as root:
            r = await services.call(
                "orders", "POST", "/orders", who=None, correlation_id="c1", json={}
            )
    assert r.status == 202
    assert r.json() == {"order_id": "o1"}
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


async def test_an_unsampled_request_makes_no_client_span_and_passes_its_trace_on(
    spans: Any,
) -> None:
    sent: list[web.Request] = []

    async def answer(request: web.Request) -> web.Response:
        sent.append(request)
        return web.json_response({}, status=200)

    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x5CE0E9A56015FEC5AADFA328AE398115,
            span_id=0xAB54A98CEB1F0AD2,
            is_remote=False,
            trace_flags=trace.TraceFlags(0),
        )
    )
    async with upstreams({"orders": answer}) as services:
        with trace.use_span(unsampled):
            r = await services.call("orders", "GET", "/orders", who=None, correlation_id="c3")
    assert r.status == 200
    assert [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT] == []
    remote = parse_traceparent(sent[0].headers["traceparent"])
    assert remote is not None
    assert (remote.trace_id, remote.span_id) == (
        0x5CE0E9A56015FEC5AADFA328AE398115,
        0xAB54A98CEB1F0AD2,
    )


async def test_an_unreachable_service_is_an_error_span(spans: Any) -> None:
    services = Upstreams.at(
        {"orders": f"http://127.0.0.1:{closed_port()}"}, timeout_s=2.0, connect_timeout_s=1.0
    )
    try:
        with trace.get_tracer("t").start_as_current_span("GET /api/v1/orders"):
            await services.call("orders", "GET", "/orders", who=None, correlation_id="c2")
    except UpstreamUnavailableError:
        pass
    else:
        raise AssertionError("expected UpstreamUnavailableError")
    finally:
        await services.aclose()
    [client_span] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert client_span.status.status_code is StatusCode.ERROR


async def test_the_platform_readiness_is_each_services_own_answer() -> None:
    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "checks": {"database": True}})

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "not ready", "checks": {"broker": False}}, status=503)

    async with upstreams({"orders": ready, "loyalty": not_ready}) as services:
        assert await services.readiness() == {
            "orders": {"ready": True, "checks": {"database": True}},
            "loyalty": {"ready": False, "checks": {"broker": False}},
        }
