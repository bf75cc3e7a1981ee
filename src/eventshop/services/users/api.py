"""users' internal HTTP routes (behind the gateway, which alone issues tokens)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Request
from pydantic import AfterValidator, BaseModel, Field, SecretStr, StringConstraints

from eventshop.contracts.users import UserRegistered
from eventshop.platform.http import (
    ApiError,
    Caller,
    StrictBody,
    correlation_id_of,
    install_conventions,
    not_found,
)
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.runtime import ServiceContext
from eventshop.platform.uow import UnitOfWork
from eventshop.services.users import domain, store
from eventshop.services.users.passwords import Argon2Passwords
from eventshop.services.users.settings import UsersSettings

log = get_logger(__name__)

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
    email: Annotated[str, Field(max_length=domain.MAX_EMAIL_LENGTH)]
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


def invalid_credentials() -> ApiError:
    """One answer for an unknown email and a wrong password: neither tells which it was."""
    return ApiError(401, "invalid_credentials", "invalid email or password")


def build_app(ctx: ServiceContext, settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    passwords = Argon2Passwords(
        time_cost=settings.password_time_cost,
        memory_kib=settings.password_memory_kib,
        parallelism=settings.password_parallelism,
    )
    admin_emails = settings.admin_email_keys
    app = FastAPI(title="users")
    install_conventions(app)

    @app.post("/users", status_code=201, responses=_errors(409, 422))
    async def register(body: Registration, request: Request) -> Account:
        # hashed before the transaction so no connection is held while argon2 works
        password_hash = await passwords.hash(body.password.get_secret_value())
        user_id = uuid.uuid4()
        role = domain.role_for(body.email, admin_emails)
        async with UnitOfWork.begin(
            ctx.pool, service=ctx.name, correlation_id=correlation_id_of(request)
        ) as uow:
            row = await store.create_account(
                uow.conn, user_id=user_id, email=body.email, name=body.name,
                password_hash=password_hash, role=role,
            )  # fmt: skip
            if row is None:
                raise ApiError(409, "email_taken", "an account with this email already exists")
            uow.emit(
                UserRegistered(user_id=str(user_id), email=body.email, name=body.name),
                aggregate_id=str(user_id),
            )
        log.info("account.registered", user_id=str(user_id), role=role)
        return Account.of(row)

    @app.post("/sessions/verify-password", responses=_errors(401, 422))
    async def verify_password(body: Credentials) -> Account:
        password = body.password.get_secret_value()
        async with ctx.pool.acquire() as conn:
            row = await store.credentials_of(conn, body.email.strip())
        if row is None:
            await passwords.verify_nobody(password)
            raise invalid_credentials()
        if not await passwords.verify(row["password_hash"], password):
            raise invalid_credentials()
        if passwords.needs_rehash(row["password_hash"]):
            # the cost settings changed since this hash was made: upgrade it while we know the
            # password (the only moment we do)
            new_hash = await passwords.hash(password)
            async with ctx.pool.acquire() as conn:
                await store.replace_password_hash(conn, row["user_id"], new_hash)
        return Account.of(row)

    @app.get("/users/me", responses=_errors(401, 404))
    async def me(who: Caller) -> Account:
        try:
            user_id = uuid.UUID(who.user_id)
        except ValueError:
            raise not_found("account") from None
        async with ctx.pool.acquire() as conn:
            row = await store.account_of(conn, user_id)
        if row is None:
            raise not_found("account")
        return Account.of(row)

    return app


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of a route (all in the one error shape)."""
    return {status: {"description": "error (the common error shape)"} for status in statuses}
