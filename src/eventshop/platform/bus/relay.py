"""The outbox relay: publishes committed outbox rows in order, with confirms, and moves them out.

One relay per service schema is active at a time (a PostgreSQL advisory lock held by its
listening connection); more processes of a service wait as hot standbys, queued for the lock.
It is woken by NOTIFY from the outbox trigger and polls as a fallback. A row leaves the outbox
only once its publish is confirmed, so a crash or a lost connection anywhere leaves it unsent
and it is published again: at-least-once, and the consumers' inbox makes the effect
exactly-once. Every row in `outbox` is unsent: a sent one moves to `outbox_sent` in one
statement (docs/adr/0021-sent-rows-moved-out-of-the-outbox.md), kept there for its window
(`EVENTSHOP_RETENTION_OUTBOX_SENT_S`, an hour) and then deleted by the service's retention job
(platform/retention.py), in bounded batches. With a window of 0 the relay deletes each row as
its publish is confirmed instead (docs/adr/0009-retention.md, "Sent rows deleted at once").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry.trace import Span, SpanKind, StatusCode

from eventshop.platform import faults
from eventshop.platform.bus.outbox import OUTBOX_COLUMNS
from eventshop.platform.bus.publisher import Prepared, Publisher
from eventshop.platform.bus.wire import RowHeader
from eventshop.platform.observability import tracing
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.observability.metrics import OUTBOX_PUBLISH_FAILED, OUTBOX_PUBLISHED

log = get_logger(__name__)

SELECT_UNSENT = """
SELECT id, event_id, event_type, correlation_id, causation_id, traceparent, schema_version,
       occurred_at, body
FROM outbox
WHERE next_attempt_at IS NULL OR next_attempt_at <= now()
ORDER BY id
LIMIT $1
"""

#: what a sent row carries into `outbox_sent` as it was in the outbox (ADR 0021)
_KEPT = ", ".join(("id", *OUTBOX_COLUMNS, "created_at"))
#: confirmed rows out of the outbox and into `outbox_sent`, in one statement
MOVE_SENT = f"""
WITH sent AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING *)
INSERT INTO outbox_sent ({_KEPT}, sent_at, attempts, last_error)
SELECT {_KEPT}, now(), attempts + 1, last_error FROM sent
"""
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha1(f"relay:{schema}".encode()).digest()[:8], "big", signed=True)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        dsn: str,
        schema: str,
        app_id: str,
        batch: int = 1_000,
        poll_s: float = 1.0,
        keep_sent: bool = True,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._dsn = dsn
        self._schema = schema
        self._app_id = app_id
        self._batch = batch
        self._poll_s = poll_s
        #: move a confirmed row to `outbox_sent` (kept for the retention window) or delete it
        self._sent_statement = MOVE_SENT if keep_sent else DELETE_SENT
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()  # one pass at a time: the loop's and a shutdown flush
        self._stopping = False
        self.published = 0
        self.is_leader = False
        self._published_metric = OUTBOX_PUBLISHED.labels(app_id)
        self._failed_metric = OUTBOX_PUBLISH_FAILED.labels(app_id)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Relay until `stop()`: whatever goes wrong, log it, back off and start over."""
        while not self._stopping:
            try:
                await self._run()
            except Exception:
                log.exception("relay.crashed")
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        """Relay until `stop()`; survives the database and the broker going away."""
        backoff = 0.1
        while not self._stopping:
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(
                    self._dsn,
                    server_settings={
                        "search_path": self._schema,
                        # which process leads, for an operator reading pg_stat_activity
                        "application_name": f"{self._app_id}.relay.{os.getpid()}"[:63],
                        # a standby's wait for the relay lock at a time (`_lead`); this
                        # connection waits for no other lock
                        "lock_timeout": str(max(1, round(min(self._poll_s, 5.0) * 1000))),
                    },
                    timeout=10,
                    command_timeout=10,
                )
                await self._lead(listener)
                await listener.add_listener(f"outbox_{self._schema}", self._on_notify)
                backoff = 0.1
                await self._relay_until_stopped(listener)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("relay.database_unavailable", error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.is_leader = False
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Publish what is unsent now (graceful shutdown); returns how many rows were sent."""
        sent = 0
        if not self.is_leader:
            return 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = await self.relay_once()
            sent += n
            if n == 0:
                break
        return sent

    # -- internals -----------------------------------------------------------------------------
    async def _lead(self, listener: asyncpg.Connection) -> None:
        """Take the schema's relay lock, waiting in PostgreSQL's queue for it.

        A standby waits in the lock's queue (`pg_advisory_lock`, a poll at most at a time, so
        that `stop()` is heard), rather than trying again every poll: when the leader's session
        ends, the lock goes at once to the standby that has waited longest. Trying every poll,
        a leader killed and restarted at once by supervisord often took the lock back before
        any standby tried again."""
        key = _lock_key(self._schema)
        while not self._stopping:
            try:
                await listener.fetchval("SELECT pg_advisory_lock($1)", key)
            except asyncpg.LockNotAvailableError:
                continue  # the connection's lock_timeout (a poll) went by: queue again
            self.is_leader = True
            return

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _relay_until_stopped(self, listener: asyncpg.Connection) -> None:
        while not self._stopping:
            if listener.is_closed():
                # the session holding the leader lock is gone (e.g. the server restarted):
                # lead again before publishing, or two relays could publish at once
                raise ConnectionError("the relay's listening connection closed")
            self._wake.clear()
            sent = await self.relay_once()
            if sent >= self._batch:
                continue  # more may be waiting: no sleep
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def relay_once(self) -> int:
        """One pass: publish up to a batch of unsent rows; returns how many were confirmed."""
        async with self._pass:
            return await self._pass_once()

    async def _pass_once(self) -> int:
        async with self._pool.acquire(timeout=10) as conn:
            rows = await conn.fetch(SELECT_UNSENT, self._batch)
        if not rows:
            return 0
        faults.point("relay.before_publish")
        spans = _publish_spans(self._app_id, rows)  # none unless a row is traced
        messages = _messages(rows, spans, self._app_id, self._publisher.user_id)
        try:
            results = await self._publisher.publish_prepared(messages)
        except Exception as exc:  # the channel is gone: every row stays unsent
            results = [exc] * len(rows)
        for i, span in spans:
            if results[i] is not None:
                span.set_status(StatusCode.ERROR, repr(results[i])[:200])
            span.end()
        faults.point("relay.after_publish")
        sent = [r["id"] for r, err in zip(rows, results, strict=True) if err is None]
        failed = [(r["id"], repr(err)[:500]) for r, err in zip(rows, results, strict=True) if err]
        async with self._pool.acquire(timeout=10) as conn:
            # one statement is atomic by itself: a transaction only when there are two
            both: contextlib.AbstractAsyncContextManager[Any] = (
                conn.transaction() if sent and failed else contextlib.nullcontext()
            )
            async with both:
                if sent:
                    await conn.execute(self._sent_statement, sent)
                if failed:
                    # back off per row (capped), so a poison row does not spin the relay
                    await conn.execute(
                        """
                        UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.err,
                            next_attempt_at = now() + least(
                            interval '30 s', interval '100 ms' * power(2, o.attempts))
                        FROM unnest($1::bigint[], $2::text[]) AS f(id, err) WHERE o.id = f.id
                        """,
                        [i for i, _ in failed],
                        [e for _, e in failed],
                    )
        if failed:
            self._failed_metric.inc(len(failed))
            log.warning("relay.publish_failed", failed=len(failed), first_error=failed[0][1])
            if not sent:
                await asyncio.sleep(min(1.0, self._poll_s))
        self.published += len(sent)
        self._published_metric.inc(len(sent))
        return len(sent)


def _messages(
    rows: Sequence[asyncpg.Record],
    spans: list[tuple[int, Span]],
    app_id: str,
    user_id: str | None,
) -> list[Prepared]:
    """The rows as the publisher takes them; a traced row's message carries its publish span's
    context (`spans`, by the row's index), so the consumer's span is that span's child."""
    traced = {i: tracing.traceparent_of(span) for i, span in spans}
    return [
        _prepared(r, traced.get(i) or r["traceparent"], app_id, user_id) for i, r in enumerate(rows)
    ]


def _prepared(
    row: asyncpg.Record, traceparent: str | None, app_id: str, user_id: str | None
) -> Prepared:
    """A row as the publisher takes it: its content header written straight from the row, or,
    where a value does not allow that, its `Basic.Properties` (the same header once written)."""
    body = row["body"]
    header = RowHeader(
        str(row["event_id"]),
        row["event_type"],
        row["schema_version"],
        row["occurred_at"],
        row["correlation_id"],
        row["causation_id"],
        traceparent,
        app_id,
    )
    return row["event_type"], body, header.encoded(len(body), user_id) or header.properties()


def _publish_spans(service: str, rows: Sequence[asyncpg.Record]) -> list[tuple[int, Span]]:
    """A PRODUCER span per traced row, from the publish to its confirm; the message's
    traceparent header then names it, so the consumer's span is its child. The span starts
    when the row leaves the outbox: the gap before it is the outbox lag."""
    spans: list[tuple[int, Span]] = []
    now: datetime | None = None
    for i, r in enumerate(rows):
        if tracing.recorded_parent(r["traceparent"]) is None:
            continue  # untraced, or not sampled: no span, and no attributes made for one
        now = now or datetime.now(UTC)
        attributes: dict[str, str | float] = {
            **tracing.event_attributes(
                service,
                event_id=str(r["event_id"]),
                event_type=r["event_type"],
                correlation_id=r["correlation_id"],
                causation_id=r["causation_id"],
            ),
            "eventshop.outbox_lag_ms": round((now - r["occurred_at"]).total_seconds() * 1e3, 1),
        }
        span = tracing.start_span(
            f"publish {r['event_type']}",
            parent_traceparent=r["traceparent"],
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        if span is not None:
            spans.append((i, span))
    return spans
