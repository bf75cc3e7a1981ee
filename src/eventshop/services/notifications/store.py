"""notifications' table: one row per notification sent, unique per (kind, ref)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from eventshop.services.notifications.domain import Email


@dataclass(frozen=True)
class Claim:
    """A notification about to be sent: its id, its mail, the user it is about."""

    notification_id: uuid.UUID
    mail: Email
    user_id: str


async def claim_notifications(conn: asyncpg.Connection, claims: Sequence[Claim]) -> set[uuid.UUID]:
    """Record that these mails are being sent, in one statement; the ids of those claimed (the
    others were sent already, or are the same notification as one before them).

    Called inside the transaction that sends them: if the send fails the rows go with the
    rollback, and a concurrent claim of the same (kind, ref) waits for this transaction and
    then finds the row (and does nothing) or not (and sends it itself).
    """
    if not claims:
        return set()
    rows = await conn.fetch(
        "INSERT INTO notifications (notification_id, kind, ref, user_id, recipient, subject)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[]) ON CONFLICT (kind, ref) DO NOTHING RETURNING notification_id",
        [c.notification_id for c in claims],
        [c.mail.kind for c in claims],
        [c.mail.ref for c in claims],
        [c.user_id for c in claims],
        [c.mail.recipient for c in claims],
        [c.mail.subject for c in claims],
    )
    return {r["notification_id"] for r in rows}


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
