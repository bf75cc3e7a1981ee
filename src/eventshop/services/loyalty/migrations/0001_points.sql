CREATE TABLE IF NOT EXISTS awards (
    order_id   text PRIMARY KEY,          -- one award per order, ever
    user_id    text        NOT NULL,
    points     int         NOT NULL CHECK (points >= 0),
    awarded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS awards_by_user ON awards (user_id, awarded_at DESC);

CREATE TABLE IF NOT EXISTS balances (
    user_id text PRIMARY KEY,
    points  bigint NOT NULL DEFAULT 0 CHECK (points >= 0)
);
