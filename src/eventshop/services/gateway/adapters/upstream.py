"""The services behind the gateway, reached over HTTP only, and relaying their answers.

Each service gets its own `aiohttp.ClientSession` (a connection pool to it) with bounded
timeouts: a service that is down or hangs becomes `UpstreamUnavailableError` (503) within
seconds, never a request that waits forever. Requests are not retried: most are not idempotent,
and the client, who holds the Idempotency-Key, is the one to decide. Redirects are relayed to
the client, not followed.

aiohttp, not httpx: httpcore's pool looks at every pooled connection (a poll syscall each) for
every request, so its cost grew with the requests in flight, to nearly half the gateway's CPU at
64. Connections are kept open and reused, up to `CONNECTIONS_PER_SERVICE` a service, so a burst
does not end in connections closed only to be opened again for the next one. A session is made
on a service's first request, inside the running loop, as aiohttp requires.

What goes downstream is built from scratch, never copied from the client: the identity headers
(X-User-*) the gateway vouches for, the correlation id, the trace context (`traceparent`, naming
the gateway's CLIENT span of this call, so the service's spans and the events it emits join the
request's trace), and the few headers a route forwards on purpose. A client cannot pass itself
off as somebody else by sending X-User-Id. No cookie a service sets is kept, so none can reach
another user's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Histogram
from starlette.responses import Response
from yarl import URL

from eventshop.platform.http import (
    CORRELATION_HEADER,
    PROOF_HEADER,
    PROOF_MAX_AGE_S,
    PROOF_REFUSED,
    sign_identity,
)
from eventshop.platform.observability import tracing
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import LATENCY_BUCKETS
from eventshop.services.gateway.adapters.auth import Principal
from eventshop.services.gateway.settings import GatewaySettings

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

#: connections open to one service at most, every one of them kept alive between requests
CONNECTIONS_PER_SERVICE = 100
#: under uvicorn's 5 s keep-alive: the gateway drops an idle connection before the service
#: does, never sending a request on one the service is closing at that very moment
KEEPALIVE_S = 4.0

#: what a service failed with, when it could not be reached or did not answer in time
#: (refused, reset, timed out, a broken answer, ...)
_UNAVAILABLE = (aiohttp.ClientError, TimeoutError)
#: a pooled connection the service had closed: the request never reached it whole
_STALE = (
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
    aiohttp.ServerDisconnectedError,
)
#: methods a second try cannot make do twice (RFC 9110 9.2.2); a POST is one with an
#: Idempotency-Key, which the gateway gives every order it forwards
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class UpstreamUnavailableError(Exception):
    """A service could not be reached or did not answer in time."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} is unavailable")
        self.service = service
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """A service's answer, read whole."""

    status: int
    #: looked up whatever the case of the name
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def identity_headers(
    who: Principal | None,
    correlation_id: str,
    *,
    key: bytes | None = None,
    method: str = "GET",
    path: str = "/",
) -> dict[str, str]:
    """Who is calling, for the service, and (with the installation's key) the proof that the
    gateway says so: the service believes the identity headers only with it."""
    headers = {CORRELATION_HEADER: correlation_id}
    if who is not None:
        headers.update(
            {"X-User-Id": who.user_id, "X-User-Role": who.role, "X-User-Email": who.email}
        )
    if key is not None:  # anonymous calls too: some routes answer only the gateway
        user_id, role, email = (who.user_id, who.role, who.email) if who else ("", "", "")
        headers[PROOF_HEADER] = sign_identity(
            key, method=method, path=path, user_id=user_id, role=role, email=email
        )
    return headers


def _proof_refused(answer: UpstreamAnswer) -> bool:
    """Whether a service's 401 refuses the gateway's identity proof (not the caller)."""
    try:
        return bool(answer.json()["error"]["code"] == PROOF_REFUSED)
    except (ValueError, KeyError, TypeError):
        return False


def relay(answer: UpstreamAnswer) -> Response:
    """The service's answer as the gateway's: same status, same body, its content headers."""
    headers = {k: v for k in RELAYED_RESPONSE_HEADERS if (v := answer.headers.get(k)) is not None}
    return Response(content=answer.body, status_code=answer.status, headers=headers)


class Upstreams:
    """The services by name, each at its base URL (scheme, host, port, and an optional path)."""

    def __init__(
        self,
        urls: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        identity_key: bytes | None = None,
    ) -> None:
        self._urls = {name: url.rstrip("/") for name, url in urls.items()}
        #: proves the identities forwarded (None: sent unproven, which services refuse)
        self._identity_key = identity_key
        self._timeout = timeout
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._closed = False

    @classmethod
    def at(
        cls,
        urls: Mapping[str, str],
        *,
        timeout_s: float,
        connect_timeout_s: float,
        identity_key: bytes | None = None,
    ) -> Upstreams:
        """The services at these URLs; a call that takes longer than `timeout_s` in all (or
        `connect_timeout_s` to connect) is given up."""
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        return cls(urls, timeout, identity_key)

    @classmethod
    def over_http(cls, settings: GatewaySettings, identity_key: bytes) -> Upstreams:
        """Every service at its configured URL (loopback by default)."""
        return cls.at(
            settings.upstream_urls(),
            timeout_s=settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            identity_key=identity_key,
        )

    def _session(self, service: str) -> aiohttp.ClientSession:
        session = self._sessions.get(service)
        if session is None:
            if self._closed:
                raise RuntimeError("the upstreams are closed")
            session = self._sessions[service] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=CONNECTIONS_PER_SERVICE, keepalive_timeout=KEEPALIVE_S
                ),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                json_serialize_bytes=orjson.dumps,
            )
        return session

    async def _send(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> UpstreamAnswer:
        # the path already escaped (the routes quote each parameter) and the query as the client
        # sent it: sent exactly so (encoded=True: yarl neither requotes nor resolves a `..`
        # segment), since the identity proof signs this path and the service checks the raw one
        url = URL(self._urls[service] + (f"{path}?{query}" if query else path), encoded=True)
        async with self._session(service).request(
            method,
            url,
            json=json,
            headers=headers,
            allow_redirects=False,
            timeout=timeout or self._timeout,
        ) as response:
            answer = UpstreamAnswer(response.status, response.headers, await response.read())
            if response.status >= 500:
                # a service that failed may close the connection after answering: never pool it
                response.close()
            return answer

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
    ) -> UpstreamAnswer:
        """Send one request to a service as `who`; its answer, whatever the status."""
        sent_headers = identity_headers(
            who, correlation_id, key=self._identity_key, method=method, path=path
        )
        sent_headers.update(headers or {})
        started = time.perf_counter()
        # a CLIENT span only under a recording one (a sampled request): an unsampled request's
        # would be thrown away, and making it cost 3.5% of the gateway's CPU (py-spy, see
        # docs/PERFORMANCE.md §5.6). The service joins the request's span, the same trace id.
        parent = trace.get_current_span()
        traced = (
            tracing.tracer().start_as_current_span(
                f"{method} {service}",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": method, "server.address": service, "url.path": path,
                },
            )
            if parent.is_recording()
            else contextlib.nullcontext(parent)
        )  # fmt: skip
        with traced as span:
            tracing.inject_http(sent_headers)  # traceparent (naming `span`), baggage
            retry_safe = method in IDEMPOTENT or "Idempotency-Key" in sent_headers
            try:
                try:
                    answer = await self._send(
                        service, method, path, json=json, query=query, headers=sent_headers
                    )
                except _STALE as exc:
                    if not retry_safe:
                        raise
                    # once, on a fresh connection: the pooled one was dead
                    log.info("upstream.retried", upstream=service, error=type(exc).__name__)
                    answer = await self._send(
                        service, method, path, json=json, query=query, headers=sent_headers
                    )
            except _UNAVAILABLE as exc:
                UPSTREAM_REQUESTS.labels(service, method, "unavailable").inc()
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                log.warning(
                    "upstream.unavailable", upstream=service, path=path, error=type(exc).__name__,
                    correlation_id=correlation_id,
                )  # fmt: skip
                raise UpstreamUnavailableError(service, type(exc).__name__) from exc
            finally:
                UPSTREAM_SECONDS.labels(service, method).observe(time.perf_counter() - started)
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status == 401 and _proof_refused(answer):
                UPSTREAM_REQUESTS.labels(service, method, "proof_refused").inc()
                span.set_status(StatusCode.ERROR, PROOF_REFUSED)
                # the caller's credentials were good: the platform's clocks (more than
                # PROOF_MAX_AGE_S apart) or internal keys disagree. An operator's matter.
                log.error(
                    "upstream.proof_refused", upstream=service, path=path,
                    correlation_id=correlation_id,
                    hint=f"clocks more than {PROOF_MAX_AGE_S} s apart, or another internal key",
                )  # fmt: skip
                raise UpstreamUnavailableError(service, PROOF_REFUSED)
            UPSTREAM_REQUESTS.labels(service, method, str(answer.status)).inc()
            return answer

    async def readiness(self, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """Each service's own /health/ready answer: {service: {"ready": bool, "checks": ...}}."""
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._timeout.sock_connect)

        async def probe(name: str) -> dict[str, Any]:
            try:
                r = await self._send(name, "GET", "/health/ready", timeout=timeout)
                body = (
                    r.json()
                    if r.headers.get("content-type", "").startswith("application/json")
                    else {}
                )
                return {"ready": r.status == 200, "checks": body.get("checks", {})}
            except (*_UNAVAILABLE, ValueError) as exc:
                return {"ready": False, "error": type(exc).__name__}

        names = list(self._urls)
        answers = await asyncio.gather(*(probe(n) for n in names))
        return dict(zip(names, answers, strict=True))

    async def aclose(self) -> None:
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
