-- The products on sale. `version` starts at 1 and grows by one on every change: events carry
-- it and the Redis cache compares it, so an older copy never replaces a newer one.
CREATE TABLE IF NOT EXISTS products (
    sku         text        PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- bigint: minor units of an expensive item in a small currency outgrow int4 quickly
    price_minor bigint      NOT NULL CHECK (price_minor >= 0),
    currency    char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    active      boolean     NOT NULL DEFAULT true,
    version     int         NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- the public list shows active products in sku order
CREATE INDEX IF NOT EXISTS products_active_by_sku ON products (sku) WHERE active;
