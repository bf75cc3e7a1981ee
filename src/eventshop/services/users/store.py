"""users' table: accounts. Emails are matched case-insensitively (a unique index on lower())."""

from __future__ import annotations

import uuid

import asyncpg

_ACCOUNT = "user_id, email, name, role, created_at"


async def create_account(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    email: str,
    name: str,
    password_hash: str,
    role: str,
) -> asyncpg.Record | None:
    """Open an account; None if an account with this email (in any case) already exists."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO accounts (user_id, email, name, password_hash, role)"
        " VALUES ($1, $2, $3, $4, $5)"
        f" ON CONFLICT DO NOTHING RETURNING {_ACCOUNT}",
        user_id, email, name, password_hash, role,
    )  # fmt: skip
    return row


async def credentials_of(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    """The account of an email with its password hash (for verification only)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ACCOUNT}, password_hash FROM accounts WHERE lower(email) = lower($1)", email
    )
    return row


async def account_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ACCOUNT} FROM accounts WHERE user_id = $1", user_id
    )
    return row


async def replace_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str
) -> None:
    await conn.execute(
        "UPDATE accounts SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
    )
