-- No unique key on purpose: a duplicate effect must show up as a second row.
CREATE TABLE IF NOT EXISTS effects (
    id        bigserial PRIMARY KEY,
    event_id  uuid NOT NULL,
    seq       int  NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
