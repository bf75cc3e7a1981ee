"""notifications' table: one row per notification sent, unique per (kind, ref)."""

from __future__ import annotations

import uuid

import asyncpg

from eventshop.services.notifications.domain import Email


async def claim_notification(
    conn: asyncpg.Connection, notification_id: uuid.UUID, mail: Email, *, user_id: str
) -> bool:
    """Record that `mail` is being sent; False if that notification was sent already.

    Called inside the transaction that sends it: if the send fails the row goes with the
    rollback, and a concurrent claim of the same (kind, ref) waits for this transaction and
    then finds the row (and does nothing) or not (and sends it itself).
    """
    inserted = await conn.fetchval(
        "INSERT INTO notifications (notification_id, kind, ref, user_id, recipient, subject)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (kind, ref) DO NOTHING RETURNING true",
        notification_id,
        mail.kind,
        mail.ref,
        user_id,
        mail.recipient,
        mail.subject,
    )
    return bool(inserted)


async def notifications_of(
    conn: asyncpg.Connection, *, user_id: str, email: str, limit: int
) -> list[asyncpg.Record]:
    """A user's notifications, newest first: those about them or sent to their address.

    `user_id` covers "ref is the caller's user id" (a welcome's ref is its user id) and also
    finds their order emails; the address finds mail sent to it before any user id was known.
    """
    rows = await conn.fetch(
        """
        SELECT notification_id, kind, ref, recipient, subject, sent_at FROM notifications
        WHERE user_id = $1 OR ($2 <> '' AND lower(recipient) = lower($2))
        ORDER BY sent_at DESC, notification_id
        LIMIT $3
        """,
        user_id,
        email,
        limit,
    )
    return list(rows)
