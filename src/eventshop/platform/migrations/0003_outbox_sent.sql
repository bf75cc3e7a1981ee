-- A sent row leaves the outbox for `outbox_sent` in the statement that would have marked it
-- (docs/adr/0021-sent-rows-moved-out-of-the-outbox.md): a DELETE and a plain INSERT cost
-- PostgreSQL half of an UPDATE that writes the whole row again with an entry in every index of
-- the outbox. The outbox keeps only what is still to go; `outbox_sent` is what just left, kept
-- for its window (EVENTSHOP_RETENTION_OUTBOX_SENT_S) and deleted by the retention job.
CREATE TABLE IF NOT EXISTS outbox_sent (
    id              bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    aggregate_id    text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    traceparent     text,
    schema_version  int         NOT NULL,
    occurred_at     timestamptz NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz NOT NULL,
    -- publishes it took, and the error of the last one that failed (NULL if none did)
    attempts        int         NOT NULL,
    last_error      text
);
-- the retention job reads the oldest rows from here; nothing else looks rows up
CREATE INDEX IF NOT EXISTS outbox_sent_sent_at ON outbox_sent (sent_at);

-- rows an earlier relay marked sent move too; then every outbox row is unsent, and the two
-- partial indexes on `sent_at` (and the index maintenance they cost every insert and mark) go.
-- The column stays, always NULL from here on: 0001 and 0002 name it, and every migration of the
-- platform can be applied again, in order, over what it made (tests/integration/
-- test_database_roles.py).
WITH moved AS (DELETE FROM outbox WHERE sent_at IS NOT NULL RETURNING *)
INSERT INTO outbox_sent (id, event_id, event_type, aggregate_id, correlation_id, causation_id,
                         traceparent, schema_version, occurred_at, body, created_at, sent_at,
                         attempts, last_error)
SELECT id, event_id, event_type, aggregate_id, correlation_id, causation_id, traceparent,
       schema_version, occurred_at, body, created_at, sent_at, attempts, last_error
FROM moved;
DROP INDEX IF EXISTS outbox_unsent;
DROP INDEX IF EXISTS outbox_sent_at;
COMMENT ON COLUMN outbox.sent_at IS 'not written since migration 0003: sent rows move to outbox_sent';
