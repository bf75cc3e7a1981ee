"""users' internal HTTP routes (behind the gateway, which alone issues tokens)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field, SecretStr, StringConstraints

from eventshop.platform.http import Caller, FromGateway, StrictBody
from eventshop.platform.service import Context, CorrelationId
from eventshop.services.users import domain, handlers

router = APIRouter()

Email = Annotated[
    str, Field(min_length=3, max_length=domain.MAX_EMAIL_LENGTH), AfterValidator(domain.check_email)
]
#: capped so that nobody makes the service hash megabytes
Password = Annotated[SecretStr, Field(min_length=8, max_length=1024)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Registration(StrictBody):
    email: Email
    password: Password
    name: Name


class Credentials(StrictBody):
    email: Annotated[str, Field(min_length=3, max_length=domain.MAX_EMAIL_LENGTH)]
    password: Annotated[SecretStr, Field(max_length=1024)]


class Account(BaseModel):
    user_id: str
    email: str
    name: str
    role: domain.Role
    created_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> Account:
        """Named field by field: a row may also hold the password hash, which never leaves."""
        return cls(
            user_id=str(row["user_id"]), email=row["email"], name=row["name"], role=row["role"],
            created_at=row["created_at"],
        )  # fmt: skip


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of a route (all in the one error shape)."""
    return {status: {"description": "error (the common error shape)"} for status in statuses}


@router.post("/users", status_code=201, responses=_errors(409, 422))
async def register(body: Registration, ctx: Context, correlation_id: CorrelationId) -> Account:
    row = await handlers.register(
        ctx, correlation_id, email=body.email, password=body.password.get_secret_value(),
        name=body.name,
    )  # fmt: skip
    return Account.of(row)


@router.post("/sessions/verify-password", responses=_errors(401, 422), dependencies=[FromGateway])
async def verify_password(body: Credentials, ctx: Context) -> Account:
    row = await handlers.verify_password(ctx, body.email, body.password.get_secret_value())
    return Account.of(row)


@router.get("/users/me", responses=_errors(401, 404))
async def me(ctx: Context, who: Caller) -> Account:
    return Account.of(await handlers.account_of(ctx, who.user_id))
