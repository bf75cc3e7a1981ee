-- orders' own copy of the catalog's prices, kept from product.created / product.updated.
-- updated_at is the occurred_at of the event that set the row: an older event arriving late
-- (a retry, a redelivery) never overwrites a newer price.
CREATE TABLE IF NOT EXISTS prices (
    sku         text        PRIMARY KEY,
    name        text        NOT NULL,
    price_minor bigint      NOT NULL CHECK (price_minor >= 0),
    currency    text        NOT NULL,
    active      boolean     NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- The read model of every order, written in the same transaction as each append to its
-- stream (the stream in `events` is the source of truth; this is its projection).
CREATE TABLE IF NOT EXISTS orders (
    order_id       text        PRIMARY KEY,
    user_id        text        NOT NULL,
    email          text        NOT NULL,
    status         text        NOT NULL
                   CHECK (status IN ('PENDING', 'AWAITING_PAYMENT', 'CONFIRMED', 'CANCELLED')),
    reason         text,
    lines          jsonb       NOT NULL,
    total_minor    bigint      NOT NULL CHECK (total_minor >= 0),
    currency       text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deadline       timestamptz NOT NULL,
    version        int         NOT NULL,
    -- the request that placed it: a timeout, which no event causes, still joins its trace
    correlation_id text        NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at DESC);
-- what the timeout scanner reads: only the orders still running
CREATE INDEX IF NOT EXISTS orders_running_by_deadline ON orders (deadline)
    WHERE status IN ('PENDING', 'AWAITING_PAYMENT');

-- Idempotency-Key of POST /orders: one order per (user, key), whatever the concurrency.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      text        NOT NULL,
    key          text        NOT NULL,
    order_id     text        NOT NULL,
    request_hash text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
