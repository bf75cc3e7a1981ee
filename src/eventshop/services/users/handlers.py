"""users' use cases: register, verify a password, read an account (every emit of users is here).

users handles no events: its use cases are the commands and queries its HTTP routes call.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg

from eventshop.contracts.users import UserRegistered
from eventshop.platform.http import ApiError, not_found
from eventshop.platform.observability.logging import get_logger
from eventshop.services.users import domain, store

if TYPE_CHECKING:
    from eventshop.services.users.service import Context

log = get_logger(__name__)


def invalid_credentials() -> ApiError:
    """One answer for an unknown email and a wrong password: neither tells which it was."""
    return ApiError(401, "invalid_credentials", "invalid email or password")


async def register(
    ctx: Context, correlation_id: str, *, email: str, password: str, name: str
) -> asyncpg.Record:
    """Open an account and announce it (user.registered); 409 if the email is taken."""
    # hashed before the transaction so no connection is held while argon2 works
    password_hash = await ctx.resources.passwords.hash(password)
    user_id = uuid.uuid4()
    role = domain.role_for(email, ctx.settings.admin_email_keys)
    async with ctx.unit_of_work(correlation_id) as uow:
        row = await store.create_account(
            uow.conn, user_id=user_id, email=email, name=name, password_hash=password_hash,
            role=role,
        )  # fmt: skip
        if row is None:
            raise ApiError(409, "email_taken", "an account with this email already exists")
        uow.emit(
            UserRegistered(user_id=str(user_id), email=email, name=name),
            aggregate_id=str(user_id),
        )
    log.info("account.registered", user_id=str(user_id), role=role)
    return row


async def verify_password(ctx: Context, email: str, password: str) -> asyncpg.Record:
    """The account whose password this is; 401 alike for an unknown email and a wrong password."""
    passwords = ctx.resources.passwords
    async with ctx.pool.acquire() as conn:
        row = await store.credentials_of(conn, email.strip())
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
    return row


async def account_of(ctx: Context, user_id: str) -> asyncpg.Record:
    """A caller's account; 404 if there is none (a user id that is no UUID names none)."""
    try:
        key = uuid.UUID(user_id)
    except ValueError:
        raise not_found("account") from None
    async with ctx.pool.acquire() as conn:
        row = await store.account_of(conn, key)
    if row is None:
        raise not_found("account")
    return row
