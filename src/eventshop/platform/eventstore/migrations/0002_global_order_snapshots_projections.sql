-- Global order (docs/adr/0005): positions are handed out from one counter row, whose row lock
-- an append holds until its transaction ends. Positions are therefore contiguous and commit in
-- the order they were handed out: a reader that has seen position p can never later find a
-- position below p committed. The bigserial's sequence is dropped, so a writer that bypassed
-- the counter would fail on NOT NULL instead of breaking the order.
CREATE TABLE IF NOT EXISTS event_log_head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
    position bigint  NOT NULL CHECK (position >= 0)
);
INSERT INTO event_log_head (id, position)
SELECT true, coalesce(max(global_position), 0) FROM events
ON CONFLICT (id) DO NOTHING;
ALTER TABLE events ALTER COLUMN global_position DROP DEFAULT;
DROP SEQUENCE IF EXISTS events_global_position_seq;

-- Snapshots: the folded state of a long stream as of a version. An optimisation only: a loader
-- that does not know `schema_version` (the state's shape) ignores the snapshot and replays.
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      text        PRIMARY KEY,
    version        int         NOT NULL CHECK (version >= 1),
    schema_version int         NOT NULL CHECK (schema_version >= 1),
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);

-- Where each projection (catch-up subscription) is in the global log: written in the same
-- transaction as the projection's read-model rows, so a crash never applies an event twice
-- or skips one.
CREATE TABLE IF NOT EXISTS projection_positions (
    projection text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
