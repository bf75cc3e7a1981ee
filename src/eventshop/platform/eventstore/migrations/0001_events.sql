-- The event store: one append-only stream per aggregate, in the owning service's schema.
-- UNIQUE (stream_id, version) is the optimistic concurrency check: two writers that read the
-- same version and append both try to insert the same next version; one of them fails.
CREATE TABLE IF NOT EXISTS events (
    global_position bigserial   PRIMARY KEY,   -- the order of recording across all streams
    stream_id       text        NOT NULL,
    version         int         NOT NULL CHECK (version >= 1),
    event_type      text        NOT NULL,
    schema_version  int         NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- correlation_id, causation_id
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);
