"""HTTP conventions shared by every service's internal API and by the gateway.

- One JSON error shape, mapped in one place:
  {"error": {"code": "...", "message": "...", "details": [...]}, "correlation_id": "..."}
- Bodies reject unknown fields (models derive from `StrictBody`).
- Identity: the gateway authenticates the caller and forwards who it is in headers
  (X-User-Id, X-User-Role, X-User-Email); services listen on loopback only and trust them.
- X-Correlation-ID is taken from the request (or made) and returned on the response.

The correlation id is handled by a pure ASGI middleware, not a `@app.middleware("http")`
function: starlette runs those (`BaseHTTPMiddleware`) in a task of their own and streams every
answer through memory streams, a cost paid on every request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADER = "X-Correlation-ID"


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


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


def install_conventions(app: FastAPI) -> None:
    """Correlation ids in and out, and every error in the one JSON shape.

    Call it after the app's own middleware: the correlation id then wraps them all, and every
    answer (a 429 of the gateway's rate limit included) carries it.
    """
    app.add_middleware(CorrelationMiddleware)

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
        return JSONResponse(
            error_body(request, code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str
    email: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency on a worker thread, a hop per request that cost the orders service a fifth of its CPU.
async def caller(
    x_user_id: Annotated[str | None, Header()] = None,
    x_user_role: Annotated[str | None, Header()] = None,
    x_user_email: Annotated[str | None, Header()] = None,
) -> Identity:
    """The authenticated caller, as the gateway forwarded it; 401 when there is none."""
    if not x_user_id:
        raise ApiError(401, "unauthenticated", "authentication required")
    return Identity(user_id=x_user_id, role=x_user_role or "customer", email=x_user_email or "")


async def admin(who: Annotated[Identity, Depends(caller)]) -> Identity:
    if not who.is_admin:
        raise ApiError(403, "forbidden", "admin role required")
    return who


Caller = Annotated[Identity, Depends(caller)]
Admin = Annotated[Identity, Depends(admin)]
