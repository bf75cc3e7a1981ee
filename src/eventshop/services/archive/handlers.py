"""archive's event handler: every event type lands here."""

from __future__ import annotations

from typing import Any

from eventshop.contracts import Envelope
from eventshop.platform.uow import UnitOfWork
from eventshop.services.archive import store


async def archive_event(uow: UnitOfWork, env: Envelope, payload: Any) -> None:
    # ON CONFLICT makes it idempotent beyond the inbox too: the same event archived by two
    # archive consumers (or re-read after an inbox cleanup) is kept once
    await store.archive_event(uow.conn, env)
