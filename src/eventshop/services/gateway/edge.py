"""The gateway's edge: what every request passes before its route.

Who is calling (the bearer token and its session, as FastAPI dependencies the routes declare),
the rate limit (a pure ASGI middleware), and the errors the gateway itself raises, mapped to the
one error shape. `install_gateway` puts them on the app the runtime built from `api.router`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from eventshop.platform.http import ApiError, error_body
from eventshop.platform.observability.logging import get_logger
from eventshop.services.gateway.adapters.auth import (
    Authenticator,
    InvalidTokenError,
    KnownSession,
    Principal,
    SessionEndedError,
    SessionStoreUnavailableError,
)
from eventshop.services.gateway.adapters.ratelimit import RateLimiter
from eventshop.services.gateway.adapters.upstream import Upstreams, UpstreamUnavailableError

log = get_logger(__name__)

#: never rate limited: probes and the API's own documentation
EXEMPT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
GZIP_MINIMUM_BYTES = 500
#: refused (503) when their attempts cannot be counted (Redis away): password guessing
FAIL_CLOSED_PATHS = frozenset({"/api/v1/auth/login", "/api/v1/auth/register"})

UNCOUNTED = Counter(
    "eventshop_gateway_ratelimit_uncounted_total",
    "Requests the rate limit could not count (Redis unreachable), by what became of them",
    ["outcome"],
)


@dataclass(frozen=True)
class Gateway:
    """What the routes stand on; built by the composition root (service.py) or a test."""

    auth: Authenticator
    limiter: RateLimiter
    upstreams: Upstreams
    #: the Redis key of a token's session (by its jti), when sessions live in the Redis the
    #: limiter counts in: the rate limit then reads it in its own round trip
    session_key: Callable[[str], str] | None = None


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


# -- errors the gateway itself raises, mapped in one table ------------------------------------
# Their messages are written for the client (no internals); the causes are logged where raised.
_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
ERRORS: dict[type[Exception], tuple[int, str, dict[str, str]]] = {
    InvalidTokenError: (401, "unauthenticated", _BEARER_CHALLENGE),
    SessionEndedError: (401, "unauthenticated", _BEARER_CHALLENGE),
    SessionStoreUnavailableError: (503, "unavailable", {}),
    UpstreamUnavailableError: (503, "unavailable", {"Retry-After": "1"}),
}


async def _answer_error(request: Request, exc: Exception) -> JSONResponse:
    status, code, headers = next(v for k, v in ERRORS.items() if isinstance(exc, k))
    return JSONResponse(error_body(request, code, str(exc)), status_code=status, headers=headers)


# -- who is calling ---------------------------------------------------------------------------
bearer = HTTPBearer(
    auto_error=False, description="the access_token answered by POST /api/v1/auth/login"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def optional_caller(request: Request, credentials: Credentials) -> Principal | None:
    """The caller if a token is sent (it must then be valid and its session open), else None."""
    if credentials is None:
        return None
    known: KnownSession | None = getattr(request.state, "known_session", None)
    return await gateway_of(request).auth.authenticate(credentials.credentials, known=known)


async def authenticated(who: Annotated[Principal | None, Depends(optional_caller)]) -> Principal:
    if who is None:
        raise ApiError(401, "unauthenticated", "authentication required", headers=_BEARER_CHALLENGE)
    return who


async def admin_only(who: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """Checked here, before forwarding, and again by the service: defence in depth."""
    if not who.is_admin:
        raise ApiError(403, "forbidden", "admin role required")
    return who


MaybeUser = Annotated[Principal | None, Depends(optional_caller)]
User = Annotated[Principal, Depends(authenticated)]
AdminUser = Annotated[Principal, Depends(admin_only)]


# -- the rate limit ---------------------------------------------------------------------------
def _exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith("/health/")


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class RateLimit:
    """Counts every request (but probes and docs) against its client IP's limit, and its user's
    when it sends a valid token, and answers 429 itself once one is exhausted.

    The token is checked here for counting only; its session is read in the same round trip to
    Redis, and both are left in `request.state.known_session` for the route's authentication.
    A pure ASGI middleware, for the reason given in eventshop.platform.http.
    """

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = _bearer_token(request)
        who = self._named_by(token)
        read_along = None
        if who is not None and self.gateway.session_key is not None:
            read_along = self.gateway.session_key(who.jti)
        ip = request.client.host if request.client else "unknown"
        counted = await self.gateway.limiter.hit(
            ip, who.user_id if who else None, read_along=read_along
        )
        if token is not None and who is not None and counted.was_read:
            request.state.known_session = KnownSession(token, who, counted.value)
        if counted.uncounted:
            refuse = scope["path"] in FAIL_CLOSED_PATHS
            UNCOUNTED.labels("refused" if refuse else "let_through").inc()
            if refuse:  # unlimited tries at passwords while Redis is away: no
                log.warning("ratelimit.fail_closed", path=scope["path"])
                refusal = JSONResponse(
                    error_body(request, "unavailable", "cannot count attempts now: retry soon"),
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
                await refusal(scope, receive, send)
                return
        verdict = counted.verdict
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        limit = verdict.refused_by.scope if verdict.refused_by else "client"
        refusal = JSONResponse(
            error_body(request, "rate_limited", f"too many requests for this {limit}: slow down"),
            status_code=429,
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
        await refusal(scope, receive, send)

    def _named_by(self, token: str | None) -> Principal | None:
        """Who a token names, for counting (its session is checked by the route)."""
        if token is None:
            return None
        try:
            return self.gateway.auth.tokens.verify(token)
        except InvalidTokenError:
            return None  # counted per IP only; the route answers 401


# -- the app ----------------------------------------------------------------------------------
def public_openapi() -> dict[str, Any] | None:
    """The public API's OpenAPI document (eventshop/openapi.py writes it), if it was written."""
    source = resources.files("eventshop.services.gateway") / "openapi.json"
    if not source.is_file():
        return None
    document: dict[str, Any] = json.loads(source.read_text())
    return document


def install_gateway(app: FastAPI, gateway: Gateway) -> None:
    """The gateway's own parts of its app (the runtime has built it from `router`, and puts the
    shared conventions outermost after this: every answer, a 429 included, has the correlation
    id)."""
    app.title = "eventshop"
    app.version = "1"
    app.summary = "The public API of eventshop, an event-driven shop"
    document = public_openapi()
    if document is not None:  # what each route answers, composed from its service's document
        app.openapi = lambda: document  # type: ignore[method-assign]
    app.state.gateway = gateway
    for kind in ERRORS:
        app.add_exception_handler(kind, _answer_error)
    # Middleware added later wraps what was added before. Gzip goes innermost, next to the
    # routes, so it sees their answers whole (a streamed body would be compressed whatever its
    # size) and a 429 is never worth compressing.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=6)
    app.add_middleware(RateLimit, gateway=gateway)
