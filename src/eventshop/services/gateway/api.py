"""The public API: /api/v1 routes, each checked here and forwarded to the service owning it.

Around every route, outermost first: the correlation id and the one error shape
(`install_conventions`), the rate limit, then gzip (when the client accepts it); who is calling
is a dependency each route declares (`User`, `AdminUser`, `MaybeUser`; all in edge.py).
The gateway answers itself only for what it owns (tokens, sessions, rate limits, body
validation, "that service is down"); everything else is the owning service's answer, status
and body relayed as they are.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt, ValidationError
from starlette.responses import Response

from eventshop.platform.http import ApiError, StrictBody, correlation_id_of
from eventshop.platform.observability.logging import get_logger
from eventshop.services.gateway.adapters.auth import Principal
from eventshop.services.gateway.adapters.upstream import relay
from eventshop.services.gateway.edge import AdminUser, MaybeUser, User, gateway_of

log = get_logger(__name__)

PREFIX = "/api/v1"
TITLE = "eventshop"
SUMMARY = "The public API of eventshop, an event-driven shop"


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
    """A path parameter made safe to put back into a path ('/', '?', '#' escaped, and a segment
    of dots too, which a URL library would resolve as "this" or "the parent" directory)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _body(model: BaseModel) -> dict[str, Any]:
    """What the client sent (validated), without defaults it left out: the service sets those."""
    return model.model_dump(mode="json", exclude_unset=True)


# -- bodies: validated here so /docs documents them; the services validate again --------------
# Each is the owning service's body field for field (tests/unit/gateway/test_bodies.py compares
# their JSON schemas), so /docs promises exactly what the service takes. Rules JSON Schema
# cannot say are in the descriptions.
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=320,
        description="an e-mail address: one @, a domain with a dot (checked by users)",
    ),
]


class Registration(StrictBody):
    email: Email
    password: Annotated[SecretStr, Field(min_length=8, max_length=1024)]
    name: Annotated[str, Field(min_length=1, max_length=200)]


class Login(StrictBody):
    email: Annotated[str, Field(min_length=3, max_length=320)]
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
PriceMinor = Annotated[StrictInt, Field(ge=0, le=10**12, description="in minor units (cents)")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class NewProduct(StrictBody):
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
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
    quantity: Annotated[StrictInt, Field(ge=1, le=100)]


class PlaceOrder(StrictBody):
    lines: Annotated[
        list[OrderLine],
        Field(min_length=1, max_length=50, description="one line per sku (a sku twice: 422)"),
    ]
    #: the payment method chosen at checkout (a provider token such as "tok_visa")
    payment_token: Annotated[str, Field(min_length=1, max_length=100)] = "tok_visa"


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description=(
            "retrying with the same key within 24 hours places the order once (an empty key: 422)"
        ),
    ),
]

# -- documentation of the answers -------------------------------------------------------------
_ERROR_SHAPE = "error, in the common shape {error: {code, message, details}, correlation_id}"


def _upstream(target: str, *, optional_auth: bool = False) -> dict[str, Any]:
    """The service operation a route forwards to ("orders GET /orders/{order_id}"): what it
    answers is that operation's (eventshop/openapi.py composes the public document from it).
    A route whose token is optional says so: anonymous callers are welcome."""
    extra: dict[str, Any] = {"x-upstream": target}
    if optional_auth:
        extra["x-auth"] = "optional"
    return extra


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
    openapi_extra=_upstream("users POST /users"),
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
@router.get(
    "/users/me",
    tags=["users"],
    responses=_answers(401, 404),
    summary="My account",
    openapi_extra=_upstream("users GET /users/me"),
)
async def me(who: User, request: Request) -> Response:
    return await forward(request, "users", "GET", "/users/me", who=who)


# -- catalog ----------------------------------------------------------------------------------
@router.get(
    "/products",
    tags=["catalog"],
    responses=_answers(),
    summary="List products",
    openapi_extra=_upstream("catalog GET /products", optional_auth=True),
)
async def list_products(who: MaybeUser, request: Request) -> Response:
    """Public. Query parameters (limit, offset, include_inactive) are passed to the catalog."""
    return await forward(request, "catalog", "GET", "/products", who=who, with_query=True)


@router.get(
    "/products/{sku}",
    tags=["catalog"],
    responses=_answers(404),
    summary="One product",
    openapi_extra=_upstream("catalog GET /products/{sku}", optional_auth=True),
)
async def get_product(sku: str, who: MaybeUser, request: Request) -> Response:
    return await forward(request, "catalog", "GET", f"/products/{_segment(sku)}", who=who)


@router.post(
    "/products", status_code=201, tags=["catalog"], responses=_answers(401, 403, 409),
    summary="Create a product (admin)",
    openapi_extra=_upstream("catalog POST /products"),
)  # fmt: skip
async def create_product(body: NewProduct, who: AdminUser, request: Request) -> Response:
    return await forward(request, "catalog", "POST", "/products", who=who, json=_body(body))


@router.put(
    "/products/{sku}", tags=["catalog"], responses=_answers(401, 403, 404),
    summary="Update a product (admin)",
    openapi_extra=_upstream("catalog PUT /products/{sku}"),
)  # fmt: skip
async def update_product(
    sku: str, body: ProductChange, who: AdminUser, request: Request
) -> Response:
    path = f"/products/{_segment(sku)}"
    return await forward(request, "catalog", "PUT", path, who=who, json=_body(body))


# -- inventory --------------------------------------------------------------------------------
@router.get(
    "/stock/{sku}",
    tags=["inventory"],
    responses=_answers(401, 404),
    summary="Stock",
    openapi_extra=_upstream("inventory GET /stock/{sku}"),
)
async def stock(sku: str, who: User, request: Request) -> Response:
    return await forward(request, "inventory", "GET", f"/stock/{_segment(sku)}", who=who)


@router.post(
    "/stock/{sku}/restock", tags=["inventory"], responses=_answers(401, 403, 404),
    summary="Add stock (admin)",
    openapi_extra=_upstream("inventory POST /stock/{sku}/restock"),
)  # fmt: skip
async def restock(sku: str, body: Restock, who: AdminUser, request: Request) -> Response:
    path = f"/stock/{_segment(sku)}/restock"
    return await forward(request, "inventory", "POST", path, who=who, json=_body(body))


# -- orders -----------------------------------------------------------------------------------
@router.post(
    "/orders", status_code=202, tags=["orders"], responses=_AUTHENTICATED,
    summary="Place an order: accepted (202) as PENDING, then confirmed or cancelled",
    openapi_extra=_upstream("orders POST /orders"),
)  # fmt: skip
async def place_order(
    body: PlaceOrder, who: User, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    # without a key of the client's, one of the gateway's: a forward it retries (a dead pooled
    # connection) then places the order once all the same
    headers = {"Idempotency-Key": idempotency_key or f"gateway-{uuid.uuid4()}"}
    return await forward(
        request, "orders", "POST", "/orders", who=who, json=_body(body), headers=headers
    )


@router.get(
    "/orders",
    tags=["orders"],
    responses=_AUTHENTICATED,
    summary="My orders",
    openapi_extra=_upstream("orders GET /orders"),
)
async def my_orders(who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", "/orders", who=who, with_query=True)


@router.get(
    "/orders/{order_id}",
    tags=["orders"],
    responses=_answers(401, 404),
    summary="An order",
    openapi_extra=_upstream("orders GET /orders/{order_id}"),
)
async def get_order(order_id: str, who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", f"/orders/{_segment(order_id)}", who=who)


@router.get(
    "/orders/{order_id}/as-of",
    tags=["orders"],
    responses=_answers(401, 404),
    summary="An order as it was: after its N-th event (?version=N) or at a time (?at=ISO 8601)",
    openapi_extra=_upstream("orders GET /orders/{order_id}/as-of"),
)
async def order_as_of(order_id: str, who: User, request: Request) -> Response:
    path = f"/orders/{_segment(order_id)}/as-of"
    return await forward(request, "orders", "GET", path, who=who, with_query=True)


@router.get(
    "/orders/{order_id}/history",
    tags=["orders"],
    responses=_answers(401, 404),
    summary="An order's event stream, oldest first",
    openapi_extra=_upstream("orders GET /orders/{order_id}/history"),
)
async def order_history(order_id: str, who: User, request: Request) -> Response:
    return await forward(request, "orders", "GET", f"/orders/{_segment(order_id)}/history", who=who)


# -- what other services keep about me --------------------------------------------------------
@router.get(
    "/payments",
    tags=["payments"],
    responses=_AUTHENTICATED,
    summary="My payments",
    openapi_extra=_upstream("payments GET /payments"),
)
async def my_payments(who: User, request: Request) -> Response:
    return await forward(request, "payments", "GET", "/payments", who=who, with_query=True)


@router.get(
    "/notifications", tags=["notifications"], responses=_AUTHENTICATED,
    summary="Notifications sent to me",
    openapi_extra=_upstream("notifications GET /notifications"),
)  # fmt: skip
async def my_notifications(who: User, request: Request) -> Response:
    path = "/notifications"
    return await forward(request, "notifications", "GET", path, who=who, with_query=True)


@router.get(
    "/loyalty/points",
    tags=["loyalty"],
    responses=_AUTHENTICATED,
    summary="My points",
    openapi_extra=_upstream("loyalty GET /points"),
)
async def my_points(who: User, request: Request) -> Response:
    return await forward(request, "loyalty", "GET", "/points", who=who)


# -- archive ----------------------------------------------------------------------------------
@router.get(
    "/events",
    tags=["archive"],
    responses=_ADMIN,
    summary="Query the event log (admin)",
    openapi_extra=_upstream("archive GET /events"),
)
async def events(who: AdminUser, request: Request) -> Response:
    """The query string (type, time range, correlation id, paging) is passed to the archive."""
    return await forward(request, "archive", "GET", "/events", who=who, with_query=True)


class Replay(StrictBody):
    """archive's ReplayRequest, field for field."""

    service: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,200}$", description="the one service whose queue gets them"
    )
    type: str | None = Field(default=None, description='an event type, or "product.*"')
    correlation_id: str | None = None
    aggregate_id: str | None = None
    since: datetime | None = Field(default=None, description="occurred at or after")
    until: datetime | None = Field(default=None, description="occurred before")
    limit: int = Field(ge=1, le=100_000, description="at most this many, oldest first")
    dry_run: bool = Field(default=False, description="count what would be replayed, send nothing")


@router.post(
    "/events/replay",
    tags=["archive"],
    responses=_answers(401, 403, 404),  # 404: no queue of that service
    summary="Re-deliver archived events, in order, to one service's queue (admin)",
    openapi_extra=_upstream("archive POST /replay"),
)
async def replay_events(body: Replay, who: AdminUser, request: Request) -> Response:
    """The service's inbox drops what it already handled; count first with dry_run."""
    return await forward(request, "archive", "POST", "/replay", who=who, json=_body(body))
