"""The public API: /api/v1 routes, each checked here and forwarded to the service owning it.

Around every route, outermost first: the correlation id and the one error shape
(`install_conventions`), the rate limit, then gzip (when the client accepts it).
The gateway answers itself only for what it owns (tokens, sessions, rate limits, body
validation, "that service is down"); everything else is the owning service's answer, status
and body relayed as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt, ValidationError
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from eventshop.platform.http import ApiError, StrictBody, correlation_id_of, error_body
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
from eventshop.services.gateway.adapters.upstream import Upstreams, UpstreamUnavailableError, relay

log = get_logger(__name__)

PREFIX = "/api/v1"
#: never rate limited: probes and the API's own documentation
EXEMPT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
GZIP_MINIMUM_BYTES = 500


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
    UpstreamUnavailableError: (503, "unavailable", {}),
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


# -- forwarding -------------------------------------------------------------------------------
async def forward(
    request: Request,
    service: str,
    method: str,
    path: str,
    *,
    who: Principal | None = None,
    json: Any = None,
    with_query: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    """Send the request on to `service` as `who` and relay its answer."""
    answer = await gateway_of(request).upstreams.call(
        service,
        method,
        path,
        who=who,
        correlation_id=correlation_id_of(request),
        json=json,
        query=request.url.query if with_query else "",
        headers=headers,
    )
    return relay(answer)


def _segment(value: str) -> str:
    """A path parameter made safe to put back into a path ('/', '?', '#' escaped)."""
    return quote(value, safe="")


def _body(model: BaseModel) -> dict[str, Any]:
    """What the client sent (validated), without defaults it left out: the service sets those."""
    return model.model_dump(mode="json", exclude_unset=True)


# -- bodies: validated here so /docs documents them; the services validate again --------------
Email = Annotated[str, Field(min_length=3, max_length=320)]


class Registration(StrictBody):
    email: Email
    password: Annotated[SecretStr, Field(min_length=8, max_length=1024)]
    name: Annotated[str, Field(min_length=1, max_length=200)]


class Login(StrictBody):
    email: Email
    password: Annotated[SecretStr, Field(max_length=1024)]


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    #: seconds the token (and its session) lives
    expires_in: int


class VerifiedAccount(BaseModel):
    """What users answers to verify-password; only these fields go into the token."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    email: str
    role: str


Name = Annotated[str, Field(min_length=1, max_length=200)]
PriceMinor = Annotated[StrictInt, Field(ge=0)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class NewProduct(StrictBody):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    name: Name
    price_minor: PriceMinor
    currency: Currency
    active: StrictBool = True


class ProductChange(StrictBody):
    """A full update: every field is required."""

    name: Name
    price_minor: PriceMinor
    currency: Currency
    active: StrictBool


class Restock(StrictBody):
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class OrderLine(StrictBody):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000)]


class PlaceOrder(StrictBody):
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=100)]
    #: the payment method (a provider token such as "tok_visa"); the service's default if unset
    payment_token: Annotated[str | None, Field(min_length=1, max_length=200)] = None


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="retrying with the same key places the order once",
    ),
]

# -- documentation of the answers -------------------------------------------------------------
_ERROR_SHAPE = "error, in the common shape {error: {code, message, details}, correlation_id}"


def _answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    common = (422, 429, 503)
    return {status: {"description": _ERROR_SHAPE} for status in (*statuses, *common)}


_AUTHENTICATED = _answers(401)
_ADMIN = _answers(401, 403)

router = APIRouter(prefix=PREFIX)


# -- auth -------------------------------------------------------------------------------------
@router.post(
    "/auth/register", status_code=201, tags=["auth"], responses=_answers(409),
    summary="Create an account",
)  # fmt: skip
async def register(body: Registration, request: Request) -> Response:
    account = {**_body(body), "password": body.password.get_secret_value()}
    return await forward(request, "users", "POST", "/users", json=account)


@router.post(
    "/auth/login", response_model=AccessToken, tags=["auth"], responses=_answers(401),
    summary="Exchange email and password for an access token",
)  # fmt: skip
async def login(body: Login, request: Request) -> Response | AccessToken:
    gateway = gateway_of(request)
    answer = await gateway.upstreams.call(
        "users",
        "POST",
        "/sessions/verify-password",
        who=None,
        correlation_id=correlation_id_of(request),
        json={"email": body.email, "password": body.password.get_secret_value()},
    )
    if answer.status != 200:
        return relay(answer)  # 401 invalid credentials, 422, ... in the service's words
    try:
        account = VerifiedAccount.model_validate_json(answer.body)
    except ValidationError:
        log.error("upstream.unexpected_body", upstream="users", route="verify-password")
        raise ApiError(502, "bad_gateway", "users answered something unexpected") from None
    issued = await gateway.auth.login(
        user_id=account.user_id, email=account.email, role=account.role
    )
    log.info("session.opened", user_id=account.user_id)
    return AccessToken(access_token=issued.access_token, expires_in=issued.expires_in)


@router.post(
    "/auth/logout", status_code=204, tags=["auth"], responses=_AUTHENTICATED,
    summary="End the session: this token is refused from now on",
)  # fmt: skip
async def logout(who: User, request: Request) -> Response:
    await gateway_of(request).auth.logout(who)
    log.info("session.closed", user_id=who.user_id)
    return Response(status_code=204)


# -- users ------------------------------------------------------------------------------------
@router.get("/users/me", tags=["users"], responses=_answers(401, 404), summary="My account")
async def me(who: User, request: Request) -> Response:
    return await forward(request, "users", "GET", "/users/me", who=who)


# -- catalog ----------------------------------------------------------------------------------
@router.get("/products", tags=["catalog"], responses=_answers(), summary="List products")
async def list_products(who: MaybeUser, request: Request) -> Response:
    """Public. Query parameters (limit, offset, include_inactive) are passed to the catalog."""
    return await forward(request, "catalog", "GET", "/products", who=who, with_query=True)


@router.get("/products/{sku}", tags=["catalog"], responses=_answers(404), summary="One product")
async def get_product(sku: str, who: MaybeUser, request: Request) -> Response:
    return await forward(request, "catalog", "GET", f"/products/{_segment(sku)}", who=who)


@router.post(
    "/products", status_code=201, tags=["catalog"], responses=_answers(401, 403, 409),
    summary="Create a product (admin)",
)  # fmt: skip
async def create_product(body: NewProduct, who: AdminUser, request: Request) -> Response:
    return await forward(request, "catalog", "POST", "/products", who=who, json=_body(body))


@router.put(
    "/products/{sku}", tags=["catalog"], responses=_answers(401, 403, 404),
    summary="Update a product (admin)",
)  # fmt: skip
async def update_product(
    sku: str, body: ProductChange, who: AdminUser, request: Request
) -> Response:
    path = f"/products/{_segment(sku)}"
    return await forward(request, "catalog", "PUT", path, who=who, json=_body(body))


# -- inventory --------------------------------------------------------------------------------
@router.get("/stock/{sku}", tags=["inventory"], responses=_answers(401, 404), summary="Stock")
async def stock(sku: str, who: User, request: Request) -> Response:
    return await forward(request, "inventory", "GET", f"/stock/{_segment(sku)}", who=who)


@router.post(
    "/stock/{sku}/restock", tags=["inventory"], responses=_answers(401, 403, 404),
    summary="Add stock (admin)",
)  # fmt: skip
async def restock(sku: str, body: Restock, who: AdminUser, request: Request) -> Response:
    path = f"/stock/{_segment(sku)}/restock"
    return await forward(request, "inventory", "POST", path, who=who, json=_body(body))


# -- orders -----------------------------------------------------------------------------------
@router.post(
    "/orders", status_code=202, tags=["orders"], responses=_AUTHENTICATED,
    summary="Place an order: accepted (202) as PENDING, then confirmed or cancelled",
)  # fmt: skip
async def place_order(
    body: PlaceOrder, who: User, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return await forward(
        request, "orders", "POST", "/orders", who=who, json=_body(body), headers=headers
    )


@router.get("/orders", tags=["orders"], responses=_AUTHENTICATED, summary="My orders")
async def my_orders(who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", "/orders", who=who, with_query=True)


@router.get("/orders/{order_id}", tags=["orders"], responses=_answers(401, 404), summary="An order")
async def get_order(order_id: str, who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", f"/orders/{_segment(order_id)}", who=who)


@router.get(
    "/orders/{order_id}/as-of",
    tags=["orders"],
    responses=_answers(401, 404),
    summary="An order as it was: after its N-th event (?version=N) or at a time (?at=ISO 8601)",
)
async def order_as_of(order_id: str, who: User, request: Request) -> Response:
    path = f"/orders/{_segment(order_id)}/as-of"
    return await forward(request, "orders", "GET", path, who=who, with_query=True)


@router.get(
    "/orders/{order_id}/history",
    tags=["orders"],
    responses=_answers(401, 404),
    summary="An order's event stream, oldest first",
)
async def order_history(order_id: str, who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", f"/orders/{_segment(order_id)}/history", who=who)


# -- what other services keep about me --------------------------------------------------------
@router.get("/payments", tags=["payments"], responses=_AUTHENTICATED, summary="My payments")
async def my_payments(who: User, request: Request) -> Response:
    return await forward(request, "payments", "GET", "/payments", who=who, with_query=True)


@router.get(
    "/notifications", tags=["notifications"], responses=_AUTHENTICATED,
    summary="Notifications sent to me",
)  # fmt: skip
async def my_notifications(who: User, request: Request) -> Response:
    path = "/notifications"
    return await forward(request, "notifications", "GET", path, who=who, with_query=True)


@router.get("/loyalty/points", tags=["loyalty"], responses=_AUTHENTICATED, summary="My points")
async def my_points(who: User, request: Request) -> Response:
    return await forward(request, "loyalty", "GET", "/points", who=who)


# -- archive ----------------------------------------------------------------------------------
@router.get("/events", tags=["archive"], responses=_ADMIN, summary="Query the event log (admin)")
async def events(who: AdminUser, request: Request) -> Response:
    """The query string (type, time range, correlation id, paging) is passed to the archive."""
    return await forward(request, "archive", "GET", "/events", who=who, with_query=True)


# -- the app ----------------------------------------------------------------------------------
def install_gateway(app: FastAPI, gateway: Gateway) -> None:
    """The gateway's own parts of its app (the runtime has built it from `router`, and puts the
    shared conventions outermost after this: every answer, a 429 included, has the correlation
    id)."""
    app.title = "eventshop"
    app.version = "1"
    app.summary = "The public API of eventshop, an event-driven shop"
    app.state.gateway = gateway
    for kind in ERRORS:
        app.add_exception_handler(kind, _answer_error)
    # Middleware added later wraps what was added before. Gzip goes innermost, next to the
    # routes, so it sees their answers whole (a streamed body would be compressed whatever its
    # size) and a 429 is never worth compressing.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=6)
    app.add_middleware(RateLimit, gateway=gateway)
