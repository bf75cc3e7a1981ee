"""HTTP conventions shared by every service's internal API and by the gateway.

- One JSON error shape, mapped in one place:
  {"error": {"code": "...", "message": "...", "details": [...]}, "correlation_id": "..."}
- Bodies reject unknown fields (models derive from `StrictBody`).
- Identity: the gateway authenticates the caller and forwards who it is in headers
  (X-User-Id, X-User-Role, X-User-Email) with their proof, X-Identity-Proof: an HMAC-SHA256,
  under the installation's internal key, of those headers, the method, the path and the time.
  A service believes identity headers only with a proof less than 30 s old: another process on
  the host cannot act as a user by setting headers (docs/SECURITY.md).
- X-Correlation-ID is taken from the request (or made) and returned on the response.
- Bad input is a 4xx in that shape, before any route runs (`InputGuard`): a body over
  `MAX_BODY_BYTES` is 413, a NUL character in the path or query 400; in a body, text PostgreSQL
  cannot store (NUL, unpaired surrogates) is a 422 (`StrictBody`). Whatever else escapes a route
  is a 500 in the same shape, or a 503 with Retry-After when the database is away: never a
  plain-text answer. The 503 is answered inside the app with one warning line
  (`http.backing_service_unavailable`): what escapes to Starlette's outermost middleware is
  logged there with a traceback at error level, and an outage is not a bug.

The correlation id is handled by a pure ASGI middleware, not a `@app.middleware("http")`
function: starlette runs those (`BaseHTTPMiddleware`) in a task of their own and streams every
answer through memory streams, a cost paid on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventshop.platform.observability.logging import get_logger

CORRELATION_HEADER = "X-Correlation-ID"
PROOF_HEADER = "X-Identity-Proof"
#: how old a proof may be (the gateway signs each request as it forwards it); also how far the
#: gateway's and a service's clocks may drift apart before the service refuses every call
PROOF_MAX_AGE_S = 30
#: the error code of a refused proof: the gateway answers its client 503 for it, since the
#: client's credentials were good and the platform's own clocks or keys disagree
PROOF_REFUSED = "identity_proof_refused"

_log = get_logger(__name__)


#: the largest integers PostgreSQL's integer and bigint hold: bounds for ids and positions
PG_INT_MAX = 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1


def _iso_only(value: Any) -> Any:
    """A time in a query must be ISO 8601 text: pydantic would also read "0.5" as Unix time."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 date-time") from None
    return value


#: a date-time as a query parameter takes it: ISO 8601 only, as its schema says
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]

#: the largest request body any route takes (an order of 50 lines is under 4 KB)
MAX_BODY_BYTES = 64 * 1024


def unstorable(text: str) -> bool:
    """Whether PostgreSQL would refuse this text: a NUL, or a surrogate UTF-8 cannot encode."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _holds_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return unstorable(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_unstorable(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_unstorable(k) or _holds_unstorable(v) for k, v in value.items())
    return False  # numbers, and nested StrictBody models (they check their own fields)


class StrictBody(BaseModel):
    """A request body: unknown fields refused, and no text PostgreSQL cannot store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if _holds_unstorable(value):
            raise ValueError("text may not contain NUL (U+0000) or unpaired surrogates")
        return value


class ApiError(Exception):
    """An error with its HTTP status and a stable machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def correlation_id_of(request: Request) -> str:
    cid = getattr(request.state, "correlation_id", None)
    if cid:
        return str(cid)
    return request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())


def error_body(
    request: Request, code: str, message: str, details: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "details": details or []},
        "correlation_id": correlation_id_of(request),
    }


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class InputGuard:
    """Refuses what no route should see: a body over `max_body` bytes (413, by its
    Content-Length, or as it streams in) and a NUL character in the path or query string (400).
    A pure ASGI middleware, like CorrelationMiddleware."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
        if "\x00" in scope["path"] or b"%00" in raw or b"\x00" in raw:
            await self._refuse(scope, receive, send, 400, "bad_request", "NUL in the URL")
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._refuse(scope, receive, send, 413, "too_large", self._limit())
            return
        if length is None and "chunked" in headers.get("transfer-encoding", "").lower():
            # no length said: read it here, up to the limit, and hand the route what was read
            # (the server holds a declared length to its word, so only this case needs it)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                size += len(message.get("body", b""))
                if size > self.max_body:
                    await self._refuse(scope, receive, send, 413, "too_large", self._limit())
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            given = False

            async def replay() -> Message:
                nonlocal given
                if given:
                    return await receive()
                given = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _limit(self) -> str:
        return f"the request body is over {self.max_body} bytes"

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
    ) -> None:
        answer = JSONResponse(error_body(Request(scope), code, message), status_code=status)
        await answer(scope, receive, send)


class CorrelationMiddleware:
    """Takes the request's X-Correlation-ID (or makes one), puts it on `request.state` for
    `correlation_id_of`, and sets it on the answer, whichever middleware or handler made it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = Headers(scope=scope).get(CORRELATION_HEADER) or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = cid

        async def send_with_correlation_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[CORRELATION_HEADER] = cid
            await send(message)

        await self.app(scope, receive, send_with_correlation_id)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app takes on this request's path (HEAD goes with GET)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route.methods or ())
    return sorted(methods - {"HEAD"})


def install_conventions(app: FastAPI) -> None:
    """Correlation ids in and out, and every error in the one JSON shape.

    Call it after the app's own middleware: the correlation id then wraps them all, and every
    answer (a 429 of the gateway's rate limit included) carries it.
    """
    app.add_middleware(InputGuard)
    app.add_middleware(CorrelationMiddleware)

    from eventshop.platform.bus.failures import INFRASTRUCTURE_ERRORS, is_infrastructure

    def unavailable(request: Request) -> JSONResponse:
        return JSONResponse(
            error_body(request, "unavailable", "a backing service is unavailable: retry"),
            status_code=503,
            headers={"Retry-After": "1", CORRELATION_HEADER: correlation_id_of(request)},
        )

    async def backing_service_away(request: Request, exc: Exception) -> JSONResponse:
        # Answered inside the app, with one warning line: what escapes to Starlette's outermost
        # middleware is logged there with its traceback at error level, and a database that
        # restarts is not a bug (a chaos run's restart of PostgreSQL logged 240 tracebacks).
        if not is_infrastructure(exc):
            raise exc  # a timeout (an OSError too) is the route's failure: the 500 below
        _log.warning(
            "http.backing_service_unavailable",
            method=request.method,
            path=request.url.path,
            error=repr(exc)[:300],
        )
        return unavailable(request)

    for kind in (*INFRASTRUCTURE_ERRORS, OSError):
        app.add_exception_handler(kind, backing_service_away)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's outermost middleware calls this for what escaped everything else (and
        # logs the exception itself): a bug, or the database away past the routes' handlers.
        if is_infrastructure(exc):
            return unavailable(request)
        return JSONResponse(
            error_body(request, "internal_error", "internal error: the operators are told"),
            status_code=500,
            headers={CORRELATION_HEADER: correlation_id_of(request)},
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(request, exc.code, exc.message, exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        fields = ", ".join(d["field"] or "<body>" for d in details)
        return JSONResponse(
            error_body(request, "validation_error", f"invalid request: {fields}", details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only its first route's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(
            error_body(request, code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str
    email: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _proof_message(ts: int, method: str, path: str, user_id: str, role: str, email: str) -> bytes:
    # newline-separated: none of these may hold a newline (HTTP headers cannot)
    return f"{ts}\n{method.upper()}\n{path}\n{user_id}\n{role}\n{email}".encode()


def sign_identity(
    key: bytes,
    *,
    method: str,
    path: str,
    user_id: str,
    role: str,
    email: str,
    now: float | None = None,
) -> str:
    """The X-Identity-Proof the gateway sends with a caller's identity headers."""
    ts = int(time.time() if now is None else now)
    mac = hmac.new(key, _proof_message(ts, method, path, user_id, role, email), hashlib.sha256)
    return f"{ts}.{mac.hexdigest()}"


def identity_proven(
    key: bytes,
    proof: str | None,
    *,
    method: str,
    path: str,
    user_id: str,
    role: str,
    email: str,
    now: float | None = None,
) -> bool:
    """Whether `proof` is the gateway's for exactly this identity, request line and moment."""
    ts_text, _, mac = (proof or "").partition(".")
    if not ts_text.isdigit() or not mac:
        return False
    ts = int(ts_text)
    if abs((time.time() if now is None else now) - ts) > PROOF_MAX_AGE_S:
        return False
    wanted = hmac.new(key, _proof_message(ts, method, path, user_id, role, email), hashlib.sha256)
    return hmac.compare_digest(wanted.hexdigest(), mac)


def signed_path(request: Request) -> str:
    """The path as it came over the wire, percent-encoding and all: what the gateway signed.
    `request.url.path` is decoded, so a path parameter with an escaped character would differ
    from the proof's path and be refused (found by the API fuzzer)."""
    raw: bytes | None = request.scope.get("raw_path")
    return raw.decode("latin-1") if raw else request.url.path


def identity_key_of(app_state: Any) -> bytes:
    key: bytes | None = getattr(app_state, "identity_key", None)
    if not key:
        raise RuntimeError("no internal identity key on this app (platform.service.build_app)")
    return key


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency on a worker thread, a hop per request that cost the orders service a fifth of its CPU.
# They read the identity headers from the request themselves: a `Header()` parameter costs
# FastAPI about 14 µs a request (its field, its validation, its lookup), 55 µs for these four
# (a route answering at once, through the ASGI interface, 3,000 calls, medians of 5 rounds: 163
# µs with them as parameters, 108 read here). Every call to a service carries them.
async def caller(request: Request) -> Identity:
    """The authenticated caller, as the gateway forwarded it and proved it; 401 otherwise."""
    headers = request.headers
    user_id = headers.get("x-user-id")
    if not user_id:
        raise ApiError(401, "unauthenticated", "authentication required")
    role, email = headers.get("x-user-role") or "customer", headers.get("x-user-email") or ""
    if not identity_proven(
        identity_key_of(request.app.state),
        headers.get("x-identity-proof"),
        method=request.method,
        path=signed_path(request),
        user_id=user_id,
        role=role,
        email=email,
    ):
        raise ApiError(401, PROOF_REFUSED, "identity headers without the gateway's proof")
    return Identity(user_id=user_id, role=role, email=email)


async def from_gateway(request: Request) -> None:
    """For routes the gateway calls for nobody in particular (a login's password check): the
    call must carry the gateway's proof all the same, so no other process can reach them."""
    if not identity_proven(
        identity_key_of(request.app.state),
        request.headers.get("x-identity-proof"),
        method=request.method,
        path=signed_path(request),
        user_id="",
        role="",
        email="",
    ):
        raise ApiError(401, PROOF_REFUSED, "this route answers the gateway only")


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> Iterator[str]:
    """The query parameters a route takes, its dependencies' included."""
    yield from (field.alias for field in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


async def known_query_only(request: Request) -> None:
    """Refuse (422) a query parameter the route does not take: an unknown one would be ignored
    in silence, and the caller left believing it filtered or paged something."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_query_names(dependant))
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            f"not a parameter of this route: {', '.join(unknown)}",
            [{"field": f"query.{name}", "message": "unknown parameter"} for name in unknown],
        )


async def admin(who: Annotated[Identity, Depends(caller)]) -> Identity:
    if not who.is_admin:
        raise ApiError(403, "forbidden", "admin role required")
    return who


Caller = Annotated[Identity, Depends(caller)]
FromGateway = Depends(from_gateway)
Admin = Annotated[Identity, Depends(admin)]
