-- Every event the archive received, as received (after upcasting). `position` is the archive's
-- own order: queries page on it and replays follow it.
CREATE TABLE IF NOT EXISTS archived_events (
    position        bigserial   NOT NULL UNIQUE,
    event_id        uuid        PRIMARY KEY,
    event_type      text        NOT NULL,
    schema_version  int         NOT NULL,
    aggregate_id    text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    occurred_at     timestamptz NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    envelope        jsonb       NOT NULL
);
-- each filter with the order it is read in, so a filtered page is an index range scan
CREATE INDEX IF NOT EXISTS archived_events_by_type ON archived_events (event_type, position);
CREATE INDEX IF NOT EXISTS archived_events_by_correlation ON archived_events (correlation_id, position);
CREATE INDEX IF NOT EXISTS archived_events_by_aggregate ON archived_events (aggregate_id, position);
CREATE INDEX IF NOT EXISTS archived_events_by_time ON archived_events (occurred_at);

-- Immutable: the log is evidence, and a replay must re-deliver what was published.
CREATE OR REPLACE FUNCTION archived_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'archived events are immutable (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS archived_events_immutable ON archived_events;
CREATE TRIGGER archived_events_immutable BEFORE UPDATE OR DELETE ON archived_events
    FOR EACH ROW EXECUTE FUNCTION archived_events_immutable();
